-- GET a protected route with another Bearer token on every request, from a file of tokens.
--
-- env BENCH_TOKEN_FILE: one token per line, written before the run (bench/pools.py).
-- Each thread walks the whole list in order from its own starting point, so every token is
-- used and two threads do not send the same token at the same time. A request() callback
-- makes wrk build each request in Lua, which costs wrk some CPU (see the wrk CPU column).

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local threads = {}

function setup(thread)
  thread:set("number", #threads)
  table.insert(threads, thread)
end

function init(args)
  local path = os.getenv("BENCH_TOKEN_FILE")
  if not path or path == "" then
    error("BENCH_TOKEN_FILE is not set")
  end
  headers = {}
  for line in io.lines(path) do
    if line ~= "" then
      table.insert(headers, "Bearer " .. line)
    end
  end
  if #headers == 0 then
    error("no tokens in " .. path)
  end
  position = (number * 4999) % #headers -- 4999: a prime, far from the other threads' start
end

function request()
  position = position % #headers + 1
  return wrk.format("GET", nil, { ["Authorization"] = headers[position] })
end

function done(summary, latency, requests)
  common.report(summary, latency, {})
end
