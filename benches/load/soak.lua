-- wrk script of the soak (benches/load/soak.py): every fourth request is a new session (a
-- resolver call), the others repeat one of the thread's few sessions (cache hits). The
-- stand-in runs with --any-session-prefix bench-: each is a valid session of its own user.
-- Usage: wrk -s soak.lua URL -- NONCE. At the end, one line: SOAK <json> with the counts.

local threads = {}
local n_threads = 0

function setup(thread)
  n_threads = n_threads + 1
  thread:set("thread_id", n_threads)
  table.insert(threads, thread)
end

function init(args)
  nonce = args[1] or tostring(os.time())
  counter = 0
  statuses = {}
end

function request()
  counter = counter + 1
  local session
  if counter % 4 == 0 then
    session = "bench-" .. nonce .. "-" .. thread_id .. "-new-" .. counter
  else
    session = "bench-" .. nonce .. "-" .. thread_id .. "-hot-" .. (counter % 8)
  end
  return wrk.format("GET", "/soak", { ["Cookie"] = "session=" .. session })
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by_status = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for code, n in pairs(s) do
      by_status[tostring(code)] = (by_status[tostring(code)] or 0) + n
    end
  end
  local parts = {}
  for code, n in pairs(by_status) do
    table.insert(parts, string.format('"%s": %d', code, n))
  end
  local e = summary.errors
  io.write(string.format(
    'SOAK {"requests": %d, "statuses": {%s}, "connect": %d, "read": %d, "write": %d, "timeout": %d, "p99_ms": %.2f}\n',
    summary.requests, table.concat(parts, ", "), e.connect, e.read, e.write, e.timeout,
    latency:percentile(99) / 1000))
end
