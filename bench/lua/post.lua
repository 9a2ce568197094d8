-- POST /v1/integrations: create a CUSTOM_ORDERS integration in one organisation.
-- wrk -s post.lua URL -- <api-key> <organisation-id> <merchant-id,merchant-id>
local common = require("common")
local thread_counter = 0
local headers, prefix, n

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. args[1],
    ["Content-Type"] = "application/json",
  }
  prefix = '{"organisation_id":"' .. args[2] .. '","type":"CUSTOM_ORDERS","merchant_ids":'
    .. common.json_strings(common.split(args[3])) .. ',"name":"bench create '
    .. tostring(thread_id) .. "-"
  n = 0
end

function request()
  n = n + 1
  return wrk.format("POST", "/v1/integrations", headers, prefix .. n .. '"}')
end

done = common.done
