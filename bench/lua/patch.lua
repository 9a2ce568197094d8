-- PATCH /v1/integrations/{id}: rename integrations of a list in turn.
-- wrk -s patch.lua URL -- <api-key> <ids-file>
local common = require("common")
local thread_counter = 0
local headers, ids, i, n

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. args[1],
    ["Content-Type"] = "application/json",
  }
  ids = common.lines(args[2])
  i = common.start(#ids)
  n = 0
end

function request()
  local id = ids[i]
  i = i % #ids + 1
  n = n + 1
  local body = '{"name":"bench rename ' .. tostring(thread_id) .. "-" .. n .. '"}'
  return wrk.format("PATCH", "/v1/integrations/" .. id, headers, body)
end

done = common.done
