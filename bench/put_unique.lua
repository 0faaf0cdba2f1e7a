-- wrk script: every request is a PUT of a fresh, unique key.
-- Arguments (after "--"): <values path prefix> <token> <key prefix> <body bytes>
-- e.g. wrk ... http://127.0.0.1:P -- /client/v4/accounts/A/storage/kv/namespaces/N/values/ TOKEN r1- 1024
-- Keys are <key prefix><thread>-<counter>; done() prints one JSON line for the bench script.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local base, key_prefix, n = nil, nil, 0

function init(args)
  base = args[1]
  wrk.method = "PUT"
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  wrk.headers["Content-Type"] = "application/octet-stream"
  key_prefix = args[3] .. tostring(tid) .. "-"
  wrk.body = string.rep("v", tonumber(args[4]))
end

function request()
  n = n + 1
  return wrk.format(nil, base .. key_prefix .. n)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
