-- wrk script: every request is a GET of one of N pre-written keys, chosen at random.
-- Arguments (after "--"): <values path prefix> <token> <key prefix> <N>
-- e.g. wrk ... http://127.0.0.1:P -- /client/v4/accounts/A/storage/kv/namespaces/N/values/ TOKEN k- 10000
-- Keys are <key prefix><n> with n in 0..N-1, zero-padded to 6 digits; done() prints one JSON line.

local next_id = 0

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local base, key_prefix, count = nil, nil, 1

function init(args)
  base = args[1]
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  key_prefix = args[3]
  count = tonumber(args[4])
  math.randomseed(os.time() * 100 + tid)
end

function request()
  return wrk.format("GET", base .. key_prefix .. string.format("%06d", math.random(0, count - 1)))
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
