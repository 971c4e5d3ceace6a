"""agent: the real agent's memory and CPU over 10 minutes of 30 s intervals.

The agent (playbooks/roles/agent/files/onebox_agent.py) runs under the
system's ``python3``, as on a VM, posting to ``onebox serve --no-worker`` with
its own per-instance token. Its peak RSS (VmHWM) and CPU (utime + stime from
/proc/<pid>/stat over the wall time) are compared with an idle
``python3 -c 'import time; time.sleep(…)'`` started alongside: the floor of any
Python process on this machine. The samples it stored are counted too.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

from pymongo import AsyncMongoClient

from app.auth.tokens import TokenService
from app.settings import REPO_ROOT, Settings
from bench.common import DATABASE, SECRET, Row, api_server, cpu_seconds, dbserver, instance_doc, scratch

AGENT = REPO_ROOT / "playbooks" / "roles" / "agent" / "files" / "onebox_agent.py"
def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(quick: bool = False) -> list[Row]:
    seconds, interval = (65, 30) if quick else (600, 30)
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else shutil.which("python3")  # as on a VM
    with scratch("agent") as work, dbserver(work) as db:
        client = AsyncMongoClient(db.url(), tz_aware=True)
        try:
            doc = instance_doc("bench")
            token, doc["agent_jti_hash"] = TokenService(Settings(jwt_secret=SECRET, data_dir=work / "data")) \
                .mint_agent(doc["_id"])
            with api_server(db, work) as port:
                await client[DATABASE]["instances"].insert_one(doc)
                config = work / "agent.json"
                config.write_text(json.dumps({"url": f"http://127.0.0.1:{port}", "token": token,
                                              "instance_id": doc["_id"], "interval": interval,
                                              "log_file": str(work / "agent.log")}))
                config.chmod(0o600)
                agent = subprocess.Popen([python, str(AGENT), "--config", str(config)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
                idle = subprocess.Popen([python, "-c", f"import time; time.sleep({seconds + 30})"])
                started = time.monotonic()
                try:
                    await asyncio.sleep(seconds)
                    wall = time.monotonic() - started
                    agent_cpu, idle_cpu = cpu_seconds(agent.pid), cpu_seconds(idle.pid)
                    agent_rss, idle_rss = peak_rss_mb(agent.pid), peak_rss_mb(idle.pid)
                    alive = agent.poll() is None
                finally:
                    for p in (agent, idle):
                        p.terminate()
                        p.wait(15)
                stored = await client[DATABASE]["metrics"].count_documents({"instance_id": doc["_id"]})
        finally:
            await client.close()
    cpu_percent = 100 * agent_cpu / wall
    expected = int(seconds // interval)
    return [
        Row("agent", "agent peak RSS (VmHWM)", agent_rss, "MB", baseline=idle_rss, baseline_label="idle python3",
            target="< 25 MB", met=agent_rss < 25,
            note=f"{seconds} s at {interval} s intervals, {python} {_version(python)}"),
        Row("agent", "agent CPU, % of one core", cpu_percent, "%", baseline=100 * idle_cpu / wall,
            baseline_label="idle python3", target="< 0.5 %", met=cpu_percent < 0.5,
            note=f"{agent_cpu:.2f} s CPU over {wall:.0f} s wall, start-up included"),
        Row("agent", "samples stored", float(stored), "samples", baseline=float(expected),
            baseline_label="intervals elapsed", target="all", met=alive and stored >= expected,
            note="" if alive else "the agent exited early"),
    ]


def _version(python: str) -> str:
    return subprocess.run([python, "--version"], capture_output=True, text=True).stdout.strip()
