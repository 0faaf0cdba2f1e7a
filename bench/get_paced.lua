-- wrk script: the same GET on every request, paced to a fixed total rate (wrk has no rate
-- limit of its own). Arguments (after "--"): <bearer token or ""> <requests/s per wrk thread>
--
-- wrk calls delay() before every request of every connection and waits that many whole
-- milliseconds. Each call reserves the thread's next send slot, spaced 1000/rate ms apart
-- on a monotonic clock, and waits until it: the thread's connections together send at the
-- given rate, whatever the latency, as long as enough of them are idle. A slot missed
-- (every connection busy) is dropped, not made up in a burst, so the achieved rate (wrk's
-- request count over the duration) is the figure to report beside the target. wrk measures
-- latency from the moment a request is written, after the wait. done() prints one JSON line.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } pullkv_timespec;
int clock_gettime(int clk_id, pullkv_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("pullkv_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local interval_ms = 1
local next_slot = nil

function init(args)
  if args[1] ~= nil and args[1] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[1]
  end
  interval_ms = 1000 / tonumber(args[2])
end

function delay()
  local now = now_ms()
  if next_slot == nil or next_slot < now then
    next_slot = now -- behind schedule (or the first request): send now, no catch-up burst
  end
  local wait = next_slot - now
  next_slot = next_slot + interval_ms
  return wait
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
