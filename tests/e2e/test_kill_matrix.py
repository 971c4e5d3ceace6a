"""The kill matrix: for every provider and every step of create, snapshot, stop, start and delete, a worker
process dies by SIGKILL at that step (right after the step's work, before it is recorded: the
moment a crash hurts most). A second worker and the reaper then run. Afterwards every record is
in a final state, every cloud resource tagged with our ids belongs to a live record, and nothing
exists twice. The table of outcomes is printed at the end of the test run.

One more row per cloud, ``failover``: the first zone has no capacity, and the worker dies between
two attempts (the failed attempt recorded, its zone not yet cleaned up). The second worker cleans
up that zone and resumes at the next one, without trying the first again; nothing is left in it."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import pytest

from app.worker.reaper import Reaper
from app.worker.runner import Worker
from tests.api.helpers import wait_status
from tests.e2e.cloud_support import Cloud, onebox_for, running_onebox
from tests.reports import KILL_MATRIX
from tests.e2e.failover_stands import STANDS, FailoverStand, aws_failover, azure_failover, gcp_failover  # noqa: F401
from tests.e2e.test_cloud_flows import aws_cloud, azure_cloud, gcp_cloud, settings_for  # noqa: F401 (fixtures)
from tests.e2e.test_workers import start_worker, stop
from tests.fakes.fixtures import arm, fake, gce, gce_server  # noqa: F401 (fixtures)
from tests.providers.aws_fixtures import aws_env, moto_ec2  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

# (flow, step) in the order a resource lives through them.
STEPS = [("create", "create"), ("create", "wait_running"), ("create", "configure"),
         ("snapshot", "snapshot"), ("stop", "stop"), ("start", "start"),
         ("delete", "dispatch"), ("delete", "delete"), ("delete", "delete_snapshot")]
LIVE = {"instances": ("running", "stopped"), "snapshots": ("available",)}  # a stopped VM keeps its disks


@pytest.fixture
def local_cloud():
    # The provider is built from each test's settings (its data dir); the drill asks it directly.
    return Cloud("local", "local", "local", "ubuntu-22.04", make_provider=lambda: None, alive=lambda: [],
                 worker_env={})


class Drill:
    """One onebox (API in-process, no worker) on one cloud stand-in, and the kill drills on it."""

    def __init__(self, cloud: Cloud, settings, api, svc, tmp_path, ssh_key: str) -> None:
        self.cloud, self.settings, self.api, self.svc, self.tmp_path = cloud, settings, api, svc, tmp_path
        self.headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        self.ssh_key = ssh_key
        self.env = {**cloud.worker_env, "ONEBOX_PROVIDERS": cloud.name, "ONEBOX_CONFIGURE": "skip",
                    "ONEBOX_REAPER_ENABLED": "false"}
        self.provider = svc.providers.get(cloud.name)

    def body(self, name: str, **overrides) -> dict:
        return self.cloud.body(name=name, ssh_public_key=self.ssh_key, **overrides)

    async def kill_at(self, step: str) -> float:
        """Run a worker that dies at ``step``; returns how long it lived."""
        started = time.monotonic()
        victim = start_worker(self.settings, self.tmp_path / f"victim-{step}.log", ONEBOX_TEST_KILL_AT=step,
                              **self.env)
        try:
            while victim.poll() is None:
                assert time.monotonic() - started < 90, f"the worker never reached {step}"
                await asyncio.sleep(0.1)
        finally:
            stop(victim, signal.SIGKILL)
        log = (self.tmp_path / f"victim-{step}.log").read_text()
        assert victim.returncode == -signal.SIGKILL, (victim.returncode, log[-2000:])
        assert f"ONEBOX_TEST_KILL_AT={step}" in log
        return time.monotonic() - started

    async def survive(self, path: str, status: str) -> dict:
        """A second worker takes over until ``path`` reaches ``status``; then one reaper pass."""
        halt = asyncio.Event()
        task = asyncio.create_task(Worker(self.svc).run(halt))
        try:
            done = await wait_status(self.api, path, self.headers, {status, "failed"}, 90)
        except AssertionError as exc:
            instance_id = (await self.api.get(path, headers=self.headers)).json().get("instance_id") or path.split("/")[-1]
            events = (await self.api.get(f"/v1/instances/{instance_id}/events", headers=self.headers)).json()
            raise AssertionError([(e["type"], e["step"], e["message"][:120]) for e in events[-15:]]) from exc
        finally:
            halt.set()
            await task
        assert done["status"] == status, done
        await asyncio.sleep(1.02 - time.time() % 1.0)  # a fresh reaper slot (1 s interval)
        report = await Reaper(self.svc, "kill-matrix").run_once()
        assert report is not None and report.unreachable == []
        self.reaped = report.removed + [("lost",) + lost for lost in report.lost]
        return done

    async def account(self) -> tuple[int, int]:
        """(resources unaccounted for, duplicates) among everything tagged with our ids."""
        resources = await self.svc.providers.call(self.provider.list_managed)
        resources = [r for r in resources if r.state not in ("terminated", "deleting")]
        unaccounted = 0
        for r in resources:
            collection, target = ("snapshots", r.snapshot_id) if r.snapshot_id else ("instances", r.instance_id)
            record = await self.svc.db.db[collection].find_one({"_id": target})
            if record is None or record["status"] not in LIVE[collection]:
                unaccounted += 1
        copies = Counter((r.kind, r.instance_id, r.snapshot_id) for r in resources)
        return unaccounted, sum(n - 1 for n in copies.values())

    async def step_count(self, instance_id: str, step: str, type_: str) -> int:
        events = (await self.api.get(f"/v1/instances/{instance_id}/events", headers=self.headers)).json()
        return sum(1 for e in events if e["type"] == type_ and e["step"] == step)


async def run_matrix(drill: Drill) -> None:
    api, headers = drill.api, drill.headers
    running: dict[str, str] = {}  # step → an instance that got to running after a kill there
    snapshot_id = None
    for flow, step in STEPS:
        if flow == "create":
            inst = (await api.post("/v1/instances", json=drill.body(f"kill-{step.replace('_', '-')}"),
                                   headers=headers)).json()
            lived = await drill.kill_at(step)
            await drill.survive(f"/v1/instances/{inst['id']}", "running")
            assert await drill.step_count(inst["id"], step, "step.started") >= 2, "killed, then resumed"
            assert await drill.step_count(inst["id"], step, "step.succeeded") == 1
            running[step] = inst["id"]
        elif step == "snapshot":
            r = await api.post(f"/v1/instances/{running['create']}/snapshots", json={"name": "kill-snap"},
                               headers=headers)
            assert r.status_code == 202, r.text
            snapshot_id = r.json()["id"]
            lived = await drill.kill_at(step)
            await drill.survive(f"/v1/snapshots/{snapshot_id}", "available")
        elif flow in ("stop", "start"):
            # The instance the snapshot was made of: stopped, then started again; it is deleted at the end.
            target = running["create"]
            r = await api.post(f"/v1/instances/{target}/{step}", headers=headers)
            assert r.status_code == 202, r.text
            lived = await drill.kill_at(step)
            await drill.survive(f"/v1/instances/{target}", "stopped" if step == "stop" else "running")
            assert await drill.step_count(target, step, "step.started") >= 2, "killed, then resumed"
            assert await drill.step_count(target, step, "step.succeeded") == 1
        elif step == "delete_snapshot":
            assert (await api.delete(f"/v1/snapshots/{snapshot_id}", headers=headers)).status_code == 202
            lived = await drill.kill_at(step)
            await drill.survive(f"/v1/snapshots/{snapshot_id}", "deleted")
        else:  # dispatch, delete: each on an instance of its own
            target = running["wait_running" if step == "dispatch" else "configure"]
            assert (await api.delete(f"/v1/instances/{target}", headers=headers)).status_code == 202
            lived = await drill.kill_at(step)
            await drill.survive(f"/v1/instances/{target}", "deleted")
        unaccounted, duplicates = await drill.account()
        KILL_MATRIX.append({"provider": drill.cloud.name, "flow": flow, "step": step, "outcome": "recovered",
                            "unaccounted": unaccounted, "duplicates": duplicates, "reaped": len(drill.reaped),
                            "victim_s": round(lived, 1)})
        assert (unaccounted, duplicates) == (0, 0), (step, await drill.svc.providers.call(
            drill.provider.list_managed))
    # Everything ends: the instance and the snapshot's source, deleted normally.
    remaining = running["create"]
    assert (await api.delete(f"/v1/instances/{remaining}", headers=headers)).status_code == 202
    await drill.survive(f"/v1/instances/{remaining}", "deleted")
    for collection in ("instances", "snapshots"):
        statuses = {doc["status"] async for doc in drill.svc.db.db[collection].find({}, {"status": 1})}
        assert statuses <= {"deleted"}, (collection, statuses)
    assert await drill.account() == (0, 0)
    left = await drill.svc.providers.call(drill.provider.list_managed)
    assert [r for r in left if r.state != "terminated"] == []
    if drill.cloud.name != "local":
        assert drill.cloud.alive() == [], "the stand-in itself holds nothing of ours"


def matrix_settings(cloud: Cloud, dbserver, tmp_path):
    return settings_for(cloud, dbserver, tmp_path, lease_seconds=1.5, reaper_grace_seconds=0.0,
                        reaper_interval_seconds=1.0)


async def test_kill_matrix_local(local_cloud, dbserver, tmp_path, ssh_keypair):
    settings = matrix_settings(local_cloud, dbserver, tmp_path)
    async with running_onebox(settings, worker=False) as (api, svc):
        await run_matrix(Drill(local_cloud, settings, api, svc, tmp_path, ssh_keypair.public))


@pytest.mark.parametrize("cloud_fixture", ["aws_cloud", "gcp_cloud", "azure_cloud"])
async def test_kill_matrix_clouds(cloud_fixture, request, dbserver, tmp_path, ssh_keypair):
    cloud: Cloud = request.getfixturevalue(cloud_fixture)
    settings = matrix_settings(cloud, dbserver, tmp_path)
    async with onebox_for(cloud, settings, worker=False) as (api, svc):
        await run_matrix(Drill(cloud, settings, api, svc, tmp_path, ssh_keypair.public))


@pytest.mark.parametrize("stand_fixture", STANDS)
async def test_kill_between_two_failover_attempts(stand_fixture, request, dbserver, tmp_path, ssh_keypair):
    stand: FailoverStand = request.getfixturevalue(stand_fixture)
    cloud = Cloud(stand.name, stand.region, stand.machine_type, "ubuntu-24.04", stand.make_provider, stand.alive,
                  stand.worker_env)
    settings = matrix_settings(cloud, dbserver, tmp_path)
    async with onebox_for(cloud, settings, worker=False) as (api, svc):
        drill = Drill(cloud, settings, api, svc, tmp_path, ssh_keypair.public)
        short = stand.capacity(stand.region, stand.zone_a)
        inst = (await api.post("/v1/instances", json=drill.body("kill-failover", zones=[stand.zone_a, stand.zone_b]),
                               headers=drill.headers)).json()
        lived = await drill.kill_at("failover")
        hits = stand.hits(short)  # the victim's attempt (an SDK may have retried it: AWS answers 500)
        doc = await svc.db.instances.find_one({"_id": inst["id"]})
        placement = doc["job"]["placement"]
        assert placement["next"] == 1 and placement["leftover"]["zone"] == stand.zone_a, placement
        done = await drill.survive(f"/v1/instances/{inst['id']}", "running")
        assert (done["region"], done["zone"]) == (stand.region, stand.zone_b)
        assert stand.parts_in(inst["id"], stand.region, stand.zone_a) == [], "nothing is left in the zone it left"
        assert hits >= 1 and stand.hits(short) == hits, "the first zone was not tried again"
        unaccounted, duplicates = await drill.account()
        KILL_MATRIX.append({"provider": stand.name, "flow": "create", "step": "failover", "outcome": "recovered",
                            "unaccounted": unaccounted, "duplicates": duplicates, "reaped": len(drill.reaped),
                            "victim_s": round(lived, 1)})
        assert (unaccounted, duplicates, drill.reaped) == (0, 0, []), "the survivor left nothing for the reaper"
        stand.clear(short)
        assert (await api.delete(f"/v1/instances/{inst['id']}", headers=drill.headers)).status_code == 202
        await drill.survive(f"/v1/instances/{inst['id']}", "deleted")
    assert stand.alive() == []
