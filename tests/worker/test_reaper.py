"""The reaper removes cloud resources left behind by ended instances, and only those."""

from __future__ import annotations

import datetime as dt

from app.clock import utcnow
from app.worker.reaper import reap
from tests.api.helpers import instance_body, wait_status
from tests.conftest import make_settings
from tests.e2e.cloud_support import running_onebox


async def test_leaked_sshd_of_a_failed_instance_is_reaped(ferretdb, tmp_path, ssh_keypair):
    settings = make_settings(ferretdb, tmp_path / "data", reaper_grace_seconds=60)
    async with running_onebox(settings) as (api, svc):
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
        assert await reap(svc) == 0, "within the grace period nothing is touched"
        old = utcnow() - dt.timedelta(minutes=5)
        await svc.db.instances.update_one({"_id": leaked["id"]}, {"$set": {"updated_at": old}})
        assert await reap(svc) == 1
        assert local._marked_pids(leaked["id"]) == []
        assert local._marked_pids(alive["id"]) != [], "a running instance is never reaped"
        events = (await api.get(f"/v1/instances/{leaked['id']}/events", headers=headers)).json()
        assert events[-1]["type"] == "reaper"
        assert await reap(svc) == 0
