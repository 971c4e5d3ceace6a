"""Workers as separate processes: killed mid-job, and several at once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from providers.local import LocalConfig, LocalProvider
from tests.api.helpers import instance_body, wait_status
from tests.conftest import make_settings
from tests.e2e.cloud_support import running_onebox



def worker_env(settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBOX_")}
    env.update({
        "ONEBOX_MONGODB_URL": settings.mongodb_url,
        "ONEBOX_DATABASE": settings.database,
        "ONEBOX_DATA_DIR": str(settings.data_dir),
        "ONEBOX_JWT_SECRET": settings.jwt_secret.get_secret_value(),
        "ONEBOX_LEASE_SECONDS": str(settings.lease_seconds),
        "ONEBOX_POLL_SECONDS": "0.1",
        "ONEBOX_BACKOFF_BASE_SECONDS": "0.1",
        "ONEBOX_LOG_LEVEL": "WARNING",
        "ONEBOX_CONFIGURE": settings.configure,
        "ONEBOX_REAPER_ENABLED": str(settings.reaper_enabled).lower(),
        "ONEBOX_QUOTA_MAX_INSTANCES": str(settings.quota_max_instances),
        "ONEBOX_QUOTA_MAX_VCPUS": str(settings.quota_max_vcpus),
        "ONEBOX_RATE_LIMIT_PER_MINUTE": str(settings.rate_limit_per_minute),
    })
    return env


def start_worker(settings, log_path, **extra_env) -> subprocess.Popen:
    env = worker_env(settings)
    env.update({k: str(v) for k, v in extra_env.items()})
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env, stdout=log, stderr=log,
                                start_new_session=True)


async def start_api(settings, log_path, **extra_env) -> tuple[subprocess.Popen, int]:
    """``onebox serve --no-worker`` on a free port, once it answers: (process, port)."""
    import httpx

    from tests.support import free_port

    for _ in range(5):  # a port found free can be taken before uvicorn binds it (outgoing connections)
        port = free_port()
        env = worker_env(settings)
        env["ONEBOX_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
        env.update({k: str(v) for k, v in extra_env.items()})
        with open(log_path, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--no-worker", "--port", str(port)],
                                       env=env, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while process.poll() is None:
                try:
                    if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        return process, port
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the API never came up"
                await asyncio.sleep(0.1)
        if "address already in use" not in open(log_path).read():
            break
    raise AssertionError(open(log_path).read()[-2000:])


def stop(process: subprocess.Popen, sig=signal.SIGTERM) -> None:
    if process.poll() is None:
        os.killpg(process.pid, sig)
        process.wait(20)


async def wait_until(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sshd_count(local: LocalProvider, instance_id: str) -> int:
    return len(local._marked_pids(instance_id))


async def test_sigkilled_worker_is_replaced_and_one_sshd_exists(dbserver, tmp_path, ssh_keypair):
    # No in-process worker: lease 2 s, and a slow "cloud" so the kill lands mid-provisioning.
    settings = make_settings(dbserver, tmp_path / "data", lease_seconds=2.0)
    local = LocalProvider(LocalConfig(root=settings.data_dir / "local"))
    async with running_onebox(settings, worker=False) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)).json()
        first = start_worker(settings, tmp_path / "worker-a.log", ONEBOX_LOCAL_CREATE_DELAY_SECONDS=30)
        try:
            async def sshd_started():
                return sshd_count(local, inst["id"]) == 1
            await wait_until(sshd_started, what="the first worker to start sshd")
            doc = await svc.db.instances.find_one({"_id": inst["id"]})
            assert doc["status"] == "provisioning" and doc["job"]["steps_done"] == []
        finally:
            stop(first, signal.SIGKILL)
        second = start_worker(settings, tmp_path / "worker-b.log")
        try:
            done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"running", "failed"}, timeout=60)
            assert done["status"] == "running", done
            assert sshd_count(local, inst["id"]) == 1, "the second worker resumed the first one's sshd"
            doc = await svc.db.instances.find_one({"_id": inst["id"]})
            assert doc["job"] is None
            events = (await api.get(f"/v1/instances/{inst['id']}/events", headers=headers)).json()
            starts = [e for e in events if e["type"] == "step.started" and e["step"] == "create"]
            assert len(starts) == 2, "create ran twice: once killed, once resumed"
            assert ssh_keypair.run(done["public_ip"], 2222, "echo ok").stdout.strip() == "ok"
            await api.delete(f"/v1/instances/{inst['id']}", headers=headers)
            await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"})
            assert sshd_count(local, inst["id"]) == 0
        finally:
            stop(second)


async def test_two_workers_twenty_instances_each_provisioned_once(dbserver, tmp_path, ssh_keypair):
    settings = make_settings(dbserver, tmp_path / "data", lease_seconds=5.0)
    local = LocalProvider(LocalConfig(root=settings.data_dir / "local"))
    async with running_onebox(settings, worker=False) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        workers = [start_worker(settings, tmp_path / f"worker-{n}.log") for n in range(2)]
        try:
            ids = []
            for n in range(20):
                r = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"box-{n}"),
                                   headers=headers)
                ids.append(r.json()["id"])
            addresses = set()
            for instance_id in ids:
                done = await wait_status(api, f"/v1/instances/{instance_id}", headers, {"running", "failed"}, 120)
                assert done["status"] == "running", done
                addresses.add(done["public_ip"])
            assert len(addresses) == 20
            owners = set()
            for instance_id in ids:
                events = (await api.get(f"/v1/instances/{instance_id}/events", headers=headers)).json()
                for step in ("create", "wait_running", "configure"):
                    runs = [e for e in events if e["type"] == "step.started" and e["step"] == step]
                    assert len(runs) == 1, (instance_id, step, runs)
                assert sshd_count(local, instance_id) == 1
                doc = await svc.db.instances.find_one({"_id": instance_id})
                owners.add(doc["job"] is None)
            assert owners == {True}
            for instance_id in ids:
                await api.delete(f"/v1/instances/{instance_id}", headers=headers)
            for instance_id in ids:
                await wait_status(api, f"/v1/instances/{instance_id}", headers, {"deleted"}, 120)
            assert local.list_managed() == []
        finally:
            for w in workers:
                stop(w)
        logs = "".join((tmp_path / f"worker-{n}.log").read_text() for n in range(2))
        assert "Traceback" not in logs, logs[-3000:]


async def test_sigterm_mid_step_hands_the_job_back_at_once(dbserver, tmp_path, ssh_keypair):
    # A 60 s lease: the second worker can only start this soon if the first one released it.
    settings = make_settings(dbserver, tmp_path / "data", lease_seconds=60.0)
    local = LocalProvider(LocalConfig(root=settings.data_dir / "local"))
    async with running_onebox(settings, worker=False) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)).json()
        first = start_worker(settings, tmp_path / "a.log", ONEBOX_LOCAL_CREATE_DELAY_SECONDS=120,
                             ONEBOX_SHUTDOWN_GRACE_SECONDS=0.5)
        try:
            async def creating():
                return sshd_count(local, inst["id"]) == 1
            await wait_until(creating, what="the first worker to be inside create")
            started = time.monotonic()
            stop(first, signal.SIGTERM)
            assert first.returncode == 0
            assert time.monotonic() - started < 10, "a stuck SDK call must not hold the shutdown"
        finally:
            stop(first, signal.SIGKILL)
        doc = await svc.db.instances.find_one({"_id": inst["id"]})
        assert doc["job"]["lease_owner"] is None and doc["job"]["steps_done"] == []
        second = start_worker(settings, tmp_path / "b.log")
        try:
            done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"running", "failed"}, timeout=40)
            assert done["status"] == "running", done
            assert sshd_count(local, inst["id"]) == 1
        finally:
            stop(second)
        assert "handed the job back" in (tmp_path / "a.log").read_text()


async def test_sigterm_lets_the_current_step_finish_then_hands_over(dbserver, tmp_path, ssh_keypair):
    settings = make_settings(dbserver, tmp_path / "data", lease_seconds=60.0)
    local = LocalProvider(LocalConfig(root=settings.data_dir / "local"))
    async with running_onebox(settings, worker=False) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)).json()
        first = start_worker(settings, tmp_path / "a.log", ONEBOX_LOCAL_CREATE_DELAY_SECONDS=2,
                             ONEBOX_SHUTDOWN_GRACE_SECONDS=20)
        try:
            async def creating():
                return sshd_count(local, inst["id"]) == 1
            await wait_until(creating, what="the first worker to be inside create")
            stop(first, signal.SIGTERM)
            assert first.returncode == 0
        finally:
            stop(first, signal.SIGKILL)
        doc = await svc.db.instances.find_one({"_id": inst["id"]})
        assert doc["job"]["steps_done"] == ["create"], "the step in flight was finished and recorded"
        assert doc["job"]["lease_owner"] is None
        second = start_worker(settings, tmp_path / "b.log")
        try:
            done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"running", "failed"}, timeout=40)
            assert done["status"] == "running", done
        finally:
            stop(second)
        events = (await api.get(f"/v1/instances/{inst['id']}/events", headers=headers)).json()
        assert [e["step"] for e in events if e["type"] == "step.started"] == ["create", "wait_running", "configure"]
        assert [e["step"] for e in events if e["type"] == "step.handed_over"] == ["wait_running"]
