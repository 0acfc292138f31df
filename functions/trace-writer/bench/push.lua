-- wrk script: POST the job-message fixture's push to trace-writer, each request with a
-- new messageId (so every push is a new job: one upsert that inserts).
--   wrk -t2 -c8 -d20s --latency -s functions/trace-writer/bench/push.lua http://127.0.0.1:PORT/
local data = "eyJ0aW1lc3RhbXAiOiIyMDIzLTA2LTAxVDEyOjM0OjU2Ljc4OVoiLCJ1cmwiOiJodHRwczovL3N1dW1vLmpwL21zL2NodWtvL3Rva3lvL3NjX3NoaW5qdWt1L25jXzk4MTQyNzY1LyIsImxpbmVfdXNlcl9pZCI6IlUxMjM0NTY3ODkwYWJjZGVmIiwiY2hlY2tfb25seSI6ZmFsc2V9"
local counter = 0
local prefix = tostring(math.random(1, 1000000000))

function setup(thread)
  thread:set("thread_id", tostring(math.random(1, 1000000000)))
end

request = function()
  counter = counter + 1
  local id = prefix .. (thread_id or "0") .. counter
  local body = '{"message":{"attributes":{},"data":"' .. data .. '","messageId":"' .. id ..
    '","publishTime":"2026-05-01T10:00:00.000Z"},"subscription":"projects/demo/subscriptions/bench"}'
  return wrk.format("POST", "/", { ["Content-Type"] = "application/json" }, body)
end

done = function(summary, latency, requests)
  io.write(string.format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms; %d requests, non-2xx %d\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, summary.requests, summary.errors.status))
end
