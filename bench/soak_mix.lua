-- wrk script of bench/soak.py: POSTs a weighted mix of crash bodies, each on
-- its own connection ("Connection: close"), paced by a random delay before
-- each request, and writes every crash id answered to a file per thread.
--
-- wrk args (after "--"): DIR IDS_PREFIX DELAY_MS NAME=WEIGHT [NAME=WEIGHT ...]
--   DIR/NAME.body and DIR/NAME.headers are each payload;
--   IDS_PREFIX-<thread>.txt gets one answered crash id a line;
--   DELAY_MS is the mean of the exponential pause before each request on a
--   connection (0: none), so that the arrivals are about a Poisson process.
-- Prints one line from done():
--   SUMMARY rps= p50_ms= p90_ms= p99_ms= p999_ms= max_ms= n= ok200= non200= bad_body=
--           sock_err= timeouts= secs= sent_<NAME>=...

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
   table.insert(threads, thread)
end

local function read_file(path)
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   return data
end

local requests, names, cumulative = {}, {}, {}
local total_weight, mean_delay, ids = 0, 0, nil
sent, ok200, non200, bad_body = {}, 0, 0, 0

function init(args)
   local dir, prefix = args[1], args[2]
   mean_delay = tonumber(args[3])
   for i = 4, #args do
      local name, weight = args[i]:match("^(.-)=(%d+%.?%d*)$")
      local headers = {["Connection"] = "close"}
      for line in io.lines(dir .. "/" .. name .. ".headers") do
         local k, v = line:match("^([^:]+):%s*(.-)%s*$")
         if k then headers[k] = v end
      end
      total_weight = total_weight + tonumber(weight)
      table.insert(names, name)
      table.insert(cumulative, total_weight)
      table.insert(requests, wrk.format("POST", "/submit", headers,
                                        read_file(dir .. "/" .. name .. ".body")))
      sent["sent_" .. name] = 0
   end
   ids = assert(io.open(prefix .. "-" .. tid .. ".txt", "w"))
   ids:setvbuf("line")
   math.randomseed(os.time() + tid * 7919)
end

function request()
   local pick = math.random() * total_weight
   for i, edge in ipairs(cumulative) do
      if pick < edge or i == #cumulative then
         sent["sent_" .. names[i]] = sent["sent_" .. names[i]] + 1
         return requests[i]
      end
   end
end

function delay()
   if mean_delay <= 0 then return 0 end
   return math.floor(-math.log(1 - math.random()) * mean_delay)
end

function response(status, headers, body)
   if status == 200 then ok200 = ok200 + 1 else non200 = non200 + 1 end
   local id = body and body:match("^CrashID=bp%-([%x%-]+)")
   if id then
      ids:write(id, "\n")
   else
      bad_body = bad_body + 1
   end
end

function done(summary, latency, _requests)
   local ok, bad, non, per_name = 0, 0, 0, {}
   for _, t in ipairs(threads) do
      ok = ok + (t:get("ok200") or 0)
      non = non + (t:get("non200") or 0)
      bad = bad + (t:get("bad_body") or 0)
      for key, value in pairs(t:get("sent") or {}) do
         per_name[key] = (per_name[key] or 0) + value
      end
   end
   local secs = summary.duration / 1e6
   local e = summary.errors
   local line = string.format(
      "SUMMARY rps=%.1f p50_ms=%.1f p90_ms=%.1f p99_ms=%.1f p999_ms=%.1f max_ms=%.1f n=%d " ..
      "ok200=%d non200=%d bad_body=%d sock_err=%d timeouts=%d secs=%.1f",
      summary.requests / secs, latency:percentile(50) / 1000, latency:percentile(90) / 1000,
      latency:percentile(99) / 1000, latency:percentile(99.9) / 1000, latency.max / 1000,
      summary.requests, ok, non, bad, e.connect + e.read + e.write, e.timeout, secs)
   for key, value in pairs(per_name) do
      line = line .. string.format(" %s=%d", key, value)
   end
   io.write(line .. "\n")
end
