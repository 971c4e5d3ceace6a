-- onebox QA, cpu suite: sysbench's CPU test (count the primes below cpu-max-prime, by trial
-- division, once per event), run by LuaJIT. The cumulative report is one JSON line that
-- onebox parses (app/qa/parsers.py): never sysbench's prose.
sysbench.cmdline.options = {
  ["cpu-max-prime"] = {"count primes below this number, once per event", 10000},
}

function event()
  local limit = sysbench.opt.cpu_max_prime
  local found = 0
  for c = 3, limit do
    local t = math.sqrt(c)
    local l = 2
    while l <= t do
      if c % l == 0 then break end
      l = l + 1
    end
    if l > t then found = found + 1 end
  end
  primes = found  -- kept, so the work cannot be optimized away; event() must return nothing
end

sysbench.hooks.report_cumulative = function(stat)
  io.write(string.format(
    '{"onebox_qa": "cpu", "threads": %d, "events": %d, "seconds": %.6f, "latency_avg_s": %.9f, ' ..
    '"latency_max_s": %.9f, "latency_pct_s": %.9f, "percentile": %d, "cpu_max_prime": %d}\n',
    sysbench.opt.threads, stat.events, stat.time_total, stat.latency_avg, stat.latency_max, stat.latency_pct,
    sysbench.opt.percentile, sysbench.opt.cpu_max_prime))
end
