-- Shared by the benchmark scripts (wrk runs with this directory as its working directory).
-- Every script prints one machine-readable line from done(): "BENCH_JSON {...}".
local common = {}

function common.lines(path)
  local out = {}
  for line in io.lines(path) do
    if #line > 0 then
      out[#out + 1] = line
    end
  end
  assert(#out > 0, "no lines in " .. path)
  return out
end

function common.split(text)
  local out = {}
  for part in string.gmatch(text, "[^,]+") do
    out[#out + 1] = part
  end
  return out
end

-- Each thread starts its walk through a list at a different place.
function common.start(n)
  local id = tonumber(rawget(_G, "thread_id")) or 1
  return (id * 7919) % n + 1
end

-- `bytes` random bytes from the kernel, in hex: a name no earlier run of the script used.
function common.random_hex(bytes)
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(bytes)
  f:close()
  return (string.gsub(raw, ".", function(c)
    return string.format("%02x", string.byte(c))
  end))
end

function common.json_strings(list)
  local quoted = {}
  for i, v in ipairs(list) do
    quoted[i] = '"' .. v .. '"'
  end
  return "[" .. table.concat(quoted, ",") .. "]"
end

function common.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max
  ))
end

return common
