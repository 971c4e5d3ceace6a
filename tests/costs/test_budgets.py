"""Budgets through the real API on a real database: the 402 before provisioning, exact under a burst of
parallel creates, per user and per team; admins' prices and budgets (no worker: records stay pending)."""

from __future__ import annotations

import asyncio
import types

import pytest

from app import quotas
from app.clock import utcnow
from app.costs.service import CostService
from tests.api.helpers import instance_body
from tests.conftest import make_settings
from tests.e2e.cloud_support import running_onebox

LOCAL_PRICE = "/v1/admin/prices/local/local/local"


async def price_local(api, mint, hourly_usd: float) -> None:
    response = await api.put(LOCAL_PRICE, json={"hourly_usd": hourly_usd}, headers=mint("root", admin=True))
    assert response.status_code == 200, response.text
    assert response.json()["hourly_usd"] == hourly_usd and response.json()["overridden"] is True


async def set_budget(api, mint, path: str, **body) -> dict:
    response = await api.put(f"/v1/admin/budgets/{path}", json=body, headers=mint("root", admin=True))
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_create_over_the_budget_is_refused_with_402_and_nothing_is_queued(api, mint, services, ssh_keypair):
    await price_local(api, mint, 1.0)  # local machines at $1/h: no TTL → 24 h → $24 per create
    budget = await set_budget(api, mint, "users/alice", monthly_usd=30)
    assert (budget["scope"], budget["name"], budget["warn_at_percent"], budget["on_exhausted"]) == \
        ("user", "alice", 80, "stop")
    alice = mint("alice")
    first = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="first"), headers=alice)
    assert first.status_code == 202, first.text

    refused = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="second"), headers=alice)
    assert refused.status_code == 402, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "budget_exceeded" and problem["status"] == 402
    assert problem["budget"]["scope"] == "user" and problem["budget"]["name"] == "alice"
    assert problem["budget"]["monthly_usd"] == 30
    assert problem["spent_usd"] == 0  # pending: nothing has run yet
    assert problem["reserved_usd"] == pytest.approx(24) and problem["left_usd"] == pytest.approx(6)
    assert problem["projection_usd"] == pytest.approx(24)
    assert problem["projection"] == {"hourly_usd": 1.0, "hours": 24.0, "basis": "minimum_horizon", "usd": 24.0}
    assert "6.00 USD left" in problem["detail"]
    # nothing half-created: one instance, one quota slot, one reservation in force
    assert await services.db.instances.count_documents({"owner": "alice"}) == 1
    assert (await quotas.usage(services.db, "alice"))["max_instances"] == 1

    # bob has no budget; alice's view of her own budget
    assert (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=mint("bob"))).status_code == 202
    mine = (await api.get("/v1/budget", headers=alice)).json()
    assert mine["user"] == "alice" and mine["team"] is None
    [status] = mine["budgets"]
    assert status["left_usd"] == pytest.approx(6) and status["state"] == "ok"
    assert (await api.get("/v1/budget", headers=mint("bob"))).json()["budgets"] == []

    # raising the budget lets the next one through
    await set_budget(api, mint, "users/alice", monthly_usd=60)
    again = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="second"), headers=alice)
    assert again.status_code == 202, again.text


