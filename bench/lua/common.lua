-- Shared by the wrk scripts: print one machine-readable line from done().
--
-- The line is "BENCH_RESULT <json>"; bench/run.py looks for it in wrk's stdout.
-- Latencies are in microseconds, as wrk records them.

local M = {}

local function field(name, value)
  return string.format('"%s":%.0f', name, value or 0)
end

function M.split(text)
  local items = {}
  for item in string.gmatch(text or "", "%S+") do
    table.insert(items, item)
  end
  return items
end

function M.report(summary, latency, extra)
  local errors = summary.errors
  local parts = {
    field("requests", summary.requests),
    field("duration_us", summary.duration),
    field("bytes", summary.bytes),
    '"errors":{' .. table.concat({
      field("connect", errors.connect),
      field("read", errors.read),
      field("write", errors.write),
      field("status", errors.status),
      field("timeout", errors.timeout),
    }, ",") .. "}",
    '"latency_us":{' .. table.concat({
      field("p50", latency:percentile(50)),
      field("p90", latency:percentile(90)),
      field("p99", latency:percentile(99)),
      field("mean", latency.mean),
      field("max", latency.max),
    }, ",") .. "}",
  }
  local counters = {}
  for name, value in pairs(extra or {}) do
    table.insert(counters, field(name, value))
  end
  table.insert(parts, '"counters":{' .. table.concat(counters, ",") .. "}")
  io.write("BENCH_RESULT {" .. table.concat(parts, ",") .. "}\n")
end

return M
