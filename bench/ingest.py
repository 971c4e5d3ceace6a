"""ingest: agent metric posts through the API vs. raw inserts on the same database.

1. raw: ``insert_one`` of one sample document from C concurrent pymongo clients
   (the best of a few C), and ``insert_many`` of 100-document batches, in this
   process, against the same embedded database the API uses;
2. max: ``POST /v1/agent/metrics`` (one sample each) from 10,000 agents, driven
   closed-loop by wrk (bench/agent_post.lua) against ``onebox serve
   --no-worker`` in its own process — the most the API answers;
3. 330 posts/s offered (10,000 agents every 30 s) for 60 s, then 1,000 and
   3,300 posts/s for 15 s, open-loop at a constant rate by vegeta, every post a
   distinct (instance, time) so none is a duplicate: p50/p99 and the rate
   reached.

The API runs as shipped (group commit, no database read per post); then its
maximum again with one write per post instead of group commit, to show what
batching brings.

Finally every acknowledged (2xx) post's sample must be in the database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import httpx
from pymongo import AsyncMongoClient

from app.auth.tokens import TokenService
from app.clock import utcnow
from app.db import Database
from app.settings import Settings
from app.metrics.repository import stored_samples
from bench.common import (DATABASE, SECRET, Row, api_server, dbserver, instance_doc, percentile, scratch,
                          vegeta_attack, wrk)

LOADS = ((330, 60), (1000, 15), (3300, 15))  # posts/s offered, for how many seconds
AGENTS = 10_000
SCRIPT = Path(__file__).with_name("agent_post.lua")


def sample(at: str) -> dict:
    return {"at": at, "cpu_percent": 12.5, "load_avg": [0.1, 0.2, 0.3], "memory_percent": 40.0, "disk_percent": 10.0,
            "net_rx_bytes": 10, "net_tx_bytes": 20, "uptime_seconds": 100.0, "gpus": []}


async def closed_loop(n: int, concurrency: int, op) -> tuple[float, list[float]]:
    import time

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


async def raw_rates(client: AsyncMongoClient, n: int) -> dict:
    raw = client[DATABASE]["raw_metrics"]
    await raw.create_index([("instance_id", 1), ("at", 1)], unique=True)
    base = utcnow()
    seq = iter(range(10**9))

    def doc(i: int) -> dict:
        k = next(seq)
        return {"instance_id": f"i-{k % 1000}", **sample(""), "at": base - dt.timedelta(milliseconds=k)}

    async def one(i):
        await raw.insert_one(doc(i))

    best = None
    for concurrency in (4, 16, 64):
        rate, latencies = await closed_loop(n, concurrency, one)
        if best is None or rate > best[0]:
            best = (rate, latencies, concurrency)

    async def many(i):
        await raw.insert_many([doc(i) for _ in range(100)], ordered=False)

    batches = max(10, n // 100)
    many_rate, _ = await closed_loop(batches, 4, many)
    return {"insert_one": best[0], "insert_one_p50_ms": percentile(best[1], .5) * 1000,
            "insert_one_p99_ms": percentile(best[1], .99) * 1000, "insert_one_concurrency": best[2],
            "insert_many_docs": many_rate * 100}


async def settle(port: int, agent: tuple[str, str], within: float = 120) -> None:
    """Wait until one post is answered in under 100 ms again: an overloaded run leaves work behind
    (requests its client gave up on still run), which must not be charged to the next run."""
    import time

    instance_id, token = agent
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=within) as http:
        while time.monotonic() < deadline:
            at = utcnow() - dt.timedelta(days=1, microseconds=int(time.time() * 1e6) % 86_400_000_000)
            body = {"instance_id": instance_id, "samples": [sample(at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")]}
            started = time.perf_counter()
            r = await http.post("/v1/agent/metrics", json=body, headers={"Authorization": f"Bearer {token}"})
            if r.status_code == 202 and time.perf_counter() - started < 0.1:
                return
            await asyncio.sleep(1)


def targets(port: int, agents: list[tuple[str, str]], count: int, round_no: int) -> list[dict]:
    """``count`` posts spread over the agents, each agent's k-th post one second further back."""
    now = utcnow().replace(microsecond=0)
    out = []
    for i in range(count):
        instance_id, token = agents[i % len(agents)]
        at = now - dt.timedelta(seconds=i // len(agents) + 1, milliseconds=-(500 + round_no))
        body = {"instance_id": instance_id, "samples": [sample(at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")]}
        out.append({"method": "POST", "url": f"http://127.0.0.1:{port}/v1/agent/metrics",
                    "header": {"Authorization": [f"Bearer {token}"], "Content-Type": ["application/json"]},
                    "body": json.dumps(body).encode()})
    return out


async def run(quick: bool = False) -> list[Row]:
    seconds = 5 if quick else 15
    raw_n = 1500 if quick else 5000
    agent_count = 1000 if quick else AGENTS
    loads = [(rate, 5 if quick else duration) for rate, duration in LOADS]
    rows: list[Row] = []
    with scratch("ingest") as work, dbserver(work) as db:
        client = AsyncMongoClient(db.url(), tz_aware=True)
        try:
            await Database(client, DATABASE).ensure_indexes()
            raw = await raw_rates(client, raw_n)
            tokens = TokenService(Settings(jwt_secret=SECRET, data_dir=work / "data"))
            agents, docs = [], []
            for _ in range(agent_count):
                doc = instance_doc("bench")
                token, doc["agent_jti_hash"] = tokens.mint_agent(doc["_id"])
                agents.append((doc["_id"], token))
                docs.append(doc)
            for start in range(0, len(docs), 1000):
                await client[DATABASE]["instances"].insert_many(docs[start:start + 1000])
            agents_file = work / "agents.txt"
            agents_file.write_text("".join(f"{i} {t}\n" for i, t in agents))
            runs = {}
            for label, single in (("", False), ("one write per post", True)):
                extra = {"BENCH_NO_GROUP_COMMIT": 1} if single else {}
                with api_server(db, work, host=single, **extra) as port:
                    url = f"http://127.0.0.1:{port}"
                    warm = wrk(url, 8, 2, SCRIPT, env={"AGENTS_FILE": str(agents_file), "RUN": str(len(runs) * 10 + 1)})
                    await settle(port, agents[0])
                    best = wrk(url, 64, seconds, SCRIPT,
                               env={"AGENTS_FILE": str(agents_file), "RUN": str(len(runs) * 10 + 2)})
                    paced = {}
                    for n, (rate, duration) in enumerate(loads if not single else []):
                        await settle(port, agents[1])
                        paced[rate] = vegeta_attack(targets(port, agents, rate * duration, n + len(runs) * 10),
                                                    rate, duration, work, f"ingest-{rate}-{len(runs)}")
                        paced[rate]["seconds"] = duration
                runs[label] = (warm, best, paced)
            stored = len(await stored_samples(client[DATABASE]["metrics"]))
        finally:
            await client.close()
    rows.append(Row("ingest", "raw insert_one", raw["insert_one"], "docs/s",
                    note=f"c={raw['insert_one_concurrency']}, p50 {raw['insert_one_p50_ms']:.1f} ms, "
                         f"p99 {raw['insert_one_p99_ms']:.1f} ms"))
    rows.append(Row("ingest", "raw insert_many (100/batch)", raw["insert_many_docs"], "docs/s",
                    baseline=raw["insert_one"], baseline_label="raw insert_one"))
    acked = 0
    for label, (warm, best, paced) in runs.items():
        suffix = f" ({label})" if label else ""
        acked += sum(int(p["status_codes"].get("202", 0)) for p in paced.values())
        acked += sum(r["requests"] - r["errors"] for r in (warm, best))
        rows.append(Row("ingest", f"API posts, max (wrk, 64 conns, {agent_count:,} agents){suffix}", best["rate"],
                        "posts/s", baseline=raw["insert_one"], baseline_label="raw insert_one",
                        target="" if label else "≥ 0.5×",
                        note=f"p50 {best['p50_ms']:.1f} ms, p99 {best['p99_ms']:.1f} ms, non-2xx {best['errors']}",
                        met=None if label else best["errors"] == 0 and best["rate"] >= 0.5 * raw["insert_one"]))
        for rate, p in paced.items():
            ok = p["success"] >= 0.999 and set(p["status_codes"]) <= {"202"}
            rows.append(Row("ingest", f"API posts at {rate}/s offered for {p['seconds']} s: reached", p["throughput"],
                            "posts/s", baseline=float(rate), baseline_label="offered", target="≥ 0.95×, all 2xx",
                            met=ok and p["throughput"] >= 0.95 * rate,
                            note=f"success {p['success']:.3f}, codes {p['status_codes']}"))
            rows.append(Row("ingest", f"API posts at {rate}/s offered: p50", p["p50_ms"], "ms"))
            rows.append(Row("ingest", f"API posts at {rate}/s offered: p99", p["p99_ms"], "ms",
                            target="< 100 ms" if rate == 330 else "", met=(p["p99_ms"] < 100) if rate == 330 else None))
    rows.append(Row("ingest", "acknowledged samples stored", stored, "samples", baseline=acked,
                    baseline_label="2xx answers", target="≥ 1.0×", met=stored >= acked,
                    note="every post carries a distinct (instance, time)"))
    return rows
