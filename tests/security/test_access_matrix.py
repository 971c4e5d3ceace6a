"""Every route × every kind of caller, built from the app's own route table.

Callers: the owner, another user, an admin, the agent of the instance, the
agent of another instance, and anonymous. Each cell's expected status comes
from the route's kind (user, admin, agent, public). A route added later is
covered automatically; one whose kind this table does not know fails the test.
"""

from __future__ import annotations

import pytest

from app.clock import utcnow
from app.ids import new_instance_id, new_qa_run_id, new_snapshot_id
from app.main import create_app


CALLERS = ["owner", "other", "admin", "agent_own", "agent_other", "anonymous"]
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVh9k3YgCz0m3b0nB2H0q8q3oH9u3Xl0VvS1r7Jm1xY alice@laptop"


def user_routes() -> list[tuple[str, str]]:
    """Every /v1 operation the app publishes (its OpenAPI document is generated from the route table)."""
    paths = create_app().openapi()["paths"]
    routes = [(method.upper(), path) for path, ops in paths.items() if path.startswith("/v1") for method in ops]
    assert len(routes) >= 12, routes
    return sorted(routes)


def kind_of(path: str) -> str:
    if path == "/v1/features":
        return "public"  # the sign-in page reads it before anyone signs in
    if path == "/v1/dev/token":
        return "dev"  # development sign-in: off here, so absent for everyone
    if path.startswith("/v1/admin"):
        return "admin"
    if path.startswith("/v1/agent"):
        return "agent"
    return "user"


def owns_a_resource(path: str) -> bool:
    return "{instance_id}" in path or "{snapshot_id}" in path or "{run_id}" in path


async def make_world(services, status: str = "running"):
    now = utcnow()
    ids = {}
    for who in ("own", "other"):
        instance_id = new_instance_id()
        token, jti_hash = services.tokens.mint_agent(instance_id)
        await services.db.instances.insert_one({
            "_id": instance_id, "owner": "alice" if who == "own" else "carol", "name": "box", "provider": "local",
            "region": "local", "zone": None, "machine_type": "local", "image": None, "snapshot_id": None,
            "disk_gb": 20, "ssh_user": "alice", "ssh_public_key": SSH_KEY, "labels": {}, "status": status,
            "error": None, "created_at": now, "updated_at": now, "job": None, "agent_jti_hash": jti_hash,
            "public_ip": "127.0.0.99", "ssh_port": 2222, "ssh_host_keys": ["[127.0.0.99]:2222 ssh-ed25519 AAAA"]})
        ids[who] = (instance_id, token)
    snapshot_id = new_snapshot_id()
    await services.db.snapshots.insert_one({
        "_id": snapshot_id, "instance_id": ids["own"][0], "owner": "alice", "name": "s", "provider": "local",
        "region": "local", "status": "available", "cloud_id": "c", "error": None, "created_at": now,
        "updated_at": now, "job": None})
    run_id = new_qa_run_id()  # a QA run of alice's, running (its job is not claimed: no worker here)
    await services.db.qa_runs.insert_one({
        "_id": run_id, "owner": "alice", "suite": "cpu", "instances": [ids["own"][0]], "params": {"cpu_seconds": 1},
        "targets": [{"instance_id": ids["own"][0], "role": "subject", "name": "box", "provider": "local",
                     "region": "local", "machine_type": "local", "image": None}],
        "steps": ["prepare", "cpu", "teardown"], "results": {}, "facts": {}, "status": "running", "error": None,
        "created_at": now, "updated_at": now, "job": None})
    await services.db.qa_baselines.insert_one({
        "_id": "cpu|cpu_single_events_s|local|local", "suite": "cpu", "check": "cpu_single_events_s",
        "provider": "local", "machine_type": "local", "value": 100.0, "tolerance_percent": 15.0, "set_by": "root",
        "set_at": now})
    ids["run"] = (run_id, None)
    return ids, snapshot_id


def headers_for(caller: str, services, ids) -> dict:
    token = {
        "owner": lambda: services.tokens.mint("alice"),
        "other": lambda: services.tokens.mint("bob"),
        "admin": lambda: services.tokens.mint("root", role="admin"),
        "agent_own": lambda: ids["own"][1],
        "agent_other": lambda: ids["other"][1],
        "anonymous": lambda: None,
    }[caller]()
    return {"Authorization": f"Bearer {token}"} if token else {}


def body_for(method: str, path: str, instance_id: str) -> dict | None:
    if method == "PATCH" and path == "/v1/instances/{instance_id}":
        return {"ttl_seconds": 3600}
    if method not in ("POST", "PUT"):
        return None
    if path.endswith(("/stop", "/start", "/reboot")):
        return None
    if path == "/v1/instances":
        return {"name": "n", "provider": "local", "region": "local", "machine_type": "local", "ssh_user": "alice",
                "ssh_public_key": SSH_KEY}
    if path.endswith("/snapshots"):
        return {"name": "s2"}
    if path == "/v1/agent/metrics":
        return {"instance_id": instance_id, "samples": [{"at": utcnow().strftime("%Y-%m-%dT%H:%M:%SZ")}]}
    if path.startswith("/v1/admin/quotas"):
        return {"max_instances": 3}
    if path.startswith("/v1/admin/policies"):
        return {"max_ttl_seconds": 3600}
    if path == "/v1/qa-runs":
        return {"suite": "cpu", "instances": [instance_id], "params": {"cpu_seconds": 1}}
    if path.startswith("/v1/admin/qa-baselines"):
        return {"value": 50.0}
    if path == "/v1/dev/token":
        return {"user": "mallory"}
    raise AssertionError(f"no body known for {method} {path}: teach the access matrix about it")


def expected(caller: str, method: str, path: str) -> set[int]:
    kind = kind_of(path)
    ok = {200, 202, 204}
    if kind == "public":
        return ok
    if kind == "dev":
        return {404}
    if caller == "anonymous":
        return {401}
    if kind == "agent":
        return ok if caller == "agent_own" else ({403} if caller == "agent_other" else {401})
    if caller.startswith("agent"):
        return {401}  # an agent token passes for no user
    if kind == "admin":
        return ok if caller == "admin" else {403}
    if (method, path) == ("POST", "/v1/qa-runs") and caller != "owner":
        return {404}  # a QA run logs in to the VM: only the owner's instances, even for an admin
    if caller in ("owner", "admin"):
        return ok
    # another user: the owner's resources do not exist for them
    return {404} if owns_a_resource(path) else ok


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("method,path", user_routes())
async def test_cell(method, path, caller, api, services):
    assert kind_of(path) in ("user", "admin", "agent", "public", "dev")
    ids, snapshot_id = await make_world(services, "stopped" if path.endswith("/start") else "running")
    instance_id = ids["own"][0]
    url = path.replace("{instance_id}", instance_id).replace("{snapshot_id}", snapshot_id).replace("{user}", "alice")
    url = url.replace("{run_id}", ids["run"][0]).replace("{suite}", "cpu").replace("{check}", "cpu_single_events_s")
    url = url.replace("{provider}", "local").replace("{machine_type}", "local")
    if path.startswith("/v1/qa-history"):
        url += "?suite=cpu&check=cpu_single_events_s"
    response = await api.request(method, url, headers=headers_for(caller, services, ids),
                                 json=body_for(method, path, instance_id))
    assert response.status_code in expected(caller, method, path), (method, path, caller, response.text)
    if caller == "other" and response.status_code == 200 and method == "GET":
        # Lists answer 200 to anyone, but with nothing of the owner's in them.
        assert instance_id not in response.text and snapshot_id not in response.text
        assert ids["run"][0] not in response.text
