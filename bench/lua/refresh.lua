-- POST a refresh cookie in a loop, one session per wrk thread: run with -t N -c N.
--
-- env BENCH_TOKENS: N refresh tokens separated by spaces (one per thread).
-- env BENCH_COOKIE: the cookie name (tw_refresh for tokenward, refreshToken for Express).
--
-- setup() hands each thread its own token. With one connection per thread, wrk builds the
-- next request only after response() has run, so every request carries the cookie from the
-- previous response: a rotating server (tokenward) sees one unbroken chain per session. A
-- server that sets no new cookie (the tutorial's stateless /refresh) keeps getting the first.
-- Defining response() makes wrk parse headers for Lua, which costs wrk some CPU.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local cookie_name = os.getenv("BENCH_COOKIE") or "tw_refresh"
local threads = {}

function setup(thread)
  local tokens = common.split(os.getenv("BENCH_TOKENS"))
  local index = #threads + 1
  if not tokens[index] then
    error("BENCH_TOKENS has fewer tokens than wrk has threads")
  end
  thread:set("token", tokens[index])
  table.insert(threads, thread)
end

function init(args)
  ok = 0
  non200 = 0
  rotated = 0
end

function request()
  return wrk.format("POST", nil, { ["Cookie"] = cookie_name .. "=" .. token }, "")
end

function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
    return
  end
  ok = ok + 1
  local set_cookie = headers["Set-Cookie"] or headers["set-cookie"]
  if set_cookie then
    local value = set_cookie:match("^%s*" .. cookie_name .. "=([^;]*)")
    if value and value ~= "" then
      token = value
      rotated = rotated + 1
    end
  end
end

function done(summary, latency, requests)
  local totals = { ok = 0, non200 = 0, rotated = 0, sessions = #threads }
  for _, thread in ipairs(threads) do
    totals.ok = totals.ok + (thread:get("ok") or 0)
    totals.non200 = totals.non200 + (thread:get("non200") or 0)
    totals.rotated = totals.rotated + (thread:get("rotated") or 0)
  end
  common.report(summary, latency, totals)
end
