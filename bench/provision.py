"""provision: POST → running on a zero-latency cloud with configuration skipped.

``onebox serve`` (API + in-process worker; bench/host.py adds the in-memory
fake cloud, which answers at once) with ``ONEBOX_CONFIGURE=skip``. What is left
of POST → ``running`` is onebox's own cost: the request, the queue (workers
poll every ``ONEBOX_POLL_SECONDS``, 0.5 s), the claim, the steps and their
events. The time of one instance is its record's ``updated_at`` when it
reached ``running`` minus the moment its POST was sent.

1. one at a time: the median overhead;
2. 100 at once (``ONEBOX_WORKER_CONCURRENCY=100``): every overhead, and the
   event-loop lag of the server process meanwhile, from a monitor task in it
   (sleep 10 ms, record how late it wakes), against its lag while idle.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx
from pymongo import AsyncMongoClient

from app.auth.tokens import TokenService
from app.clock import as_utc
from app.settings import Settings
from bench.common import DATABASE, SECRET, Row, cpu_seconds, dbserver, onebox_env, percentile, scratch, start, stop
from bench.fakecloud import NAME, request_body
from tests.support import free_port, wait_for_port


def read_lag(path, since: float, until: float) -> list[float]:
    out = []
    with open(path) as f:
        for line in f:
            at, late = line.split()
            if since <= float(at) <= until:
                out.append(float(late) * 1000)
    return out


def ssh_public_key(work) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "key")], check=True)
    return (work / "key.pub").read_text().strip()


async def provision(http: httpx.AsyncClient, instances, headers: dict, bodies: list[dict]) -> list[float]:
    """POST every body at once; seconds from each POST to its instance's ``running``."""
    sent = {}

    async def post(body):
        started = time.time()
        r = await http.post("/v1/instances", json=body, headers=headers)
        if r.status_code != 202:
            raise RuntimeError(f"POST /v1/instances: {r.status_code} {r.text[:300]}")
        sent[r.json()["id"]] = started

    await asyncio.gather(*(post(b) for b in bodies))
    deadline = time.monotonic() + 300
    while True:
        docs = await instances.find({"_id": {"$in": list(sent)}}, {"status": 1, "updated_at": 1}).to_list()
        done = [d for d in docs if d["status"] in ("running", "failed")]
        if len(done) == len(sent):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(done)} of {len(sent)} instances finished")
        await asyncio.sleep(0.1)
    failed = [d["_id"] for d in docs if d["status"] != "running"]
    if failed:
        raise RuntimeError(f"{len(failed)} provisions failed, e.g. {failed[0]}")
    return [as_utc(d["updated_at"]).timestamp() - sent[d["_id"]] for d in docs]


async def run(quick: bool = False) -> list[Row]:
    serial, burst = (5, 30) if quick else (20, 100)
    with scratch("provision") as work, dbserver(work) as db:
        port = free_port()
        lag_log = work / "lag.txt"
        env = onebox_env(db, work, ONEBOX_PROVIDERS=NAME, ONEBOX_CONFIGURE="skip", ONEBOX_WORKER_CONCURRENCY=burst)
        server = start([sys.executable, "-m", "bench.host", "serve", "--port", str(port), "--lag-log", str(lag_log)],
                       env, work / "server.log")
        client = AsyncMongoClient(db.url(), tz_aware=True)
        try:
            wait_for_port("127.0.0.1", port, 60)
            token = TokenService(Settings(jwt_secret=SECRET, data_dir=work / "data")).mint("bench")
            headers = {"Authorization": f"Bearer {token}"}
            key = ssh_public_key(work)
            instances = client[DATABASE]["instances"]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
                await provision(http, instances, headers, [request_body(0, key)])  # warm up
                idle_from = time.time()
                await asyncio.sleep(3)
                idle = read_lag(lag_log, idle_from, time.time()) if lag_log.exists() else []
                one_by_one = []
                for n in range(serial):
                    one_by_one += await provision(http, instances, headers, [request_body(n + 1, key)])
                burst_from = time.time()
                cpu_from = cpu_seconds(server.pid), cpu_seconds(db.process.pid)
                together = await provision(http, instances, headers,
                                           [request_body(1000 + n, key) for n in range(burst)])
                burst_until = time.time()
                server_cpu, db_cpu = (100 * (cpu_seconds(p) - c) / (burst_until - burst_from)
                                      for p, c in zip((server.pid, db.process.pid), cpu_from))
            await asyncio.sleep(1)  # the monitor's buffered lines
        finally:
            await client.close()
            stop(server)
        lag = read_lag(lag_log, burst_from, burst_until)
    idle_p99 = percentile(idle, .99)
    return [
        Row("provision", "POST → running, one at a time: median", percentile(one_by_one, .5) * 1000, "ms",
            target="< 1 s", met=percentile(one_by_one, .5) < 1.0,
            note=f"n={serial}, p99 {percentile(one_by_one, .99) * 1000:.0f} ms; worker poll 0.5 s"),
        Row("provision", f"POST → running, {burst} at once: median", percentile(together, .5) * 1000, "ms",
            note=f"p99 {percentile(together, .99) * 1000:.0f} ms, all done in {burst_until - burst_from:.1f} s"),
        Row("provision", f"event-loop lag p99, {burst} provisions at once", percentile(lag, .99), "ms",
            baseline=idle_p99, baseline_label="idle", target="< 50 ms", met=percentile(lag, .99) < 50,
            note=f"max {max(lag, default=float('nan')):.0f} ms over {len(lag)} ticks of 10 ms; meanwhile the server "
                 f"used {server_cpu:.0f} % of a core, the database {db_cpu:.0f} %"),
    ]
