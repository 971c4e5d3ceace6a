"""The reaper: leaked resources of ended or unknown records go after their grace period, lost VMs
turn their records failed, and only one process reaps at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from app.clock import utcnow
from app.ids import id_created_at, new_id
from app.worker.reaper import Reaper
from providers.base import InstanceRef, InstanceSpec
from providers.local.mapping import LOCAL_MACHINE_TYPE, LOCAL_REGION
from tests.api.helpers import instance_body, wait_status
from tests.conftest import make_settings
from tests.e2e.cloud_support import running_onebox


def reaper_settings(dbserver, tmp_path, **overrides):
    # No background reaper: each test runs passes itself. A 1 s interval gives each pass its own slot.
    values = dict(reaper_enabled=False, reaper_grace_seconds=60, reaper_interval_seconds=1.0)
    values.update(overrides)
    return make_settings(dbserver, tmp_path / "data", **values)


async def reap(svc, owner="test"):
    """One pass in a fresh interval slot."""
    await asyncio.sleep(1.05 - time.time() % 1.0)
    report = await Reaper(svc, owner).run_once()
    assert report is not None
    return report


async def audit_of(svc, target_id):
    return [doc async for doc in svc.db.audit.find({"target_id": target_id, "actor": "reaper"})]


def test_ids_carry_their_creation_time():
    then = time.time() - 3600
    made = id_created_at(new_id("i", at=then))
    assert abs(made.timestamp() - then) < 0.002
    assert id_created_at("i-not-one-of-ours") is None


async def test_leaked_sshd_of_a_failed_instance_is_reaped(dbserver, tmp_path, ssh_keypair):
    async with running_onebox(reaper_settings(dbserver, tmp_path)) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        leaked = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="leaked"),
                                 headers=headers)).json()
        alive = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="alive"),
                                headers=headers)).json()
        for inst in (leaked, alive):
            await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"running"})
        local = svc.providers.get("local")
        # A cleanup that "lost" its sshd: the record says failed, the process still runs.
        await svc.db.instances.update_one({"_id": leaked["id"]}, {"$set": {"status": "failed"}})
        assert (await reap(svc)).removed == [], "within the grace period nothing is touched"
        old = utcnow() - dt.timedelta(minutes=5)
        await svc.db.instances.update_one({"_id": leaked["id"]}, {"$set": {"updated_at": old}})
        assert (await reap(svc)).removed == [("local", "instance", leaked["id"])]
        assert local._marked_pids(leaked["id"]) == []
        assert local._marked_pids(alive["id"]) != [], "a running instance is never reaped"
        events = (await api.get(f"/v1/instances/{leaked['id']}/events", headers=headers)).json()
        assert events[-1]["type"] == "reaper"
        [entry] = await audit_of(svc, leaked["id"])
        assert (entry["actor"], entry["role"], entry["action"]) == ("reaper", "system", "reap")
        assert entry["detail"]["reason"] == "its record is failed"
        assert (await reap(svc)).removed == []


async def test_resources_without_a_record_are_reaped_only_after_the_grace_period(dbserver, tmp_path, ssh_keypair):
    async with running_onebox(reaper_settings(dbserver, tmp_path)) as (api, svc):
        local = svc.providers.get("local")

        def unrecorded(instance_id):
            spec = InstanceSpec(instance_id=instance_id, owner="nobody", name="stray", region=LOCAL_REGION,
                                zone=None, machine_type=LOCAL_MACHINE_TYPE, ssh_user="alice",
                                ssh_public_key=ssh_keypair.public,
                                image="ubuntu-22.04", disk_gb=1)
            local.create_instance(spec)
            local.wait_running(spec.ref, 10)

        young = new_id("i", at=time.time() - 10)  # its create may still be recording
        old = new_id("i", at=time.time() - 600)  # e.g. its record was lost with a database restore
        unrecorded(young)
        unrecorded(old)
        report = await reap(svc)
        assert report.removed == [("local", "instance", old)]
        assert local._marked_pids(old) == [] and local._marked_pids(young) != []
        [entry] = await audit_of(svc, old)
        assert entry["detail"] == {"provider": "local", "resources": "instance", "reason": "it has no record"}
        assert await audit_of(svc, young) == []
        local.delete_instance(InstanceRef(young, "local"))


async def test_a_running_instance_whose_vm_vanished_becomes_failed(dbserver, tmp_path, ssh_keypair):
    async with running_onebox(reaper_settings(dbserver, tmp_path)) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        gone = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="gone"),
                               headers=headers)).json()
        kept = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="kept"),
                               headers=headers)).json()
        for inst in (gone, kept):
            await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"running"})
        svc.providers.get("local").delete_instance(InstanceRef(gone["id"], "local"))  # outside onebox
        report = await reap(svc)
        assert report.lost == [("local", gone["id"])] and report.removed == []
        failed = await wait_status(api, f"/v1/instances/{gone['id']}", headers, {"failed"})
        assert failed["error"]["code"] == "cloud_resource_missing"
        assert failed["public_ip"] is None
        assert (await api.get(f"/v1/instances/{kept['id']}", headers=headers)).json()["status"] == "running"
        types = [e["type"] for e in (await api.get(f"/v1/instances/{gone['id']}/events", headers=headers)).json()]
        assert "reaper" in types
        assert [e["action"] for e in await audit_of(svc, gone["id"])] == ["mark_lost"]
        # The user can still delete the record, and the quota slot was given back.
        assert (await api.delete(f"/v1/instances/{gone['id']}", headers=headers)).status_code == 202
        await wait_status(api, f"/v1/instances/{gone['id']}", headers, {"deleted"})
        assert (await reap(svc)).lost == []


async def test_a_users_delete_filed_first_wins_over_the_reaper(dbserver, tmp_path, ssh_keypair):
    settings = reaper_settings(dbserver, tmp_path)
    async with running_onebox(settings, worker=False) as (api, svc):
        from app.worker.runner import Worker

        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)).json()
        worker = Worker(svc)
        await worker.run_until_idle()
        svc.providers.get("local").delete_instance(InstanceRef(inst["id"], "local"))
        assert (await api.delete(f"/v1/instances/{inst['id']}", headers=headers)).status_code == 202
        assert (await reap(svc)).lost == [], "the delete on its way is left to finish"
        await worker.run_until_idle()
        assert (await api.get(f"/v1/instances/{inst['id']}", headers=headers)).json()["status"] == "deleted"


async def test_one_reaper_at_a_time_across_processes(dbserver, tmp_path):
    async with running_onebox(reaper_settings(dbserver, tmp_path, reaper_interval_seconds=30), worker=False) \
            as (api, svc):
        results = await asyncio.gather(*(Reaper(svc, f"process-{n}").run_once() for n in range(4)))
        assert sum(r is not None for r in results) == 1
        assert await Reaper(svc, "late").run_once() is None, "the interval's pass already ran"


async def test_a_pass_still_running_keeps_the_next_slot_waiting(dbserver, tmp_path):
    async with running_onebox(reaper_settings(dbserver, tmp_path, reaper_interval_seconds=1.0), worker=False) \
            as (api, svc):
        slot = int(time.time())
        # Another process's pass, started in the previous slot and not finished.
        await svc.db.claims.insert_one({"_id": f"reaper:{slot - 1}", "owner": "other", "at": utcnow(),
                                        "until": utcnow() + dt.timedelta(seconds=30)})
        await svc.db.claims.insert_one({"_id": f"reaper:{slot}", "owner": "other", "at": utcnow(),
                                        "until": utcnow() + dt.timedelta(seconds=30)})
        await asyncio.sleep(1.05 - time.time() % 1.0)
        assert await Reaper(svc, "me").run_once() is None