async def test_creates_and_starts_are_projected_over_their_ttl_and_a_start_reserves_too(api, mint, services,
                                                                                         ssh_keypair):
    await price_local(api, mint, 1.0)  # $1/h
    await set_budget(api, mint, "users/alice", monthly_usd=4)
    alice = mint("alice")
    short = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="short", ttl_seconds=7200),
                           headers=alice)
    assert short.status_code == 202, short.text  # 2 h: $2 reserved, $2 left
    policy = await api.put("/v1/admin/policies/alice", json={"default_ttl_seconds": 3 * 3600},
                           headers=mint("root", admin=True))
    assert policy.status_code == 200, policy.text
    refused = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="long"), headers=alice)
    assert refused.status_code == 402, refused.text
    assert refused.json()["projection"] == {"hourly_usd": 1.0, "hours": 3.0, "basis": "ttl", "usd": 3.0}

    # The first one ran and stopped (no worker here: its history is written as the jobs would): its create
    # reservation is out of force, and a start is checked and reserves its own TTL's worth again.
    instance_id = short.json()["id"]
    now = utcnow()
    steps = ["pending", "provisioning", "configuring", "running", "stopping", "stopped"]
    await services.db.instances.update_one({"_id": instance_id}, {"$set": {"status": "stopped", "job": None}, "$push": {
        "transitions": {"$each": [{"from": a, "to": b, "at": now} for a, b in zip(steps, steps[1:])]}}})
    assert (await api.get("/v1/budget", headers=alice)).json()["budgets"][0]["reserved_usd"] == 0
    started = await api.post(f"/v1/instances/{instance_id}/start", headers=alice)
    assert started.status_code == 202, started.text
    again = await api.post(f"/v1/instances/{instance_id}/start", headers=alice)
    assert again.status_code == 409 and again.json()["code"] == "request_pending", again.text
    [status] = (await api.get("/v1/budget", headers=alice)).json()["budgets"]
    assert status["reserved_usd"] == pytest.approx(2.0), "the start's 2 h, once (the refused second one gave its back)"
    over = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="over", ttl_seconds=9000),
                          headers=alice)
    assert over.status_code == 402 and over.json()["left_usd"] == pytest.approx(2.0)


async def test_twenty_parallel_creates_against_a_budget_that_fits_five(dbserver, tmp_path, ssh_keypair):
    # A generous database budget per request: on a loaded machine twenty creates at once queue on the database,
    # and what is under test is which of them are accepted, not how fast.
    async with running_onebox(make_settings(dbserver, tmp_path / "data", db_timeout_seconds=20.0),
                              worker=False) as (api, services):
        def mint(user, admin=False):
            return {"Authorization": f"Bearer {services.tokens.mint(user, role='admin' if admin else 'user')}"}

        await _twenty_creates(api, mint, services, ssh_keypair)


async def _twenty_creates(api, mint, services, ssh_keypair):
    await price_local(api, mint, 1.0)
    await set_budget(api, mint, "users/alice", monthly_usd=125)  # 5 × $24 = 120 fits, 6 × $24 = 144 does not
    alice = mint("alice")
    responses = await asyncio.gather(*(
        api.post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"box-{n}"), headers=alice)
        for n in range(20)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [202] * 5 + [402] * 15, [r.text for r in responses if r.status_code not in (202, 402)]
    assert all(r.json()["code"] == "budget_exceeded" for r in responses if r.status_code == 402)
    assert await services.db.instances.count_documents({"owner": "alice"}) == 5
    assert (await quotas.usage(services.db, "alice"))["max_instances"] == 5, "refused creates gave their slots back"
    [status] = (await api.get("/v1/budget", headers=alice)).json()["budgets"]
    assert status["reserved_usd"] == pytest.approx(120) and status["left_usd"] == pytest.approx(5)


async def test_team_budgets_from_a_token_claim_or_an_admins_assignment(api, mint, services, ssh_keypair):
    admin = mint("root", admin=True)
    await price_local(api, mint, 1.0)
    await set_budget(api, mint, "teams/research", monthly_usd=50)  # two $24 creates fit, a third does not
    assert (await api.put("/v1/admin/teams/research/members/bob", headers=admin)).json() == \
        {"team": "research", "members": ["bob"]}
    bob = mint("bob")
    carol = {"Authorization": f"Bearer {services.tokens.mint('carol', extra={'team': 'research'})}"}
    made = await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=bob)
    assert made.status_code == 202 and made.json()["team"] == "research"
    assert (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=carol)).status_code == 202
    refused = await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=carol)
    assert refused.status_code == 402 and refused.json()["budget"] == \
        {"scope": "team", "name": "research", "monthly_usd": 50, "month": refused.json()["budget"]["month"]}
    assert (await api.get("/v1/budget", headers=carol)).json()["team"] == "research"
    # An admin's assignment wins over the token's claim: carol moved to another team has its (no) budget.
    assert (await api.put("/v1/admin/teams/ops/members/carol", headers=admin)).status_code == 200
    moved = await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=carol)
    assert moved.status_code == 202 and moved.json()["team"] == "ops"
    # Both budgets apply: a user budget refuses even when the team's would fit.
    await set_budget(api, mint, "users/dave", monthly_usd=10)
    assert (await api.put("/v1/admin/teams/ops/members/dave", headers=admin)).status_code == 200
    dave = await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=mint("dave"))
    assert dave.status_code == 402 and dave.json()["budget"]["scope"] == "user"
    assert (await api.delete("/v1/admin/teams/ops/members/carol", headers=admin)).status_code == 204
    assert (await api.get("/v1/admin/teams/ops", headers=admin)).json() == {"team": "ops", "members": ["dave"]}


