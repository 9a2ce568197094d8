-- A mix of 75 % GET one, 15 % PATCH rename, 5 % list, 5 % POST create, interleaved
-- deterministically (15 + 3 + 1 + 1 in every 20 requests).
-- wrk -s mix.lua URL -- <api-key> <ids-file> <custom-ids-file> <organisation-id>
--                       <merchant-id,merchant-id> <list-path>
local common = require("common")
local thread_counter = 0
local auth, write, ids, custom, gi, pi, n, create_prefix, list_path

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

function init(args)
  auth = { ["Authorization"] = "Bearer " .. args[1] }
  write = { ["Authorization"] = "Bearer " .. args[1], ["Content-Type"] = "application/json" }
  ids = common.lines(args[2])
  custom = common.lines(args[3])
  gi = common.start(#ids)
  pi = common.start(#custom)
  create_prefix = '{"organisation_id":"' .. args[4] .. '","type":"CUSTOM_ORDERS","merchant_ids":'
    .. common.json_strings(common.split(args[5])) .. ',"name":"bench mix '
    .. tostring(thread_id) .. "-"
  list_path = args[6]
  n = 0
end

function request()
  n = n + 1
  local slot = n % 20
  if slot < 15 then
    local id = ids[gi]
    gi = gi % #ids + 1
    return wrk.format("GET", "/v1/integrations/" .. id, auth)
  elseif slot < 18 then
    local id = custom[pi]
    pi = pi % #custom + 1
    local body = '{"name":"bench mix rename ' .. tostring(thread_id) .. "-" .. n .. '"}'
    return wrk.format("PATCH", "/v1/integrations/" .. id, write, body)
  elseif slot == 18 then
    return wrk.format("GET", list_path, auth)
  else
    return wrk.format("POST", "/v1/integrations", write, create_prefix .. n .. '"}')
  end
end

done = common.done
