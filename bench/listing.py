"""list: ``GET /v1/instances?limit=50`` vs. the same query through pymongo alone; and ``GET`` of one instance.

Two data sets, each in its own database, seeded with ``insert_many`` of
records shaped as the service writes them: 10,000 instances of one owner, and
100,000 across 100 owners (1,000 each); every running instance also has its
"latest" sample stored, so each page's 50 health summaries are real lookups.
For each: the API, one request at a time from an httpx client, against
``onebox serve --no-worker``, and the page query the service runs
(``app.pagination.page``: owner + status filter, newest first, limit + 1),
timed in this process with pymongo — the API's overhead is the ratio of the
two (the driver's own cost, well under a millisecond, counts against the API).
The first page, and on the one-owner set a page further on (``cursor``), are
measured, and the database's ``explain`` of each is recorded: does it use an
index? On the 100k set, ``GET /v1/instances/{id}`` of random instances too,
against ``find_one`` by ``_id`` through pymongo.
"""

from __future__ import annotations

import json
import time

import httpx
from pymongo import AsyncMongoClient

from app.auth.tokens import TokenService
from app.clock import utcnow
from app.db import Database
from app.ids import new_instance_id
from app.settings import Settings
from bench.common import SECRET, Row, api_server, dbserver, instance_doc, percentile, scratch

STATUSES = ("running",) * 8 + ("failed", "deleted")


async def seed(db: Database, owners: int, per_owner: int) -> list[str]:
    """The records, and each running one's latest sample (what a page's health shows); their ids."""
    from app.metrics.repository import sample_ops

    now = utcnow()
    batch, latest, ids = [], [], []
    for n in range(owners * per_owner):
        owner = "solo" if owners == 1 else f"owner-{n % owners}"
        doc = instance_doc(owner, status=STATUSES[n % len(STATUSES)], instance_id=new_instance_id(), now=now)
        batch.append(doc)
        ids.append(doc["_id"])
        if doc["status"] == "running":
            latest += [op for op, sample in sample_ops(doc["_id"], [{"at": now, "cpu_percent": 12.5,
                                                                    "memory_percent": 40.0}]) if not sample]
        if len(batch) == 1000:
            await db.instances.insert_many(batch, ordered=False)
            if latest:
                await db.metrics.bulk_write(latest, ordered=False)
            batch, latest = [], []
    if batch:
        await db.instances.insert_many(batch, ordered=False)
        if latest:
            await db.metrics.bulk_write(latest, ordered=False)
    return ids


def page_query(owner: str, cursor: str | None) -> dict:
    query = {"owner": owner, "status": {"$ne": "deleted"}}  # what InstanceService.list asks for
    if cursor:
        query["_id"] = {"$lt": cursor}
    return query


async def timed_loop(op, budget: float, least: int = 3, most: int = 200) -> list[float]:
    """Run ``op`` one call after another for ``budget`` seconds (at least ``least`` calls): seconds each."""
    latencies: list[float] = []
    deadline = time.perf_counter() + budget
    while len(latencies) < most and (time.perf_counter() < deadline or len(latencies) < least):
        started = time.perf_counter()
        await op()
        latencies.append(time.perf_counter() - started)
    return latencies


def summary(latencies: list[float]) -> dict:
    return {"p50_ms": percentile(latencies, .5) * 1000, "p99_ms": percentile(latencies, .99) * 1000,
            "rate": len(latencies) / sum(latencies), "n": len(latencies)}


async def explain(db: Database, owner: str, cursor: str | None) -> dict:
    plan = await db.db.command("explain", {"find": "instances", "filter": page_query(owner, cursor),
                                           "sort": {"_id": -1}, "limit": 51})
    return plan.get("queryPlanner", {}).get("winningPlan", {})


