-- POST /v1/integrations again with keys whose answers are stored: every answer is the stored
-- 201, byte for byte, with Idempotent-Replayed: true, and nothing is written (CONTRACT 3.1).
-- wrk -s post_replay.lua URL -- <api-key> <replays-file>
-- Each line of the file is "<Idempotency-Key>\t<body>", a key the harness created once with
-- that body before the run (bench/jobs.py); they are sent in turn.
local common = require("common")
local thread_counter = 0
local headers, keys, bodies, i

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. args[1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = "",
  }
  keys, bodies = {}, {}
  for k, line in ipairs(common.lines(args[2])) do
    local key, body = string.match(line, "^([^\t]+)\t(.+)$")
    assert(key, "not <key>\\t<body>: " .. line)
    keys[k], bodies[k] = key, body
  end
  i = common.start(#keys)
end

function request()
  headers["Idempotency-Key"] = keys[i]
  local body = bodies[i]
  i = i % #keys + 1
  return wrk.format("POST", "/v1/integrations", headers, body)
end

done = common.done
