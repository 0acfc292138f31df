-- wrk script for `make bench` (the orchestrator passes the arguments):
--   wrk ... -s bench/requests.lua URL -- MODE FILE THREADS
-- status      FILE has one message_id a line; GET its status, ids at random
-- user        FILE has one line_user_id a line; GET the user's list at limit=50
-- revalidate  FILE has "message_id etag" lines; GET with If-None-Match (expects 304)
-- push        FILE has one push body a line, already shuffled; thread i takes lines
--             i, i+THREADS, ... so that no two threads send the same delivery
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  mode = args[1]
  threads = tonumber(args[3]) or 1
  items = {}
  for line in io.lines(args[2]) do
    items[#items + 1] = line
  end
  n = #items
  next_item = (tid or 0) + 1
  math.randomseed(os.time() * 1000 + (tid or 0))
  push_headers = { ["Content-Type"] = "application/json" }
end

request = function()
  if mode == "push" then
    local body = items[next_item]
    next_item = next_item + threads
    if next_item > n then
      next_item = (tid or 0) + 1
    end
    return wrk.format("POST", "/", push_headers, body)
  end
  local item = items[math.random(n)]
  if mode == "status" then
    return wrk.format("GET", "/api/v1/jobs/status/" .. item)
  elseif mode == "user" then
    return wrk.format("GET", "/api/v1/jobs/user/" .. item .. "?limit=50")
  else
    local space = string.find(item, " ", 1, true)
    return wrk.format("GET", "/api/v1/jobs/status/" .. string.sub(item, 1, space - 1),
      { ["If-None-Match"] = string.sub(item, space + 1) })
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
