-- wrk script of the "miss" scenario: every request carries a session cookie never sent
-- before, so every request needs a resolve. The stand-in runs with
-- --any-session-prefix bench-, which makes each of them a valid session of its own user
-- (the answer a signed-in user gets: 8 identity headers, cached for 10 minutes).
-- Usage: wrk -s miss.lua URL -- NONCE   (NONCE: unique per measurement, so that no round,
-- warm-up or proxy ever sends a session another one sent).

local n_threads = 0

-- Runs in the main Lua state, once per wrk thread: gives each thread its own number
-- (a global of that thread's Lua state).
function setup(thread)
  n_threads = n_threads + 1
  thread:set("thread_id", n_threads)
end

-- Runs in each thread's state; `thread_id` was set by setup().
function init(args)
  prefix = "session=bench-" .. (args[1] or tostring(os.time())) .. "-" .. tostring(thread_id) .. "-"
  counter = 0
end

function request()
  counter = counter + 1
  return wrk.format("GET", nil, { ["Cookie"] = prefix .. counter })
end
