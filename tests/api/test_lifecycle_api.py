"""The day-2 API without a worker: lifecycle fields on create and PATCH, policies a user may only tighten,
stop/start/reboot answering 202 or 409, and admins' policy routes."""

from __future__ import annotations

import datetime as dt

import pytest

from app.clock import utcnow
from tests.api.helpers import instance_body

MERGE = {"Content-Type": "application/merge-patch+json"}


async def create(api, headers, key, **overrides):
    response = await api.post("/v1/instances", json=instance_body(key, **overrides), headers=headers)
    return response


async def put_policy(api, mint, user, **policy):
    response = await api.put(f"/v1/admin/policies/{user}", json=policy, headers=mint("root", admin=True))
    assert response.status_code == 200, response.text
    return response.json()


async def set_status(services, instance_id, status):
    """Stand-in for a worker (none runs here): the record at rest in ``status``."""
    await services.db.instances.update_one({"_id": instance_id}, {"$set": {"status": status, "job": None}})


class TestLifecycleFields:
    async def test_create_keeps_them_apart_from_the_record_and_shows_the_schedule(self, api, mint, ssh_keypair,
                                                                                   services):
        alice = mint("alice")
        response = await create(api, alice, ssh_keypair.public, ttl_seconds=3600, idle_minutes=30, on_idle="stop",
                                delete_after_stopped_days=3)
        assert response.status_code == 202, response.text
        body = response.json()
        assert (body["ttl_seconds"], body["idle_minutes"], body["on_idle"], body["delete_after_stopped_days"]) == \
               (3600, 30, "stop", 3)
        created = dt.datetime.fromisoformat(body["created_at"])
        expires = dt.datetime.fromisoformat(body["schedule"]["expires_at"])
        assert abs((expires - created).total_seconds() - 3600) < 2
        assert body["schedule"]["on_expiry"] == "stop" and body["schedule"]["from_policy"] == []
        record = await services.db.instances.find_one({"_id": body["id"]})
        assert "ttl_seconds" not in record, "a record a job may hold is never written by a PATCH: kept apart"
        got = (await api.get(f"/v1/instances/{body['id']}", headers=alice)).json()
        assert got["schedule"] == body["schedule"] and got["ttl_seconds"] == 3600

    @pytest.mark.parametrize("overrides,field", [
        ({"ttl_seconds": 3600, "expires_at": "2099-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"ttl_seconds": 10}, "ttl_seconds"),
        ({"idle_minutes": 0}, "idle_minutes"),
        ({"on_idle": "hibernate"}, "on_idle"),
        ({"on_expiry": "explode"}, "on_expiry"),
        ({"delete_after_stopped_days": 0}, "delete_after_stopped_days"),
    ])
    async def test_bad_values_name_the_field_and_create_nothing(self, api, mint, ssh_keypair, services, overrides,
                                                                 field):
        response = await create(api, mint("alice"), ssh_keypair.public, **overrides)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in response.json()["errors"]]
        assert await services.db.instances.count_documents({}) == 0
        assert await services.db.lifecycle_settings.count_documents({}) == 0

    async def test_patch_is_a_merge_patch(self, api, mint, ssh_keypair, services):
        alice = mint("alice")
        inst = (await create(api, alice, ssh_keypair.public, ttl_seconds=3600, idle_minutes=30)).json()
        path = f"/v1/instances/{inst['id']}"
        patched = await api.patch(path, content='{"idle_minutes": 45, "on_idle": "delete"}',
                                  headers={**alice, **MERGE})
        assert patched.status_code == 200, patched.text
        body = patched.json()
        assert (body["ttl_seconds"], body["idle_minutes"], body["on_idle"]) == (3600, 45, "delete")
        # plain JSON too; null clears, and ttl_seconds/expires_at replace each other
        later = (utcnow() + dt.timedelta(hours=5)).isoformat()
        body = (await api.patch(path, json={"expires_at": later, "idle_minutes": None}, headers=alice)).json()
        assert body["ttl_seconds"] is None and body["idle_minutes"] is None and body["on_idle"] == "delete"
        assert dt.datetime.fromisoformat(body["schedule"]["expires_at"]) == dt.datetime.fromisoformat(later)
        body = (await api.patch(path, json={"ttl_seconds": 600}, headers=alice)).json()
        assert body["ttl_seconds"] == 600 and abs(
            (dt.datetime.fromisoformat(body["expires_at"]) - utcnow()).total_seconds() - 600) < 5
        body = (await api.patch(path, json={"ttl_seconds": None}, headers=alice)).json()
        assert body["ttl_seconds"] is None and body["expires_at"] is None and body["schedule"]["expires_at"] is None
        events = (await api.get(f"{path}/events", headers=alice)).json()
        assert [e["message"] for e in events if e["type"] == "lifecycle.updated"][-1] == \
               "lifecycle settings changed: ttl_seconds=null"

    @pytest.mark.parametrize("content_type,body,status,field", [
        ("text/plain", '{"ttl_seconds": 600}', 415, None),
        ("application/merge-patch+json", '{"ttl_seconds": "soon"}', 422, "ttl_seconds"),
        ("application/merge-patch+json", '{"owner": "bob"}', 422, "owner"),
        ("application/merge-patch+json", '{"ttl_seconds": 600, "expires_at": "2099-01-01T00:00:00Z"}', 422,
         "expires_at"),
        ("application/merge-patch+json", "not json", 422, None),
        ("application/json", '[1, 2]', 422, None),
    ])
    async def test_bad_patches_are_problems(self, api, mint, ssh_keypair, content_type, body, status, field):
        alice = mint("alice")
        inst = (await create(api, alice, ssh_keypair.public)).json()
        response = await api.patch(f"/v1/instances/{inst['id']}", content=body,
                                   headers={**alice, "Content-Type": content_type})
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        if field:
            assert field in [e["field"] for e in response.json()["errors"]]

    async def test_patch_of_someone_else_s_or_a_deleted_instance(self, api, mint, ssh_keypair, services):
        inst = (await create(api, mint("alice"), ssh_keypair.public)).json()
        path = f"/v1/instances/{inst['id']}"
        assert (await api.patch(path, json={"ttl_seconds": 600}, headers=mint("bob"))).status_code == 404
        assert (await api.patch(path, json={"ttl_seconds": 600}, headers=mint("root", admin=True))).status_code == 200
        await set_status(services, inst["id"], "deleted")
        gone = await api.patch(path, json={"ttl_seconds": 600}, headers=mint("alice"))
        assert gone.status_code == 409 and gone.json()["current_status"] == "deleted"


class TestPolicies:
    async def test_a_user_may_tighten_but_never_loosen(self, api, mint, ssh_keypair, services):
        await put_policy(api, mint, "_default", max_ttl_seconds=3600, max_idle_minutes=60, allowed_on_idle=["stop"],
                         max_stopped_days=7)
        alice = mint("alice")
        refused = await create(api, alice, ssh_keypair.public, ttl_seconds=7200, idle_minutes=90, on_idle="delete")
        assert refused.status_code == 422
        problem = refused.json()
        assert problem["code"] == "looser_than_policy"
        assert {e["field"] for e in problem["errors"]} == {"ttl_seconds", "idle_minutes", "on_idle"}
        assert problem["ceilings"] == {"ttl_seconds": 3600, "idle_minutes": 60, "on_idle": ["stop"]}
        assert "at most 3600" in problem["detail"]
        assert await services.db.instances.count_documents({}) == 0

        inst = (await create(api, alice, ssh_keypair.public, ttl_seconds=1800)).json()
        assert inst["schedule"]["idle_minutes"] == 60 and inst["schedule"]["delete_after_stopped_days"] == 7
        assert set(inst["schedule"]["from_policy"]) == {"idle_minutes", "on_idle", "delete_after_stopped_days"}
        path = f"/v1/instances/{inst['id']}"
        looser = await api.patch(path, json={"delete_after_stopped_days": 30}, headers=alice)
        assert looser.status_code == 422 and looser.json()["ceilings"] == {"delete_after_stopped_days": 7}
        late = (utcnow() + dt.timedelta(hours=2)).isoformat()
        looser = await api.patch(path, json={"expires_at": late}, headers=alice)
        assert looser.status_code == 422 and looser.json()["errors"][0]["field"] == "expires_at"
        # clearing is not loosening: the policy's ceiling then applies
        cleared = (await api.patch(path, json={"ttl_seconds": None}, headers=alice)).json()
        assert cleared["schedule"]["expires_at"] is not None and "expires_at" in cleared["schedule"]["from_policy"]
        # a user's own policy wins over _default, both ways
        await put_policy(api, mint, "alice", max_ttl_seconds=7200)
        assert (await create(api, alice, ssh_keypair.public, ttl_seconds=7200)).status_code == 202
        assert (await create(api, mint("bob"), ssh_keypair.public, ttl_seconds=7200)).status_code == 422

    async def test_admin_policy_routes(self, api, mint, services):
        admin = mint("root", admin=True)
        empty = (await api.get("/v1/admin/policies/carol", headers=admin)).json()
        assert empty["policy"]["max_ttl_seconds"] is None and empty["effective"]["max_ttl_seconds"] is None
        await put_policy(api, mint, "_default", max_ttl_seconds=3600, default_ttl_seconds=1800)
        view = await put_policy(api, mint, "carol", max_ttl_seconds=900)
        assert view["policy"]["max_ttl_seconds"] == 900 and view["policy"]["default_ttl_seconds"] is None
        assert view["effective"]["max_ttl_seconds"] == 900
        assert view["effective"]["default_ttl_seconds"] == 900, "_default's default, capped by carol's ceiling"
        bad = await api.put("/v1/admin/policies/carol", json={"max_idle_minutes": 10, "default_idle_minutes": 20},
                            headers=admin)
        assert bad.status_code == 422 and "default_idle_minutes" in bad.text
        bad = await api.put("/v1/admin/policies/carol", json={"allowed_on_idle": ["nap"]}, headers=admin)
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"].startswith("allowed_on_idle")
        assert (await api.put("/v1/admin/policies/carol", json={}, headers=mint("carol"))).status_code == 403
        audit = (await api.get("/v1/admin/audit", headers=admin)).json()
        assert [a["action"] for a in audit if a["target_id"] == "carol"] == ["policy.put"]


class TestActions:
    async def test_stop_start_reboot_answer_202_or_409_with_the_current_status(self, api, mint, ssh_keypair,
                                                                                  services):
        alice = mint("alice")
        inst = (await create(api, alice, ssh_keypair.public)).json()
        path = f"/v1/instances/{inst['id']}"
        early = await api.post(f"{path}/stop", headers=alice)
        assert early.status_code == 409 and early.json()["current_status"] == "pending"
        assert early.json()["code"] == "invalid_status"
        await set_status(services, inst["id"], "running")
        assert (await api.post(f"{path}/start", headers=alice)).json()["current_status"] == "running"
        assert (await api.post(f"{path}/stop", headers=mint("bob"))).status_code == 404
        stopped = await api.post(f"{path}/stop", headers=alice)
        assert stopped.status_code == 202, stopped.text
        assert stopped.json()["status"] == "running", "the request is queued; a worker moves the instance"
        again = await api.post(f"{path}/reboot", headers=alice)
        assert again.status_code == 409 and again.json()["code"] == "request_pending"
        request = await services.db.action_requests.find_one({"_id": inst["id"]})
        assert (request["action"], request["requested_by"], request["rule"]) == ("stop", "alice", None)
        await services.db.action_requests.delete_many({})
        assert (await api.delete(path, headers=alice)).status_code == 202
        deleting = await api.post(f"{path}/reboot", headers=alice)
        assert deleting.status_code == 409 and deleting.json()["code"] == "already_deleting"
        types = [e["type"] for e in (await api.get(f"{path}/events", headers=alice)).json()]
        assert "stop.requested" in types
        audit = (await api.get("/v1/admin/audit", headers=mint("root", admin=True))).json()
        assert "instance.stop" in [a["action"] for a in audit]

    async def test_a_stopped_instance_reads_as_stopped_not_stale(self, api, mint, ssh_keypair, services):
        alice = mint("alice")
        inst = (await create(api, alice, ssh_keypair.public)).json()
        await set_status(services, inst["id"], "stopped")
        got = (await api.get(f"/v1/instances/{inst['id']}", headers=alice)).json()
        assert got["health"]["state"] == "stopped"
        listed = (await api.get("/v1/instances?status=stopped", headers=alice)).json()["items"]
        assert [i["id"] for i in listed] == [inst["id"]]
        start = await api.post(f"/v1/instances/{inst['id']}/start", headers=alice)
        assert start.status_code == 202


async def test_a_stopped_instance_s_agent_is_refused_everywhere_then_welcome_again(api, services):
    """Another process (a worker) pauses the token when the VM is stopped and resumes it when it starts:
    this API process follows within one refresh interval, reading nothing per post."""
    import asyncio

    from app.metrics import pauses
    from app.services import Services
    from tests.api.test_agent_metrics import bearer, running_instance, sample

    instance_id, token = await running_instance(services)
    jti_hash = (await services.db.instances.find_one({"_id": instance_id}))["agent_jti_hash"]

    async def post_until(code: int) -> list[int]:
        deadline = asyncio.get_running_loop().time() + services.settings.agent_revocation_refresh_seconds + 5
        codes = []
        while asyncio.get_running_loop().time() < deadline:
            body = {"instance_id": instance_id, "samples": [sample(utcnow())]}
            codes.append((await api.post("/v1/agent/metrics", json=body, headers=bearer(token))).status_code)
            if codes[-1] == code:
                break
            await asyncio.sleep(0.3)
        return codes

    assert (await post_until(202))[-1] == 202
    worker = Services.build(services.settings)
    try:
        await pauses.record(worker.db, instance_id, jti_hash, True, "job-1:stop")
        await pauses.record(worker.db, instance_id, jti_hash, True, "job-1:stop")  # a step run again
        assert (await post_until(401))[-1] == 401, "refused while stopped"
        await pauses.record(worker.db, instance_id, jti_hash, False, "job-2:start")
        assert (await post_until(202))[-1] == 202, "the same token works again once it is started"
    finally:
        await worker.close()
    assert await services.db.agent_pauses.count_documents({"jti": jti_hash}) == 2
