"""The database goes away for 10 s in the middle of real work, and comes back.

While 10 instances are being provisioned by a separate worker process and agents post 100 metric
samples a second, the database server is stopped for 10 s and started again on the same data. Every
provision completes with each step run once, the API answers 503 problems (never a 500, never a
hang) while the database is away, and every sample the API acknowledged is stored. The API and
the worker are processes of their own, as deployed; this test only drives them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest

from app.clock import utcnow
from app.metrics.repository import stored_samples
from tests.api.helpers import instance_body, wait_status
from tests.api.test_agent_metrics import bearer, running_instance, sample
from tests.conftest import make_settings, start_database
from tests.e2e.cloud_support import running_onebox
from tests.e2e.test_workers import start_api, start_worker, stop, wait_until
from tests.support import free_port

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 10.0
POSTS_PER_SECOND = 100
AGENTS = 5


class AgentClients(contextlib.AsyncExitStack):
    """Many small HTTP clients, like many agents: one client with hundreds of connections in flight
    spends its time in its own pool bookkeeping (httpcore's is quadratic), not waiting for the API."""

    def __init__(self, port: int, count: int = 50) -> None:
        super().__init__()
        self.port, self.count, self.clients, self.turn = port, count, [], 0

    async def __aenter__(self):
        await super().__aenter__()
        for _ in range(self.count):
            # Connections idle no longer than 2 s: uvicorn closes one idle for 5 s, and a post sent on it at
            # that moment fails with a ReadError the agent's own client (a connection per post) never meets.
            self.clients.append(await self.enter_async_context(
                httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=30,
                                  limits=httpx.Limits(keepalive_expiry=2.0))))
        return self

    async def post(self, *args, **kwargs):
        self.turn += 1
        return await self.clients[self.turn % self.count].post(*args, **kwargs)


async def post_metrics(api, agents, stop_at: float, results: list) -> None:
    """One POST every 10 ms, each a sample of its own, until ``stop_at``; answers land in ``results``."""
    base = utcnow() - dt.timedelta(hours=2)
    sent = 0
    pending: set[asyncio.Task] = set()

    async def one(instance_id, token, at):
        started = time.monotonic()
        try:
            response = await api.post("/v1/agent/metrics", headers=bearer(token),
                                      json={"instance_id": instance_id, "samples": [sample(at)]})
            status = response.status_code
            body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        except Exception as exc:  # noqa: BLE001 - recorded, and fails the test below
            status, body = f"error: {type(exc).__name__}", {}
        results.append((status, time.monotonic() - started, instance_id, at, body, started))

    next_at = time.monotonic()
    while time.monotonic() < stop_at:
        instance_id, token = agents[sent % len(agents)]
        at = base + dt.timedelta(seconds=sent)
        task = asyncio.create_task(one(instance_id, token, at.replace(microsecond=0)))
        pending.add(task)
        task.add_done_callback(pending.discard)
        sent += 1
        next_at += 1 / POSTS_PER_SECOND
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await asyncio.gather(*pending)


async def test_ten_second_outage_during_provisions_and_agent_posts(tmp_path, ssh_keypair):
    data = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path
    db = start_database(data / f"onebox-outage-{uuid.uuid4().hex[:6]}", tmp_path / "dbserver.log")
    # A lease longer than the outage: a worker that waited it out still owns its jobs.
    settings = make_settings(db, tmp_path / "data", lease_seconds=30.0)
    worker = server = None
    try:
        server, port = await start_api(settings, tmp_path / "api.log")
        async with running_onebox(settings, worker=False) as (api, svc), AgentClients(port) as served:
            headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            agents = [await running_instance(svc) for _ in range(AGENTS)]
            ids = []
            for n in range(10):
                r = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"box-{n}"),
                                   headers=headers)
                assert r.status_code == 202, r.text
                ids.append(r.json()["id"])
            # Each create takes 3 s, so every provision is mid-step when the database goes.
            worker = start_worker(settings, tmp_path / "worker.log", ONEBOX_LOCAL_CREATE_DELAY_SECONDS=3,
                                  ONEBOX_WORKER_CONCURRENCY=10, ONEBOX_LEASE_SECONDS=30)
            results: list = []
            began = time.monotonic()
            load = asyncio.create_task(post_metrics(served, agents, began + OUTAGE_SECONDS + 12, results))

            async def all_claimed():
                return await svc.db.instances.count_documents({"status": "provisioning"}) == len(ids)
            await wait_until(all_claimed, timeout=30, what="the worker to take every instance")
            await asyncio.to_thread(db.stop)  # (not on the loop the API shares with this test)
            down_at = time.monotonic()
            await asyncio.sleep(OUTAGE_SECONDS)
            await asyncio.to_thread(db.start)
            up_at = time.monotonic()
            await load
            loaded_at = time.monotonic()

            async def all_settled():
                return await svc.db.instances.count_documents({"_id": {"$in": ids}, "job": None}) == len(ids)
            try:
                await wait_until(all_settled, timeout=90, what="every provision to finish")
            except AssertionError:
                stuck = [(d["_id"], d["status"], d["job"]) async for d in svc.db.instances.find(
                    {"_id": {"$in": ids}, "job": {"$ne": None}})]
                raise AssertionError(stuck) from None
            for instance_id in ids:
                done = (await api.get(f"/v1/instances/{instance_id}", headers=headers)).json()
                assert done["status"] == "running", done
                events = (await api.get(f"/v1/instances/{instance_id}/events", headers=headers)).json()
                runs = Counter(e["step"] for e in events if e["type"] == "step.started")
                assert runs == {"create": 1, "wait_running": 1, "configure": 1}, (instance_id, runs)
                assert sum(e["type"] == "step.succeeded" for e in events) == 3, [(e["type"], e["step"], e["message"]) for e in events]

            settled_at = time.monotonic()
            statuses = Counter(status for status, *_ in results)
            odd = [(status, body) for status, _, _, _, body, _ in results if status not in (202, 503)]
            assert set(statuses) <= {202, 503}, (statuses, [body.get("detail") for _, body in odd[:3]])
            assert statuses[503] > 0, "the outage was seen by the API"
            slowest = max(took for _, took, *_ in results)
            slow = [(round(started - down_at, 1), round(took, 1), status) for status, took, _, _, _, started in results
                    if took > 3.5]
            assert slowest < 5.0, (f"a request took {slowest:.1f}s", f"outage 0..{up_at - down_at:.1f}", [s for s in slow if s[1] > 5])
            problems = [body for status, _, _, _, body, _ in results if status == 503]
            assert {p.get("code") for p in problems} == {"database_unavailable"}
            acknowledged = [(instance_id, at) for status, _, instance_id, at, body, _ in results if status == 202]
            stored = Counter(await stored_samples(svc.db.metrics))
            lost = [sample for sample in acknowledged if stored[sample] != 1]
            assert lost == [], f"{len(lost)} acknowledged samples are not stored once: {lost[:5]}"
            print(f"\noutage {up_at - down_at:.1f}s: {len(results)} posts, {statuses[202]} acknowledged and "
                  f"stored, {statuses[503]} answered 503; slowest answer {slowest:.2f}s; provisions done "
                  f"{settled_at - up_at:.1f}s after the database returned (load ended {loaded_at - up_at:.1f}s after)")
        stop(worker)
        log = (tmp_path / "worker.log").read_text()
        assert "Traceback" not in log, log[-3000:]
        assert "database unavailable" in log or "claiming failed" in log, "the worker did see the outage"
    finally:
        for process in (worker, server):
            if process is not None:
                stop(process, signal.SIGKILL)
        db.stop()
