"""Benchmark: agent posts per second through the API vs. the database's raw insert rate.

Both are measured in one run against the same embedded FerretDB, so the
ratio means something on whatever machine runs it:

1. raw: ``insert_one`` of one sample document, C concurrent clients;
2. api: ``POST /v1/agent/metrics`` with one sample, C concurrent clients,
   against ``onebox serve --no-worker`` running in its own process;
3. paced: an open-loop load at a fixed rate (3,300 posts/s = 100,000 agents
   every 30 s, or less with --rate), reporting p50/p99 latency and the rate
   actually reached.

Run: ``make bench`` or ``.venv/bin/python -m bench.agent_ingest [--posts N] [--rate R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from pymongo import AsyncMongoClient

from app.auth.tokens import TokenService
from app.clock import utcnow
from app.embedded_db import EmbeddedDatabase
from app.ids import new_instance_id
from app.settings import REPO_ROOT, Settings
from tests.support import free_port, wait_for_port

SECRET = "bench-secret-" + "b" * 40


def sample(at) -> dict:
    return {"at": at, "cpu_percent": 12.5, "load_avg": [0.1, 0.2, 0.3], "memory_percent": 40.0,
            "disk_percent": 10.0, "net_rx_bytes": 10, "net_tx_bytes": 20, "uptime_seconds": 100.0, "gpus": []}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000


async def run_concurrent(n: int, concurrency: int, op) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(n))

    async def client():
        for i in counter:
            started = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return n / (time.perf_counter() - started), latencies


async def paced(rate: float, seconds: float, op) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    tasks = []
    start = time.perf_counter()
    total = int(rate * seconds)

    async def one(i):
        nonlocal errors
        t0 = time.perf_counter()
        try:
            await op(i)
            latencies.append(time.perf_counter() - t0)
        except Exception:  # noqa: BLE001 - count and go on
            errors += 1

    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return total / (time.perf_counter() - start), latencies, errors


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--rate", type=float, default=3300.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="onebox-bench-"))
    db = EmbeddedDatabase(REPO_ROOT / ".bin" / "onebox-ferretdb", f"127.0.0.1:{free_port()}", work / "db").start()
    port = free_port()
    env = {**os.environ, "ONEBOX_MONGODB_URL": db.url(), "ONEBOX_DATABASE": "bench", "ONEBOX_JWT_SECRET": SECRET,
           "ONEBOX_DATA_DIR": str(work / "data"), "ONEBOX_LOG_LEVEL": "WARNING"}
    api = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=open(work / "api.log", "wb"))
    try:
        wait_for_port("127.0.0.1", port, 60)
        client = AsyncMongoClient(db.url(), tz_aware=True)
        raw = client["bench"]["raw_metrics"]
        await raw.create_index([("instance_id", 1), ("at", 1)], unique=True)

        async def raw_op(i):
            await raw.insert_one({"instance_id": f"i-{i % args.agents}", **sample(utcnow()), "n": i})

        raw_rate, raw_lat = await run_concurrent(args.posts, args.concurrency, raw_op)

        tokens = TokenService(Settings(jwt_secret=SECRET, data_dir=work / "data"))
        agents = []
        now = utcnow()
        for _ in range(args.agents):
            instance_id = new_instance_id()
            token, jti_hash = tokens.mint_agent(instance_id)
            await client["bench"]["instances"].insert_one({
                "_id": instance_id, "owner": "bench", "status": "running", "agent_jti_hash": jti_hash,
                "created_at": now, "updated_at": now, "job": None})
            agents.append((instance_id, {"Authorization": f"Bearer {token}"}))
        seq = [0]

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     limits=httpx.Limits(max_connections=args.concurrency * 4)) as http:
            async def api_op(i):
                instance_id, headers = agents[i % len(agents)]
                seq[0] += 1
                at = f"2026-01-01T00:00:00.{seq[0]:06d}Z"  # unique per post: no duplicate short-cut
                r = await http.post("/v1/agent/metrics", headers=headers,
                                    json={"instance_id": instance_id, "samples": [{**sample(None), "at": at}]})
                if r.status_code != 202:
                    raise RuntimeError(f"{r.status_code} {r.text[:200]}")

            for i in range(50):  # warm up connections and caches
                await api_op(i)
            api_rate, api_lat = await run_concurrent(args.posts, args.concurrency, api_op)
            paced_rate, paced_lat, errors = await paced(args.rate, args.seconds, api_op)
        await client.close()
    finally:
        api.terminate()
        api.wait(10)
        db.stop()

    print(f"raw insert_one:        {raw_rate:8.0f} /s   p50 {percentile(raw_lat, .5):6.1f} ms  p99 {percentile(raw_lat, .99):6.1f} ms")
    print(f"API agent posts:       {api_rate:8.0f} /s   p50 {percentile(api_lat, .5):6.1f} ms  p99 {percentile(api_lat, .99):6.1f} ms")
    print(f"ratio API / raw:       {api_rate / raw_rate:8.2f}   (target >= 0.50)")
    print(f"paced at {args.rate:.0f}/s for {args.seconds:.0f}s: reached {paced_rate:.0f}/s, "
          f"p50 {percentile(paced_lat, .5):.1f} ms, p99 {percentile(paced_lat, .99):.1f} ms, errors {errors} "
          f"(target p99 < 100 ms)")
    print(f"(2 cores shared by the load generator, the API process and FerretDB; mean API latency "
          f"{statistics.mean(api_lat) * 1000:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
