"""claim: a worker's job claim among many finished jobs and a few pending ones.

10,000 instance records whose jobs are done (``job: null``, as every running
or deleted instance is) and 100 with a pending provision job, in one database.
A worker's ``JobQueue.claim()`` (the real one: the candidates query, the claim
insert, the lease write) is timed one call at a time; each claimed job is given
straight back (``release``), so 100 stay pending throughout. The baseline, in
the same run: ``find_one`` by ``_id`` on the same collection, the cheapest
read there is.
"""

from __future__ import annotations

import time

from pymongo import AsyncMongoClient

from app.clock import utcnow
from app.db import Database
from app.worker.jobs import JobQueue, new_job
from bench.common import Row, dbserver, instance_doc, percentile, scratch


async def run(quick: bool = False) -> list[Row]:
    finished, pending = (1000 if quick else 10_000), 100
    calls = 200 if quick else 1000
    with scratch("claim") as work, dbserver(work) as server:
        client = AsyncMongoClient(server.url(), tz_aware=True)
        try:
            db = Database(client, "bench_claim")
            await db.ensure_indexes()
            now = utcnow()
            docs = [instance_doc("bench", job=None, now=now) for _ in range(finished)]
            for start in range(0, len(docs), 1000):
                await db.instances.insert_many(docs[start:start + 1000], ordered=False)
            waiting = []
            for _ in range(pending):
                doc = instance_doc("bench", status="pending", now=now)
                doc["job"] = new_job("provision", now)
                waiting.append(doc)
            await db.instances.insert_many(waiting)
            queue = JobQueue(db.instances, db.claims, "bench-worker", lease_seconds=30)

            claim_ms: list[float] = []
            for _ in range(calls):
                started = time.perf_counter()
                claim = await queue.claim()
                claim_ms.append((time.perf_counter() - started) * 1000)
                if claim is None:
                    raise RuntimeError("no job claimed although 100 are pending")
                await claim.release()
            ids = [d["_id"] for d in docs[:: max(1, finished // calls)]]
            get_ms: list[float] = []
            for doc_id in ids:
                started = time.perf_counter()
                await db.instances.find_one({"_id": doc_id})
                get_ms.append((time.perf_counter() - started) * 1000)
            plan = await db.db.command("explain", {"find": "instances", "filter": {
                "job.not_before": {"$lte": utcnow()},
                "$or": [{"job.lease_until": None}, {"job.lease_until": {"$lt": utcnow()}}]},
                "sort": {"job.not_before": 1}, "limit": 8})
        finally:
            await client.close()
    stage = plan["queryPlanner"]["winningPlan"]
    return [Row("claim", f"job claim, {finished:,} finished + {pending} pending: p99", percentile(claim_ms, .99), "ms",
                baseline=percentile(get_ms, .99), baseline_label="find_one by _id p99", target="< 50 ms",
                met=percentile(claim_ms, .99) < 50,
                note=f"p50 {percentile(claim_ms, .5):.1f} ms over {calls} claims (each: candidates query, claim "
                     f"insert, lease write); plan {stage.get('stage')}")]
