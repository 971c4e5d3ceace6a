-- wrk script: each request posts one sample for one of the bench's agents.
-- The agents (instance id and token per line) come from the file in AGENTS_FILE.
local agents = {}
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

local run = tonumber(os.getenv("RUN") or "0")

local base = 0

function init(args)
  base = os.time()
  for line in io.lines(os.getenv("AGENTS_FILE")) do
    local id, token = line:match("^(%S+) (%S+)$")
    agents[#agents + 1] = {id = id, token = token}
  end
end

function request()
  counter = counter + 1
  local agent = agents[(counter % #agents) + 1]
  -- one second further back for each post of an agent (BSON keeps milliseconds, so sub-second
  -- counters would collide), the run and the thread in the milliseconds: recent, and unique
  local back = math.floor(counter / #agents) % 86400
  local at = os.date("!%Y-%m-%dT%H:%M:%S", base - back) .. string.format(".%03dZ", run * 10 + tid)
  local body = string.format(
    '{"instance_id":"%s","samples":[{"at":"%s","cpu_percent":12.5,"load_avg":[0.1,0.2,0.3],' ..
    '"memory_percent":40.0,"disk_percent":10.0,"net_rx_bytes":10,"net_tx_bytes":20,"uptime_seconds":%d,"gpus":[]}]}',
    agent.id, at, counter)
  return wrk.format("POST", "/v1/agent/metrics",
    {["Authorization"] = "Bearer " .. agent.token, ["Content-Type"] = "application/json"}, body)
end
