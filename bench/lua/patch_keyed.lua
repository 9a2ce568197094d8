-- PATCH /v1/integrations/{id} with a fresh Idempotency-Key on every request: patch.lua's
-- renames plus the key's check and its record, written in the same transaction (CONTRACT 3.1).
-- wrk -s patch_keyed.lua URL -- <api-key> <ids-file>
-- Keys are bench-patch-<random, new in every wrk run>-<thread>-<n>, as post_keyed.lua's: no
-- request of a run, a warm-up or a repeat sends a stored key again.
local common = require("common")
local thread_counter = 0
local main_run
local headers, ids, i, n, key_prefix

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
  ids = common.lines(args[2])
  i = common.start(#ids)
  key_prefix = "bench-patch-" .. tostring(rawget(_G, "run_id")) .. "-" .. tostring(thread_id)
    .. "-"
  n = 0
end

function request()
  local id = ids[i]
  i = i % #ids + 1
  n = n + 1
  headers["Idempotency-Key"] = key_prefix .. n
  local body = '{"name":"bench keyed rename ' .. tostring(thread_id) .. "-" .. n .. '"}'
  return wrk.format("PATCH", "/v1/integrations/" .. id, headers, body)
end

done = common.done
