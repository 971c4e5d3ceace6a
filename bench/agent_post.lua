-- wrk script: each request posts one sample for one of the bench's agents.
-- The agents (instance id and token per line) come from the file in AGENTS_FILE.
local agents = {}
local counter = 0
local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  for line in io.lines(os.getenv("AGENTS_FILE")) do
    local id, token = line:match("^(%S+) (%S+)$")
    agents[#agents + 1] = {id = id, token = token}
  end
end

function request()
  counter = counter + 1
  local agent = agents[(counter % #agents) + 1]
  -- now, with the thread and the counter as the fraction: recent enough to be kept, unique per request
  local at = os.date("!%Y-%m-%dT%H:%M:%S", os.time()) .. string.format(".%d%05dZ", tid, counter % 100000)
  local body = string.format(
    '{"instance_id":"%s","samples":[{"at":"%s","cpu_percent":12.5,"load_avg":[0.1,0.2,0.3],' ..
    '"memory_percent":40.0,"disk_percent":10.0,"net_rx_bytes":10,"net_tx_bytes":20,"uptime_seconds":%d,"gpus":[]}]}',
    agent.id, at, counter)
  return wrk.format("POST", "/v1/agent/metrics",
    {["Authorization"] = "Bearer " .. agent.token, ["Content-Type"] = "application/json"}, body)
end
