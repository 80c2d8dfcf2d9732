-- wrk script of bench/fixed_reference.py: POST a JSON body built from WRK_BODY (one "%s" becomes
-- a key unique to this request: a payment's reference and its Idempotency-Key), with WRK_AUTH as the
-- bearer token when set. WRK_BODY may hold several bodies separated by "\30" (ASCII record
-- separator): requests take them in turn. At the end it prints one JSON line the bench reads.
local templates = {}
for part in string.gmatch(os.getenv("WRK_BODY"), "[^\30]+") do
  templates[#templates + 1] = part
end
local path = os.getenv("WRK_PATH")
local auth = os.getenv("WRK_AUTH")
local threads = {}
local counter = 0
local prefix = ""

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = string.format("%s-%d-%d", os.getenv("WRK_RUN") or "run", id, math.random(1, 1000000000))
end

function request()
  counter = counter + 1
  local key = prefix .. "-" .. counter
  local headers = {["Content-Type"] = "application/json", ["Idempotency-Key"] = key}
  if auth and auth ~= "" then
    headers["Authorization"] = "Bearer " .. auth
  end
  local template = templates[(counter + id) % #templates + 1]
  return wrk.format("POST", path, headers, string.format(template, key))
end

statuses = {}  -- a global: done() reads each thread's copy with thread:get

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do
      counts[#counts + 1] = string.format('{"status": %d, "n": %d}', code, n)
    end
  end
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "errors_connect": %d, "errors_read": %d, ' ..
    '"errors_write": %d, "errors_status": %d, "errors_timeout": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"statuses": [%s]}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(99),
    table.concat(counts, ", ")))
end
