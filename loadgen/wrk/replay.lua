-- wrk script: sends pre-signed requests (`loadgen presign`), each at most once, so wrk measures
-- hookd without signing anything itself.
--
--   wrk -t1 -c32 -d20s -s replay.lua http://127.0.0.1:8080 -- requests.bin report.json [THREADS]
--
-- requests.bin holds raw HTTP/1.1 requests, each after a line with its length in bytes. With
-- THREADS (wrk's -t, default 1), thread k sends every THREADS-th request from the k-th. A
-- thread that runs out stops; report.json then counts it in "exhausted_threads", and the run
-- needs more requests.

local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

-- Globals, so that done() can read them through thread:get().
requests, sent, exhausted, report = {}, 0, 0, nil

function init(args)
   report = args[2]
   local stride = tonumber(args[3] or "1")
   local file = assert(io.open(args[1], "rb"))
   local data = file:read("*a")
   file:close()
   local pos, n = 1, 0
   while pos <= #data do
      local eol = data:find("\n", pos, true)
      local len = tonumber(data:sub(pos, eol - 1))
      if n % stride == index then
         requests[#requests + 1] = data:sub(eol + 1, eol + len)
      end
      n = n + 1
      pos = eol + len + 1
   end
   -- Sending allocates nothing in Lua, so a collector left running would only stop the
   -- thread now and then to walk the requests table: tens of milliseconds of latency each
   -- time, charged to hookd.
   data = nil
   collectgarbage("collect")
   collectgarbage("stop")
end

function request()
   if sent >= #requests then
      exhausted = 1
      wrk.thread:stop()
      -- wrk sends what this returns before it stops: a request hookd refuses, never a repeat.
      return "GET /health/ran-out HTTP/1.1\r\nHost: replay\r\n\r\n"
   end
   sent = sent + 1
   return requests[sent]
end

function done(summary, latency, _)
   local sent_all, ran_out = 0, 0
   for _, thread in ipairs(threads) do
      sent_all = sent_all + thread:get("sent")
      ran_out = ran_out + thread:get("exhausted")
   end
   local e = summary.errors
   local out = assert(io.open(threads[1]:get("report"), "w"))
   out:write(string.format(
      '{"requests":%d,"sent":%d,"duration_us":%d,"connect_errors":%d,"read_errors":%d,' ..
      '"write_errors":%d,"non_2xx":%d,"timeouts":%d,"exhausted_threads":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, sent_all, summary.duration, e.connect, e.read, e.write, e.status,
      e.timeout, ran_out, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max, latency.mean))
   out:close()
end
