"""scale: provisioning throughput with 1, 2 and 3 worker processes on a slow cloud.

Every provider call waits ``ONEBOX_INJECT_CLOUD_LATENCY_SECONDS=1`` first (a
create and a wait: at least 2 s per instance), configuration is skipped, the
cloud is the in-memory fake (bench/fakecloud.py). The API runs alone
(``--no-worker``); N worker processes (``onebox worker`` with the fake cloud
plugged in, bench/host.py, default concurrency 8 each) share one database. The
same number of instances is POSTed at once for each N, into a fresh database;
throughput is instances per minute from the first POST to the last
``running``, and the speedup is against one worker in the same run.
"""

from __future__ import annotations

import asyncio
import sys
import time

import httpx
from pymongo import AsyncMongoClient

from app.auth.tokens import TokenService
from app.clock import as_utc
from app.settings import Settings
from bench.common import SECRET, Row, cpu_seconds, dbserver, onebox_env, scratch, start, stop
from bench.fakecloud import NAME, request_body
from bench.provision import ssh_public_key
from tests.support import free_port, wait_for_port

LATENCY = 1.0


async def one_run(db, work, workers: int, count: int, key: str, token: str) -> float:
    name = f"bench_scale_{workers}"
    env = onebox_env(db, work, ONEBOX_DATABASE=name, ONEBOX_PROVIDERS=NAME, ONEBOX_CONFIGURE="skip")
    worker_env = {**env, "ONEBOX_INJECT_CLOUD_LATENCY_SECONDS": str(LATENCY)}
    port = free_port()
    processes = [start([sys.executable, "-m", "bench.host", "serve", "--no-worker", "--port", str(port)], env,
                       work / f"api-{workers}.log")]
    processes += [start([sys.executable, "-m", "bench.host", "worker"], worker_env, work / f"worker-{workers}-{n}.log")
                  for n in range(workers)]
    client = AsyncMongoClient(db.url(), tz_aware=True)
    try:
        wait_for_port("127.0.0.1", port, 60)
        await asyncio.sleep(3)  # the workers' start-up (imports, indexes) is not what is measured
        headers = {"Authorization": f"Bearer {token}"}
        db_cpu = cpu_seconds(db.process.pid)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            started = time.time()
            responses = await asyncio.gather(*(http.post("/v1/instances", json=request_body(n, key), headers=headers)
                                               for n in range(count)))
            posted = time.time() - started
        for r in responses:
            if r.status_code != 202:
                raise RuntimeError(f"POST /v1/instances: {r.status_code} {r.text[:300]}")
        ids = [r.json()["id"] for r in responses]
        instances = client[name]["instances"]
        deadline = time.monotonic() + 600
        while True:
            docs = await instances.find({"_id": {"$in": ids}}, {"status": 1, "updated_at": 1}).to_list()
            if all(d["status"] in ("running", "failed") for d in docs) and len(docs) == count:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("provisioning did not finish in 10 minutes")
            await asyncio.sleep(0.25)
        failed = [d for d in docs if d["status"] != "running"]
        if failed:
            raise RuntimeError(f"{len(failed)} provisions failed")
        last = max(as_utc(d["updated_at"]).timestamp() for d in docs)
        db_busy = (cpu_seconds(db.process.pid) - db_cpu) / (time.time() - started) * 100
        return {"rate": count / (last - started) * 60, "posted": posted, "db_cpu": db_busy}
    finally:
        await client.close()
        for p in processes:
            stop(p)


async def run(quick: bool = False) -> list[Row]:
    count = 24 if quick else 100
    rows, rates = [], {}
    with scratch("scale") as work, dbserver(work) as db:
        key = ssh_public_key(work)
        token = TokenService(Settings(jwt_secret=SECRET, data_dir=work / "data")).mint("bench")
        for workers in (1, 2, 3):
            rates[workers] = await one_run(db, work, workers, count, key, token)
            r = rates[workers]
            print(f"   {workers} worker(s): {r['rate']:.0f} instances/min, POSTs {r['posted']:.1f} s, "
                  f"database CPU {r['db_cpu']:.0f} %", flush=True)
    ideal = 8 * 60 / (2 * LATENCY)  # 8 jobs at once per worker, two 1 s calls per instance
    for workers, r in rates.items():
        rows.append(Row("scale", f"{workers} worker(s), {count} instances, 1 s cloud latency", r["rate"], "inst/min",
                        baseline=rates[1]["rate"], baseline_label="1 worker",
                        target="≥ 2×" if workers == 3 else f"ideal {workers}×",
                        met=(r["rate"] >= 2 * rates[1]["rate"]) if workers == 3 else None,
                        note=f"ceiling {ideal * workers:.0f}/min (8 jobs × 2 calls of 1 s per worker); "
                             f"POSTs took {r['posted']:.1f} s; database CPU {r['db_cpu']:.0f} % of one core"))
    return rows
