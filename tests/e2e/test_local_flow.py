"""End to end on the local provider: the API, a worker, real sshd, real ssh logins."""

from __future__ import annotations

import pytest

from providers.local import LocalConfig, LocalProvider
from tests.api.helpers import instance_body, wait_status
from tests.e2e.cloud_support import running_onebox



def local_of(services) -> LocalProvider:
    return LocalProvider(LocalConfig(root=services.settings.data_dir / "local"))


async def create(api, headers, key, **overrides) -> dict:
    response = await api.post("/v1/instances", json=instance_body(key, **overrides), headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


async def test_create_ssh_snapshot_restore_delete(api, worker, mint, ssh_keypair, services):
    alice = mint("alice")
    first = await create(api, alice, ssh_keypair.public, name="first")
    first = await wait_status(api, f"/v1/instances/{first['id']}", alice, {"running", "failed"})
    assert first["status"] == "running", first
    assert first["public_ip"].startswith("127.0.0.") and first["ssh_port"] == 2222
    assert ssh_keypair.run(first["public_ip"], 2222, "echo hello").stdout.strip() == "hello"

    ssh_keypair.run(first["public_ip"], 2222, "echo precious > ~/data.txt")
    snap = await api.post(f"/v1/instances/{first['id']}/snapshots", json={"name": "with-data"}, headers=alice)
    assert snap.status_code == 202, snap.text
    snap = await wait_status(api, f"/v1/snapshots/{snap.json()['id']}", alice, {"available", "failed"})
    assert snap["status"] == "available", snap

    restored = await create(api, alice, ssh_keypair.public, name="restored", snapshot_id=snap["id"])
    fresh = await create(api, alice, ssh_keypair.public, name="fresh")
    restored = await wait_status(api, f"/v1/instances/{restored['id']}", alice, {"running", "failed"})
    fresh = await wait_status(api, f"/v1/instances/{fresh['id']}", alice, {"running", "failed"})
    assert restored["status"] == fresh["status"] == "running"
    assert len({first["public_ip"], restored["public_ip"], fresh["public_ip"]}) == 3
    assert ssh_keypair.run(restored["public_ip"], 2222, "cat ~/data.txt").stdout.strip() == "precious"
    assert ssh_keypair.run(fresh["public_ip"], 2222, "cat ~/data.txt", check=False).returncode != 0

    events = (await api.get(f"/v1/instances/{first['id']}/events", headers=alice)).json()
    steps = [(e["type"], e["step"]) for e in events]
    for step in ("create", "wait_running", "configure"):
        assert ("step.started", step) in steps and ("step.succeeded", step) in steps
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)

    local = local_of(services)
    for inst in (first, restored, fresh):
        assert (await api.delete(f"/v1/instances/{inst['id']}", headers=alice)).status_code == 202
    for inst in (first, restored, fresh):
        done = await wait_status(api, f"/v1/instances/{inst['id']}", alice, {"deleted"})
        assert done["status"] == "deleted"
        assert local._marked_pids(inst["id"]) == [], "no process of a deleted instance is left"
        assert not (local.instances_dir / inst["id"]).exists()
    record = await services.db.instances.find_one({"_id": first["id"]})
    history = [(t["from"], t["to"]) for t in record["transitions"]]
    assert history == [(None, "pending"), ("pending", "provisioning"), ("provisioning", "configuring"),
                       ("configuring", "running"), ("running", "deleting"), ("deleting", "deleted")]
    assert [t["at"] for t in record["transitions"]] == sorted(t["at"] for t in record["transitions"])
    gone = await api.delete(f"/v1/instances/{first['id']}", headers=alice)
    assert gone.status_code == 409 and gone.json()["current_status"] == "deleted"

    assert (await api.delete(f"/v1/snapshots/{snap['id']}", headers=alice)).status_code == 202
    assert (await wait_status(api, f"/v1/snapshots/{snap['id']}", alice, {"deleted"}))["status"] == "deleted"
    assert local.list_managed() == []


async def test_delete_while_provisioning_cancels_and_cleans_up(dbserver, tmp_path, ssh_keypair):
    from tests.conftest import make_settings

    async with running_onebox(make_settings(dbserver, tmp_path / "data", local_create_delay_seconds=1.5)) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = await create(api, headers, ssh_keypair.public)
        await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"provisioning"})
        assert (await api.delete(f"/v1/instances/{inst['id']}", headers=headers)).status_code == 202
        done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"})
        assert done["error"]["code"] == "cancelled"
        assert local_of(svc).list_managed() == []
        record = await svc.db.instances.find_one({"_id": inst["id"]})
        assert [t["to"] for t in record["transitions"]] == ["pending", "provisioning", "failed", "deleting", "deleted"]


@pytest.mark.parametrize("step", ["create", "wait_running", "configure"])
async def test_failure_at_each_step_cleans_up(dbserver, tmp_path, ssh_keypair, step):
    from tests.conftest import make_settings

    async with running_onebox(make_settings(dbserver, tmp_path / "data", inject_faults=[step])) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = await create(api, headers, ssh_keypair.public)
        done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"failed", "running"})
        assert done["status"] == "failed"
        assert done["error"]["step"] == step and done["error"]["code"] == "injected_fault"
        local = local_of(svc)
        assert local._marked_pids(inst["id"]) == [] and local.list_managed() == []
        types = [e["type"] for e in (await api.get(f"/v1/instances/{inst['id']}/events", headers=headers)).json()]
        assert "cleanup.succeeded" in types
        # A failed instance can still be deleted, and ends deleted.
        assert (await api.delete(f"/v1/instances/{inst['id']}", headers=headers)).status_code == 202
        assert (await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"}))["status"] == "deleted"


async def test_snapshot_failure_is_recorded(dbserver, tmp_path, ssh_keypair):
    from tests.conftest import make_settings

    async with running_onebox(make_settings(dbserver, tmp_path / "data", inject_faults=["snapshot"])) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = await create(api, headers, ssh_keypair.public)
        await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"running"})
        snap = (await api.post(f"/v1/instances/{inst['id']}/snapshots", json={"name": "s"}, headers=headers)).json()
        snap = await wait_status(api, f"/v1/snapshots/{snap['id']}", headers, {"failed", "available"})
        assert snap["status"] == "failed" and snap["error"]["step"] == "snapshot"
        assert not [r for r in local_of(svc).list_managed() if r.kind == "snapshot"]
        await api.delete(f"/v1/instances/{inst['id']}", headers=headers)
        await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"})