async def test_a_type_without_a_price_cannot_be_checked_against_a_budget(services):
    await services.db.budgets.insert_one({"_id": "user:alice", "scope": "user", "name": "alice", "monthly_usd": 100})
    from app.auth.tokens import Principal
    body = types.SimpleNamespace(provider="aws", region="us-east-1", machine_type="x9.mystery", disk_gb=20)
    with pytest.raises(Exception) as refused:
        await CostService(services).check_create(Principal("alice"), body, "i-x")
    assert refused.value.status == 402 and refused.value.code == "price_unknown"
    assert refused.value.errors[0]["field"] == "machine_type"
    # Without a budget nothing needs a price.
    assert await CostService(services).check_create(Principal("bob"), body, "i-y") == (None, [])


class TestAdminRoutes:
    async def test_budget_input_is_validated_and_users_may_not_set_budgets(self, api, mint):
        admin = mint("root", admin=True)
        for body, field in (({"monthly_usd": 0}, "monthly_usd"), ({"monthly_usd": 10, "warn_at_percent": 120},
                            "warn_at_percent"), ({"monthly_usd": 10, "on_exhausted": "explode"}, "on_exhausted"),
                            ({"monthly_usd": 10, "spent": 0}, "spent")):
            response = await api.put("/v1/admin/budgets/users/alice", json=body, headers=admin)
            assert response.status_code == 422 and response.json()["errors"][0]["field"] == field, response.text
        assert (await api.put("/v1/admin/budgets/teams/bad%20name", json={"monthly_usd": 1}, headers=admin)).status_code == 422
        assert (await api.put("/v1/admin/budgets/users/alice", json={"monthly_usd": 9},
                              headers=mint("alice"))).status_code == 403
        assert (await api.get("/v1/admin/budgets/users/alice", headers=admin)).status_code == 404
        assert (await api.delete("/v1/admin/budgets/users/alice", headers=admin)).status_code == 404

    async def test_prices_are_validated_against_the_catalog_and_dated(self, api, mint):
        admin = mint("root", admin=True)
        for path, field in (("aws/us-east-1/t3.micro", "provider"), ("local/mars/local", "region"),
                            ("local/local/huge", "machine_type")):
            response = await api.put(f"/v1/admin/prices/{path}", json={"hourly_usd": 1}, headers=admin)
            assert response.status_code == 422 and response.json()["errors"][0]["field"] == field, response.text
        assert (await api.put(LOCAL_PRICE, json={"hourly_usd": -1}, headers=admin)).status_code == 422
        set_ = (await api.put(LOCAL_PRICE, json={"hourly_usd": 0.5}, headers=admin)).json()
        assert set_["listed_hourly_usd"] == 0 and set_["set_by"] == "root" and set_["effective_from"]
        prices = (await api.get("/v1/admin/prices", headers=admin)).json()
        assert {s["provider"] for s in prices["sheets"]} >= {"aws", "gcp", "azure", "local"}
        assert all(s["as_of"] and s["source"] for s in prices["sheets"])
        assert [o["hourly_usd"] for o in prices["overrides"]] == [0.5]
        unset = (await api.delete(LOCAL_PRICE, headers=admin)).json()
        assert unset["hourly_usd"] == 0 and unset["overridden"] is False
        assert (await api.get("/v1/admin/prices", headers=admin)).json()["overrides"] == []
        audit = (await api.get("/v1/admin/audit", headers=admin)).json()
        assert [a["action"] for a in audit[:2]] == ["price.unset", "price.set"]


async def test_the_catalog_shows_the_price_the_ledger_charges(api, mint):
    async def local_price():
        catalog = (await api.get("/v1/catalog", headers=mint("alice"))).json()
        [local] = [p for p in catalog["providers"] if p["name"] == "local"]
        return local["regions"][0]["machine_types"][0]["hourly_usd"]

    assert await local_price() == 0.0
    await price_local(api, mint, 0.75)
    assert await local_price() == 0.75
