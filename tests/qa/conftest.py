"""A onebox on a real port with two configured local instances, shared by the QA suites' tests.

Configuring an instance (a real Ansible run, the real agent) is what costs most, so the two instances
are made once per module and every suite runs on them, one run at a time (one QA run per instance).
The tools come from this machine (``make qa-tools``): a local instance's commands run here. The server
runs in a thread of its own (``tests.client.conftest.LiveServer``), so a test can pause its worker (the
crash drill) and the CLI can be run against it. ``QA_TIMELINE=1 pytest -s`` prints each run's events with
their timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import httpx

from tests.api.helpers import instance_body, wait_status
from tests.client.conftest import LiveServer
from tests.conftest import make_settings
from tests.support import free_port

FINAL = {"passed", "failed", "error", "cancelled"}


@dataclass
class QaEnv:
    api: object
    server: object  # tests.client.conftest.LiveServer: mint(), stop_worker(), start_worker()
    settings: object
    headers: dict
    admin: dict
    a: dict  # instance A: a bootstrap script that exits 0
    b: dict  # instance B: none

    async def run(self, suite: str, instances: list[str], params: dict | None = None, timeout: float = 240) -> dict:
        created = await self.start(suite, instances, params)
        return await self.wait(created["id"], timeout)

    async def start(self, suite: str, instances: list[str], params: dict | None = None) -> dict:
        body = {"suite": suite, "instances": instances, **({"params": params} if params else {})}
        response = await self.api.post("/v1/qa-runs", json=body, headers=self.headers)
        assert response.status_code == 202, response.text
        return response.json()

    async def wait(self, run_id: str, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = (await self.api.get(f"/v1/qa-runs/{run_id}", headers=self.headers)).json()
            if run["status"] in FINAL:
                if os.environ.get("QA_TIMELINE"):
                    import datetime as dt
                    t0 = prev = dt.datetime.fromisoformat(run["created_at"].replace("Z", "+00:00"))
                    for e in await self.events(run_id):
                        at = dt.datetime.fromisoformat(e["at"].replace("Z", "+00:00"))
                        print(f"  {(at - t0).total_seconds():6.1f} (+{(at - prev).total_seconds():5.1f}) {e['type']}: {e['message'][:80]}")
                        prev = at
                return run
            await asyncio.sleep(0.25)
        events = (await self.api.get(f"/v1/qa-runs/{run_id}/events", headers=self.headers)).json()
        raise AssertionError(f"run {run_id} stayed {run['status']}: {[e['message'][:160] for e in events[-12:]]}")

    async def events(self, run_id: str) -> list[dict]:
        return (await self.api.get(f"/v1/qa-runs/{run_id}/events", headers=self.headers)).json()

    async def expect(self, run: dict, status: str) -> None:
        """Assert the run's status; otherwise say why, with its error, results and last events."""
        if run["status"] != status:
            events = [f"{e['type']}: {e['message'][:300]}" for e in (await self.events(run["id"]))[-15:]]
            raise AssertionError(f"run {run['id']} is {run['status']}, not {status}: error={run['error']}, "
                                 f"results={[(r['check'], r['verdict'], r['message']) for r in run['results']]}, "
                                 f"events={events}")


def marked_processes(run_id: str) -> list[str]:
    """Processes on this machine (a local instance's commands run here) that belong to the run."""
    needle = f"ONEBOX_QA_RUN={run_id}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    with open(f"/proc/{entry.name}/cmdline", "rb") as c:
                        found.append(c.read().replace(b"\0", b" ").decode(errors="replace").strip())
    return [p for p in found if p]  # zombies have an empty command line


def run_dirs(settings, instance_id: str, run_id: str) -> Path:
    return settings.data_dir / "local" / "instances" / instance_id / "disk" / "home" / "alice" / ".onebox-qa" / run_id


@pytest.fixture(scope="module")
async def qa_env(dbserver, tmp_path_factory, ssh_keypair):
    tmp = tmp_path_factory.mktemp("qa")
    settings = make_settings(dbserver, tmp / "data", configure="ansible", agent_interval_seconds=2,
                             public_url=f"http://127.0.0.1:{free_port()}", configure_timeout_seconds=300,
                             events_stream_max_seconds=30, events_stream_poll_seconds=0.25,
                             qa_baseline_min_runs=2)
    server = await asyncio.to_thread(LiveServer(settings).start)
    try:
        async with httpx.AsyncClient(base_url=settings.public_url, timeout=60) as api:
            yield await _two_instances(api, server, settings, ssh_keypair)
    finally:
        await asyncio.to_thread(server.stop)


async def _two_instances(api, server, settings, ssh_keypair) -> "QaEnv":
    headers = {"Authorization": f"Bearer {server.mint('alice')}"}
    admin = {"Authorization": f"Bearer {server.mint('root-admin', role='admin')}"}
    bodies = [instance_body(ssh_keypair.public, name="qa-a", bootstrap_script="#!/bin/sh\necho ready\n"),
              instance_body(ssh_keypair.public, name="qa-b")]
    created = [(await api.post("/v1/instances", json=b, headers=headers)).json() for b in bodies]
    ready = await asyncio.gather(*(wait_status(api, f"/v1/instances/{c['id']}", headers, {"running", "failed"}, 300)
                                   for c in created))
    assert [r["status"] for r in ready] == ["running", "running"], [(r["status"], r["error"]) for r in ready]
    deadline = time.monotonic() + 60  # the agents' first reports (the smoke suite checks them)
    while time.monotonic() < deadline:
        health = [(await api.get(f"/v1/instances/{r['id']}", headers=headers)).json()["health"]["state"]
                  for r in ready]
        if health == ["healthy", "healthy"]:
            break
        await asyncio.sleep(0.5)
    return QaEnv(api, server, settings, headers, admin, ready[0], ready[1])
