"""Quotas under concurrency, the rate limit, mass assignment, the audit log and log hygiene."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from app.main import create_app
from app.services import Services
from tests.api.helpers import instance_body
from tests.conftest import make_settings



async def app_with(dbserver, tmp_path, **overrides):
    settings = make_settings(dbserver, tmp_path / "data", **overrides)
    svc = Services.build(settings)
    await svc.db.ensure_indexes()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, svc)), base_url="http://t")
    return client, svc


async def test_quota_race_twenty_parallel_creates_at_a_limit_of_five(dbserver, tmp_path, ssh_keypair):
    api, svc = await app_with(dbserver, tmp_path, quota_max_instances=5)
    try:
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        responses = await asyncio.gather(*(
            api.post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"box-{n}"), headers=headers)
            for n in range(20)))
        codes = sorted(r.status_code for r in responses)
        assert codes == [202] * 5 + [403] * 15, codes
        for r in responses:
            if r.status_code == 403:
                assert r.json()["code"] == "quota_exceeded" and r.json()["limit"] == "max_instances"
        assert await svc.db.instances.count_documents({"owner": "alice"}) == 5, "nothing queued over the quota"
        # Another user has a quota of their own.
        bob = {"Authorization": f"Bearer {svc.tokens.mint('bob')}"}
        assert (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=bob)).status_code == 202
    finally:
        await api.aclose()
        await svc.close()


async def test_vcpu_and_snapshot_quotas_and_admin_overrides(dbserver, tmp_path, ssh_keypair):
    api, svc = await app_with(dbserver, tmp_path, quota_max_vcpus=2)
    try:
        alice = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        admin = {"Authorization": f"Bearer {svc.tokens.mint('root', role='admin')}"}
        for n in range(2):  # a local machine has 1 vCPU
            assert (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"b{n}"),
                                   headers=alice)).status_code == 202
        over = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="b3"), headers=alice)
        assert over.status_code == 403 and over.json()["limit"] == "max_vcpus"
        assert (await api.put("/v1/admin/quotas/alice", json={"max_vcpus": 3}, headers=alice)).status_code == 403
        view = await api.put("/v1/admin/quotas/alice", json={"max_vcpus": 3}, headers=admin)
        assert view.status_code == 200 and view.json()["limits"]["max_vcpus"] == 3
        assert view.json()["usage"]["max_vcpus"] == 2
        assert (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="b3"),
                               headers=alice)).status_code == 202
    finally:
        await api.aclose()
        await svc.close()


async def test_rate_limit_gives_429_with_retry_after(dbserver, tmp_path):
    api, svc = await app_with(dbserver, tmp_path, rate_limit_per_minute=5)
    try:
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        codes = [(await api.get("/v1/instances", headers=headers)) for _ in range(7)]
        assert [r.status_code for r in codes[:5]] == [200] * 5
        limited = codes[5]
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["code"] == "rate_limited"
        other = {"Authorization": f"Bearer {svc.tokens.mint('bob')}"}
        assert (await api.get("/v1/instances", headers=other)).status_code == 200
        # Exact under concurrency too (a fresh user, 30 parallel requests, a limit of 5).
        carol = {"Authorization": f"Bearer {svc.tokens.mint('carol')}"}
        parallel = await asyncio.gather(*(api.get("/v1/instances", headers=carol) for _ in range(30)))
        passed = sum(r.status_code == 200 for r in parallel)
        assert passed <= 5 and passed + sum(r.status_code == 429 for r in parallel) == 30
    finally:
        await api.aclose()
        await svc.close()


@pytest.mark.parametrize("field,value", [("owner", "mallory"), ("status", "running"), ("cloud_id", "x"),
                                         ("error", None), ("health", {"state": "healthy"}), ("id", "i-x")])
async def test_mass_assignment_is_422(field, value, api, mint, ssh_keypair, services):
    body = {**instance_body(ssh_keypair.public), field: value}
    response = await api.post("/v1/instances", json=body, headers=mint("alice"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field
    assert await services.db.instances.count_documents({}) == 0


async def test_audit_log_is_for_admins(api, mint, ssh_keypair):
    created = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=mint("alice"))).json()
    await api.delete(f"/v1/instances/{created['id']}", headers=mint("alice"))
    assert (await api.get("/v1/admin/audit", headers=mint("alice"))).status_code == 403
    entries = (await api.get("/v1/admin/audit", headers=mint("root", admin=True))).json()
    assert [(e["action"], e["actor"], e["target_id"]) for e in entries] == [
        ("instance.delete", "alice", created["id"]), ("instance.create", "alice", created["id"])]
    assert entries[0]["address"]


async def test_tokens_never_reach_the_logs(api, mint, ssh_keypair, caplog):
    from app.logs import ScrubSecrets

    caplog.set_level(logging.DEBUG)
    caplog.handler.addFilter(ScrubSecrets())
    headers = mint("alice")
    token = headers["Authorization"].split()[1]
    await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)
    await api.get("/v1/instances", headers={"Authorization": f"Bearer {token}x"})  # a refused one too
    logging.getLogger("onebox.test").warning("echoing a header: Authorization: Bearer %s", token)
    text = caplog.text
    assert token not in text and token[:-1] not in text
    assert "[redacted]" in text
