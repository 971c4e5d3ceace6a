-- onebox QA, memory suite: a STREAM-like "copy" kernel. Each thread copies one buffer (larger than
-- any cache) into another with memcpy, once per event; bandwidth counts the bytes read and written
-- (2 x block, as STREAM does). The cumulative report is one JSON line that onebox parses
-- (app/qa/parsers.py): never sysbench's prose.
local ffi = require("ffi")

sysbench.cmdline.options = {
  ["block-kb"] = {"bytes copied per event, in KiB (each thread holds two such buffers)", 65536},
}

function thread_init()
  block = sysbench.opt.block_kb * 1024
  src = ffi.new("uint8_t[?]", block)
  dst = ffi.new("uint8_t[?]", block)
  ffi.fill(src, block, 7)
  ffi.fill(dst, block, 0)
end

function event()
  ffi.copy(dst, src, block)
end

sysbench.hooks.report_cumulative = function(stat)
  io.write(string.format(
    '{"onebox_qa": "memory", "threads": %d, "events": %d, "seconds": %.6f, "block_bytes": %d, ' ..
    '"latency_avg_s": %.9f, "latency_max_s": %.9f, "latency_pct_s": %.9f, "percentile": %d}\n',
    sysbench.opt.threads, stat.events, stat.time_total, sysbench.opt.block_kb * 1024, stat.latency_avg,
    stat.latency_max, stat.latency_pct, sysbench.opt.percentile))
end
