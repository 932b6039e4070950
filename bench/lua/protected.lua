-- GET a protected route with one Bearer token (env BENCH_BEARER) on every connection.
-- No request()/response() callbacks: wrk sends a static, pre-built request.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(here .. "common.lua")

local bearer = os.getenv("BENCH_BEARER")
if not bearer or bearer == "" then
  error("BENCH_BEARER is not set")
end
wrk.headers["Authorization"] = "Bearer " .. bearer

function done(summary, latency, requests)
  common.report(summary, latency, {})
end
