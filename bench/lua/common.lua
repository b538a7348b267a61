-- Shared by the bench's wrk scripts (bench/harness.py puts it before each one): answers counted
-- by status in every thread, read back in done() through the thread objects setup() kept, as
-- wrk documents; done() prints one line "BENCH_WRK {json}" for the harness.
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

statuses = {}
refusals = {}
sent = 0
repeats = 0

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  -- A refusal's reason (slot_taken, window_full, not_released …) from its JSON body.
  if status >= 400 and status ~= 429 then
    local code = string.match(body or "", '"code"%s*:%s*"([%w_]+)"') or "unknown"
    refusals[code] = (refusals[code] or 0) + 1
  end
end

function done(summary, latency, requests)
  local merged, reasons, per_thread, repeated = {}, {}, {}, 0
  for i, thread in ipairs(threads) do
    for code, n in pairs(thread:get("statuses") or {}) do
      merged[code] = (merged[code] or 0) + n
    end
    for reason, n in pairs(thread:get("refusals") or {}) do
      reasons[reason] = (reasons[reason] or 0) + n
    end
    per_thread[i] = tostring(thread:get("sent") or 0)
    repeated = repeated + (thread:get("repeats") or 0)
  end
  local codes = {}
  for code, n in pairs(merged) do
    codes[#codes + 1] = string.format('"%d":%d', code, n)
  end
  local why = {}
  for reason, n in pairs(reasons) do
    why[#why + 1] = string.format('"%s":%d', reason, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"requests":%d,"duration_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"p50":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f},"statuses":{%s},"refusals":{%s},"sent":[%s],"repeats":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean,
    table.concat(codes, ","), table.concat(why, ","), table.concat(per_thread, ","), repeated))
end