async def run(quick: bool = False) -> list[Row]:
    budget = 3 if quick else 10  # seconds of requests per measurement (at least 3 requests)
    sets = [(1, 1000 if quick else 10_000, 50), (10 if quick else 100, 1000, 250)]  # owners, each, p99 target
    rows: list[Row] = []
    plans = {}
    with scratch("list") as work, dbserver(work) as server:
        client = AsyncMongoClient(server.url(), tz_aware=True)
        try:
            tokens = TokenService(Settings(jwt_secret=SECRET, data_dir=work / "data"))
            for n, (owners, per_owner, p99_target) in enumerate(sets):
                label = f"{owners * per_owner // 1000}k records, {owners} owner{'s' if owners > 1 else ''}"
                name = f"bench_list_{n}"
                db = Database(client, name)
                await db.ensure_indexes()
                started = time.perf_counter()
                ids = await seed(db, owners, per_owner)
                seeded = time.perf_counter() - started
                owner = "solo" if owners == 1 else "owner-7"
                first = await db.instances.find(page_query(owner, None)).sort("_id", -1).skip(500).limit(1).to_list()
                cursor = first[0]["_id"]  # page 11, as a client following next_cursor gets there
                token = tokens.mint(owner)
                admin = tokens.mint("bench-admin", role="admin")
                with api_server(server, work, ONEBOX_DATABASE=name) as port:
                    pages = [("first page", None)] + ([("page 11 (cursor)", cursor)] if owners == 1 else [])
                    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60,
                                                 headers={"Authorization": f"Bearer {token}"}) as http:
                        for page_label, cur in pages:
                            params = {"limit": 50, **({"cursor": cur} if cur else {})}

                            async def api_call():
                                r = await http.get("/v1/instances", params=params)
                                if r.status_code != 200 or len(r.json()["items"]) != 50:
                                    raise RuntimeError(f"GET /v1/instances: {r.status_code} {r.text[:200]}")

                            async def raw_call():
                                docs = await db.instances.find(page_query(owner, cur)).sort("_id", -1) \
                                    .limit(51).to_list()
                                assert len(docs) == 51

                            await api_call()  # warm up
                            api = summary(await timed_loop(api_call, budget))
                            raw = summary(await timed_loop(raw_call, budget))
                            plans[f"{label}, {page_label}"] = await explain(db, owner, cur)
                            what = f"{label}, {page_label}"
                            rows.append(Row("list", f"{what}: API p50", api["p50_ms"], "ms", baseline=raw["p50_ms"],
                                            baseline_label="pymongo p50", target="≤ 1.5×",
                                            met=api["p50_ms"] <= 1.5 * raw["p50_ms"],
                                            note=f"{api['n']} requests, one at a time; pymongo {raw['n']}; the "
                                                 "API also reads 50 health summaries"))
                            rows.append(Row("list", f"{what}: API p99", api["p99_ms"], "ms", baseline=raw["p99_ms"],
                                            baseline_label="pymongo p99", target=f"< {p99_target} ms",
                                            met=api["p99_ms"] < p99_target))
                            rows.append(Row("list", f"{what}: API req/s", api["rate"], "req/s",
                                            baseline=raw["rate"], baseline_label="pymongo queries/s",
                                            note="one client, one request at a time"))
                        if owners > 1:
                            rows += await get_one(http, db, ids, admin, budget)
                plan = plans[f"{label}, first page"]
                rows.append(Row("list", f"{label}: query plan", float(owners * per_owner), "records",
                                note=f"seeded in {seeded:.0f} s; plan {plan.get('plan', plan)}",
                                target="uses an index", met=plan.get("stage") == "IXSCAN"))
        finally:
            await client.close()
    print(json.dumps(plans, indent=1, default=str))
    return rows


async def get_one(http: httpx.AsyncClient, db: Database, ids: list[str], admin: str, budget: float) -> list[Row]:
    """``GET /v1/instances/{id}`` of random instances (as an admin: any owner's) vs. pymongo's find_one."""
    import random

    rng = random.Random(1)
    headers = {"Authorization": f"Bearer {admin}"}

    async def api_call():
        r = await http.get(f"/v1/instances/{rng.choice(ids)}", headers=headers)
        if r.status_code != 200:
            raise RuntimeError(f"GET /v1/instances/id: {r.status_code} {r.text[:200]}")

    async def raw_call():
        assert await db.instances.find_one({"_id": rng.choice(ids)}) is not None

    api = summary(await timed_loop(api_call, budget, least=200, most=2000))
    raw = summary(await timed_loop(raw_call, budget, least=200, most=2000))
    return [Row("list", f"get one instance among {len(ids) // 1000}k: API p99", api["p99_ms"], "ms",
                baseline=raw["p99_ms"], baseline_label="pymongo find_one p99", target="< 20 ms",
                met=api["p99_ms"] < 20, note=f"p50 {api['p50_ms']:.1f} ms over {api['n']} requests; "
                                             f"pymongo p50 {raw['p50_ms']:.1f} ms")]
