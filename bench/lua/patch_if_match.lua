-- PATCH /v1/integrations/{id} with If-Match: patch.lua's renames, each conditional on the
-- integration's current tag (CONTRACT 3.2).
-- wrk -s patch_if_match.lua URL -- <api-key> <ids-file> <wrk-threads>
-- Thread t of T renames the ids at positions t, t + T, t + 2T... of the file, and sends an id
-- again only once its last answer is back (free ids wait in a queue), so no two requests in
-- flight name one id and no tag is stale when sent: any 412 is a failure, counted with the
-- other errors. The first PATCH of an id in a run sends If-Match: *, later ones the ETag of its
-- last 200. An answer's id is read from its body, or, when it has none (an error), from the
-- X-Request-Id the server echoes (the request sends the id as its request id). wrk calls the
-- first thread's request() once before the run to check its output: that id is never answered
-- and stays out, so a thread needs one id more than its connections (bench/jobs.py checks).
local common = require("common")
local thread_counter = 0
local headers, own, queue, head, tail, queued, busy, tags, turn, n

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. args[1],
    ["Content-Type"] = "application/json",
    ["If-Match"] = "*",
    ["X-Request-Id"] = "",
  }
  local ids = common.lines(args[2])
  local threads = tonumber(args[3]) or 1
  local me = tonumber(rawget(_G, "thread_id")) or 1
  own = {}
  for k, id in ipairs(ids) do
    if (k - 1) % threads == me - 1 then
      own[#own + 1] = id
    end
  end
  assert(#own > 0, "no ids for thread " .. me)
  queue, queued, busy, tags = {}, {}, {}, {}
  for k, id in ipairs(own) do
    queue[k] = id
    queued[id] = true
  end
  head, tail = 1, #own
  turn = common.start(#own)
  n = 0
end

local function next_id()
  while head <= tail do
    local id = queue[head]
    queue[head] = nil
    head = head + 1
    queued[id] = nil
    if not busy[id] then
      return id
    end
  end
  -- Every id is out: an answer was lost to a socket error or a timeout. Take one in turn.
  local id = own[turn]
  turn = turn % #own + 1
  return id
end

function request()
  local id = next_id()
  busy[id] = true
  n = n + 1
  headers["If-Match"] = tags[id] or "*"
  headers["X-Request-Id"] = id
  local body = '{"name":"bench if-match ' .. tostring(thread_id) .. "-" .. n .. '"}'
  return wrk.format("PATCH", "/v1/integrations/" .. id, headers, body)
end

function response(status, answer_headers, body)
  local id
  if status == 200 then
    id = string.match(body, '"id"%s*:%s*"([^"]+)"')
  end
  id = id or answer_headers["x-request-id"] or answer_headers["X-Request-Id"]
  if id == nil or not busy[id] then
    return
  end
  busy[id] = nil
  if status == 200 then
    tags[id] = answer_headers["etag"] or answer_headers["ETag"]
  end
  if not queued[id] then
    tail = tail + 1
    queue[tail] = id
    queued[id] = true
  end
end

done = common.done
