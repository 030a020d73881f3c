-- wrk script: POST a JSON body, optionally with a bearer token, and print a JSON summary.
--
-- usage: wrk -s bench/post.lua URL -- BODY_FILE [TOKEN] [CONTENT_TYPE]
--
-- done() prints one line "BENCH_JSON {...}" that bench/run.py parses: completed requests,
-- socket errors, responses with status >= 400 ("status"), and latency percentiles in
-- microseconds taken from wrk's own latency histogram.

local req

function init(args)
  local file = assert(io.open(args[1], "rb"))
  local body = file:read("*a")
  file:close()
  local headers = { ["Content-Type"] = args[3] or "application/json" }
  if args[2] and args[2] ~= "" then
    headers["Authorization"] = "Bearer " .. args[2]
  end
  req = wrk.format("POST", nil, headers, body)
end

function request()
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
