"""Two onebox deployments sharing one cloud account never touch each other's resources.

Staging and production run against the same moto server, GCE fake or ARM fake, each with its own
database and ``ONEBOX_DEPLOYMENT_ID``, their providers built from settings as in production. Each
creates instances; an instance made by an older onebox (no deployment tag) stands beside them.
Then each one's reaper runs with a grace period of 0: staging removes its own orphan (a record
lost) and the older instance its records name (failed), and nothing else; production removes
nothing. What exists is asked of the stand-in itself."""

from __future__ import annotations

import datetime as dt

import pytest

from app.clock import utcnow
from app.ids import new_instance_id
from app.worker.reaper import Reaper
from providers.base import DEPLOYMENT_TAG, InstanceRef, InstanceSpec
from tests.api.helpers import wait_status
from tests.conftest import make_settings
from tests.e2e.cloud_support import SSH_KEY, Cloud, running_onebox
from tests.e2e.test_cloud_flows import CLOUDS, aws_cloud, azure_cloud, gcp_cloud  # noqa: F401 (fixtures)
from tests.fakes.fixtures import arm, fake, gce, gce_server  # noqa: F401 (fixtures)
from tests.providers.aws_fixtures import aws_env, moto_ec2  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def deployment_settings(cloud: Cloud, dbserver, tmp_path, name: str):
    cloud_settings = {k.removeprefix("ONEBOX_").lower(): v for k, v in cloud.worker_env.items()
                      if k.startswith("ONEBOX_")}
    return make_settings(dbserver, tmp_path / name, providers=[cloud.name], deployment_id=name,
                         reaper_grace_seconds=0.0, reaper_interval_seconds=1.0, **cloud_settings)


async def launch(api, svc, cloud: Cloud, name: str) -> str:
    headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
    r = await api.post("/v1/instances", json=cloud.body(name=name), headers=headers)
    assert r.status_code == 202, r.text
    done = await wait_status(api, f"/v1/instances/{r.json()['id']}", headers, {"running", "failed"}, 120)
    assert done["status"] == "running", done
    return done["id"]


async def reap(svc) -> list[str]:
    import asyncio
    import time

    await asyncio.sleep(1.02 - time.time() % 1.0)  # a fresh reaper slot
    report = await Reaper(svc, "test").run_once()
    assert report is not None and report.unreachable == []
    return sorted(target for _, kind, target in report.removed if kind == "instance")


@pytest.mark.parametrize("cloud_fixture", CLOUDS)
async def test_each_reaper_removes_only_its_own_deployments_leftovers(cloud_fixture, request, dbserver, tmp_path):
    cloud: Cloud = request.getfixturevalue(cloud_fixture)
    older = cloud.make_provider()  # an older onebox: it tags no deployment
    staging_settings = deployment_settings(cloud, dbserver, tmp_path, "staging")
    production_settings = deployment_settings(cloud, dbserver, tmp_path, "production")
    async with running_onebox(staging_settings) as (staging, st), \
            running_onebox(production_settings) as (production, pr):
        kept, lost = await launch(staging, st, cloud, "kept"), await launch(staging, st, cloud, "lost")
        theirs = await launch(production, pr, cloud, "theirs")
        old_ids = {"named": new_instance_id(), "unknown": new_instance_id()}
        for key, instance_id in old_ids.items():
            spec = InstanceSpec(instance_id=instance_id, owner="alice", name=f"older-{key}", region=cloud.region,
                                zone=cloud.zone, machine_type=cloud.machine_type, ssh_user="alice",
                                ssh_public_key=SSH_KEY, disk_gb=30, image=cloud.image)
            older.create_instance(spec)
            older.wait_running(spec.ref, 60)
        # staging lost the record of one of its instances, and keeps a failed record of the older onebox's
        await st.db.instances.delete_one({"_id": lost})
        await st.db.instances.insert_one({
            "_id": old_ids["named"], "owner": "alice", "name": "older-named", "provider": cloud.name,
            "region": cloud.region, "zone": cloud.zone, "status": "failed", "job": None,
            "updated_at": utcnow() - dt.timedelta(days=30), "created_at": utcnow() - dt.timedelta(days=30)})

        listed = {r.instance_id: r.deployment for r in await st.providers.call(st.providers.get(cloud.name).list_managed)
                  if r.kind == "instance"}
        assert listed.get(kept) == listed.get(lost) == "staging" and theirs not in listed
        assert listed.get(old_ids["named"], "missing") is None and listed.get(old_ids["unknown"], "missing") is None

        assert await reap(st) == sorted([lost, old_ids["named"]])
        assert await reap(pr) == [], "production's reaper touches nothing of staging's or of the older onebox's"
        assert await reap(st) == []

        alive = {r.instance_id for r in older.list_managed() if r.kind == "instance"
                 and r.state not in ("terminated", "deleted")}
        assert {kept, theirs, old_ids["unknown"]} <= alive
        assert not alive & {lost, old_ids["named"]}
        tags = {r.instance_id: r.deployment for r in older.list_managed() if r.kind == "instance"}
        assert (tags[kept], tags[theirs]) == ("staging", "production"), f"every resource carries {DEPLOYMENT_TAG}"

        for api, svc, instance_id in ((staging, st, kept), (production, pr, theirs)):
            headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            assert (await api.delete(f"/v1/instances/{instance_id}", headers=headers)).status_code == 202
            await wait_status(api, f"/v1/instances/{instance_id}", headers, {"deleted"}, 120)
        older.delete_instance(InstanceRef(old_ids["unknown"], cloud.region, cloud.zone))
    assert cloud.alive() == []
