-- GET a list of paths in turn with one key.
-- wrk -s paths.lua URL -- <api-key> <paths-file>
local common = require("common")
local thread_counter = 0
local paths, i, headers

function setup(thread)
  thread_counter = thread_counter + 1
  thread:set("thread_id", thread_counter)
end

function init(args)
  headers = { ["Authorization"] = "Bearer " .. args[1] }
  paths = common.lines(args[2])
  i = common.start(#paths)
end

function request()
  local path = paths[i]
  i = i % #paths + 1
  return wrk.format("GET", path, headers)
end

done = common.done
