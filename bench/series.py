"""series: one instance's last hour of agent samples, with a million samples stored.

1,000,000 samples are stored as the service stores them (``app.metrics.repository``:
ten-minute buckets per instance): 100 instances with 10,000 samples each, one
every 30 s going back about 3.5 days. ``GET /v1/instances/{id}/metrics`` (the
last hour, by default) of random instances is timed one request at a time
against ``onebox serve --no-worker``; the baseline, in the same run, is the
buckets query the service makes, through pymongo.
"""

from __future__ import annotations

import datetime as dt
import random
import time

import httpx
from pymongo import AsyncMongoClient

from app.auth.tokens import TokenService
from app.clock import utcnow
from app.db import Database
from app.metrics.repository import BUCKET_SECONDS, bucket_id, bucket_start
from app.settings import Settings
from bench.common import SECRET, Row, api_server, dbserver, instance_doc, percentile, scratch
from bench.listing import summary, timed_loop

INTERVAL = 30


def buckets(instance_id: str, samples: int, now: dt.datetime) -> list[dict]:
    """The bucket documents ``samples`` agent samples make, one every 30 s up to now."""
    out: dict[str, dict] = {}
    for k in range(samples):
        at = now - dt.timedelta(seconds=INTERVAL * k)
        start = bucket_start(at)
        doc = out.setdefault(bucket_id(instance_id, start), {"_id": bucket_id(instance_id, start), "kind": "bucket",
                                                             "instance_id": instance_id, "start": start, "s": {}})
        doc["s"][str(int((at - start).total_seconds() * 1000))] = {
            "cpu_percent": 12.5, "load_avg": [0.1, 0.2, 0.3], "memory_percent": 40.0, "disk_percent": 10.0,
            "net_rx_bytes": 10 * k, "net_tx_bytes": 20 * k, "uptime_seconds": float(k)}
    return list(out.values())


async def run(quick: bool = False) -> list[Row]:
    instances, per_instance = (20, 5000) if quick else (100, 10_000)
    budget = 3 if quick else 10
    with scratch("series") as work, dbserver(work) as server:
        client = AsyncMongoClient(server.url(), tz_aware=True)
        try:
            db = Database(client, "bench_series")
            await db.ensure_indexes()
            now = utcnow().replace(microsecond=0)
            records = [instance_doc("bench", now=now) for _ in range(instances)]
            await db.instances.insert_many(records)
            started = time.perf_counter()
            for record in records:
                docs = buckets(record["_id"], per_instance, now)
                for k in range(0, len(docs), 200):
                    await db.metrics.insert_many(docs[k:k + 200], ordered=False)
            seeded = time.perf_counter() - started
            token = TokenService(Settings(jwt_secret=SECRET, data_dir=work / "data")).mint("bench")
            rng = random.Random(3)
            with api_server(server, work, ONEBOX_DATABASE="bench_series") as port:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                             headers={"Authorization": f"Bearer {token}"}) as http:
                    window = {"since": (now - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "until": now.strftime("%Y-%m-%dT%H:%M:%SZ")}

                    async def api_call():  # the last hour of the seeded data (seeding took a while)
                        r = await http.get(f"/v1/instances/{rng.choice(records)['_id']}/metrics", params=window)
                        if r.status_code != 200 or len(r.json()["items"]) != 3600 // INTERVAL + 1:
                            raise RuntimeError(f"GET metrics: {r.status_code} {r.text[:200]}")

                    async def raw_call():
                        until = now
                        since = until - dt.timedelta(hours=1)
                        found = await db.metrics.find(
                            {"instance_id": rng.choice(records)["_id"],
                             "start": {"$gte": bucket_start(since), "$lte": until}}).sort("start", 1).to_list()
                        assert len(found) >= 3600 // BUCKET_SECONDS

                    await api_call()
                    api = summary(await timed_loop(api_call, budget, least=100, most=1000))
                    raw = summary(await timed_loop(raw_call, budget, least=100, most=1000))
        finally:
            await client.close()
    total = instances * per_instance
    return [Row("series", f"one instance's last hour, {total:,} samples stored: API p99", api["p99_ms"], "ms",
                baseline=raw["p99_ms"], baseline_label="pymongo buckets query p99", target="< 50 ms",
                met=api["p99_ms"] < 50,
                note=f"p50 {api['p50_ms']:.1f} ms over {api['n']} requests ({3600 // INTERVAL} points each); "
                     f"seeded {total:,} samples in {seeded:.0f} s")]
