-- POST /v1/integrations with a fresh Idempotency-Key on every request: post.lua's create plus
-- the key's check and its record, written in the same transaction (CONTRACT 3.1).
-- wrk -s post_keyed.lua URL -- <api-key> <organisation-id> <merchant-id,merchant-id>
-- Keys are bench-<random, new in every wrk run>-<thread>-<n>: warm-ups and repeats on one
-- world never send a stored key again (a replay writes nothing and would flatter the figure).
local common = require("common")
local thread_counter = 0
local main_run
local headers, prefix, key_prefix, n

function setup(thread)
  main_run = main_run or common.random_hex(8)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
  thread:set("run_id", main_run)
end

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. args[1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "",
  }
  prefix = '{"organisation_id":"' .. args[2] .. '","type":"CUSTOM_ORDERS","merchant_ids":'
    .. common.json_strings(common.split(args[3])) .. ',"name":"bench keyed '
    .. tostring(thread_id) .. "-"
  key_prefix = "bench-" .. tostring(rawget(_G, "run_id")) .. "-" .. tostring(thread_id) .. "-"
  n = 0
end

function request()
  n = n + 1
  headers["Idempotency-Key"] = key_prefix .. n
  return wrk.format("POST", "/v1/integrations", headers, prefix .. n .. '"}')
end

done = common.done
