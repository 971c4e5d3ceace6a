"""Agent tokens and metric ingestion, through the real app and a real database server."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest

from app.clock import utcnow
from app.ids import new_instance_id
from app.metrics import repository
from app.metrics.revocations import revoke
from tests.api.helpers import instance_body, wait_status


async def stored(services, instance_id: str | None = None) -> list:
    return await repository.stored_samples(services.db.metrics, None if instance_id is None else [instance_id])



def sample(at: dt.datetime | None = None, **overrides) -> dict:
    body = {"at": (at or utcnow()).strftime("%Y-%m-%dT%H:%M:%SZ"), "cpu_percent": 12.5, "load_avg": [0.1, 0.2, 0.3],
            "memory_percent": 40.0, "disk_percent": 10.0, "net_rx_bytes": 10, "net_tx_bytes": 20,
            "uptime_seconds": 100.0,
            "gpus": [{"index": 0, "name": "NVIDIA A100", "utilization_percent": 37.0, "memory_used_mib": 1024.0,
                      "memory_total_mib": 40960.0, "temperature_c": 45.0, "power_draw_w": 95.1}]}
    body.update(overrides)
    return body


async def running_instance(services, owner="alice", status="running") -> tuple[str, str]:
    """An instance record in `status`, with a freshly minted agent token."""
    instance_id = new_instance_id()
    token, jti_hash = services.tokens.mint_agent(instance_id)
    now = utcnow()
    await services.db.instances.insert_one({
        "_id": instance_id, "owner": owner, "name": "box", "provider": "local", "region": "local", "zone": None,
        "machine_type": "local", "image": None, "snapshot_id": None, "disk_gb": 20, "ssh_user": "alice",
        "ssh_public_key": "k", "labels": {}, "status": status, "error": None, "created_at": now, "updated_at": now,
        "job": None, "agent_jti_hash": jti_hash,
    })
    return instance_id, token


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def test_agent_posts_and_owner_reads_health_and_series(api, services, mint):
    instance_id, token = await running_instance(services)
    before = (await api.get(f"/v1/instances/{instance_id}", headers=mint("alice"))).json()
    assert before["health"]["state"] == "unknown"
    now = utcnow()
    body = {"instance_id": instance_id, "samples": [sample(now - dt.timedelta(seconds=30)), sample(now, cpu_percent=77.0)]}
    response = await api.post("/v1/agent/metrics", json=body, headers=bearer(token))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 2, "duplicates": 0}
    again = await api.post("/v1/agent/metrics", json=body, headers=bearer(token))
    assert again.json() == {"accepted": 0, "duplicates": 2}, "a re-sent batch is not stored twice"
    health = (await api.get(f"/v1/instances/{instance_id}", headers=mint("alice"))).json()["health"]
    assert health["state"] == "healthy" and health["cpu_percent"] == 77.0
    assert health["gpus"][0]["name"] == "NVIDIA A100"
    series = (await api.get(f"/v1/instances/{instance_id}/metrics", headers=mint("alice"))).json()["items"]
    assert [p["cpu_percent"] for p in series] == [12.5, 77.0]
    assert (await api.get(f"/v1/instances/{instance_id}/metrics", headers=mint("bob"))).status_code == 404


async def test_stale_after_three_missed_intervals(api, services, mint):
    instance_id, token = await running_instance(services)
    old = utcnow() - dt.timedelta(seconds=services.settings.agent_interval_seconds * 3 + 5)
    await api.post("/v1/agent/metrics", json={"instance_id": instance_id, "samples": [sample(old)]}, headers=bearer(token))
    health = (await api.get(f"/v1/instances/{instance_id}", headers=mint("alice"))).json()["health"]
    assert health["state"] == "stale"


@pytest.mark.parametrize("mutate", [
    lambda b: b["samples"][0].update(cpu_percent=140),
    lambda b: b["samples"][0].update(memory_percent=-1),
    lambda b: b["samples"][0].update(load_avg=[1, 2]),
    lambda b: b["samples"][0].update(at="yesterday"),
    lambda b: b["samples"][0].update(extra_field=1),
    lambda b: b["samples"][0]["gpus"][0].update(temperature_c=9999),
    lambda b: b.update(samples=[]),
    lambda b: b.update(samples=[sample()] * 101),
    lambda b: b["samples"][0].update(at=(utcnow() + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")),
])
async def test_malformed_body_is_422_and_nothing_stored(api, services, mutate):
    instance_id, token = await running_instance(services)
    body = {"instance_id": instance_id, "samples": [sample()]}
    mutate(body)
    response = await api.post("/v1/agent/metrics", json=body, headers=bearer(token))
    assert response.status_code == 422, response.text
    assert await stored(services, instance_id) == []


async def test_body_over_limit_is_413(api, services):
    instance_id, token = await running_instance(services)
    body = {"instance_id": instance_id, "samples": [sample(gpus=[])] * 100, "pad": "x" * 300_000}
    response = await api.post("/v1/agent/metrics", json=body, headers=bearer(token))
    assert response.status_code == 413


async def test_token_of_another_instance_is_403(api, services):
    mine, _ = await running_instance(services)
    _, other_token = await running_instance(services)
    response = await api.post("/v1/agent/metrics", json={"instance_id": mine, "samples": [sample()]},
                              headers=bearer(other_token))
    assert response.status_code == 403
    assert await stored(services) == []


def forged(services, instance_id: str, *, key=None, alg="HS256", **claims) -> str:
    now = int(utcnow().timestamp())
    payload = {"sub": instance_id, "iat": now, "exp": now + 600, "iss": "onebox", "aud": "onebox-agent",
               "typ": "agent", "jti": "x"}
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key if key is not None else services.settings.jwt_secret.get_secret_value(), algorithm=alg)


@pytest.mark.parametrize("case", ["expired", "alg_none", "wrong_key", "wrong_aud", "wrong_typ", "user_token",
                                  "rotated", "no_exp"])
async def test_bad_agent_tokens_are_401(api, services, case):
    instance_id, token = await running_instance(services)
    if case == "expired":
        token = forged(services, instance_id, exp=int(utcnow().timestamp()) - 3600)
    elif case == "alg_none":
        header, payload, _ = forged(services, instance_id).split(".")
        token = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode() + "." + payload + "."
    elif case == "wrong_key":
        token = forged(services, instance_id, key="another-secret-that-is-long-enough-0123456789")
    elif case == "wrong_aud":
        token = forged(services, instance_id, aud="onebox")
    elif case == "wrong_typ":
        token = forged(services, instance_id, typ="user")
    elif case == "user_token":
        token = services.tokens.mint(instance_id)
    elif case == "rotated":  # what a new configuration run does to the token it replaces
        old_hash = (await services.db.instances.find_one({"_id": instance_id}))["agent_jti_hash"]
        await revoke(services.db, instance_id, old_hash, "rotated")
    elif case == "no_exp":
        token = forged(services, instance_id, exp=None)
    response = await api.post("/v1/agent/metrics", json={"instance_id": instance_id, "samples": [sample()]},
                              headers=bearer(token))
    assert response.status_code == 401, (case, response.text)
    assert await stored(services) == []


async def test_agent_token_refused_on_user_routes_and_after_delete(api, services, ssh_keypair):
    instance_id, token = await running_instance(services, status="running")
    for method, path in [("GET", "/v1/instances"), ("GET", f"/v1/instances/{instance_id}"),
                         ("GET", "/v1/snapshots"), ("DELETE", f"/v1/instances/{instance_id}")]:
        assert (await api.request(method, path, headers=bearer(token))).status_code == 401, path
    assert (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=bearer(token))).status_code == 401
    body = {"instance_id": instance_id, "samples": [sample()]}
    assert (await api.post("/v1/agent/metrics", json=body, headers=bearer(token))).status_code == 202
    owner = {"Authorization": f"Bearer {services.tokens.mint('alice')}"}
    assert (await api.delete(f"/v1/instances/{instance_id}", headers=owner)).status_code == 202
    body = {"instance_id": instance_id, "samples": [sample(utcnow() + dt.timedelta(seconds=1))]}
    response = await api.post("/v1/agent/metrics", json=body, headers=bearer(token))
    assert response.status_code == 401, "the delete withdrew the token at once in this process"


async def test_a_withdrawn_token_is_refused_by_every_process_within_the_refresh_interval(api, services):
    """Another API process (its own copy of the revocations) withdraws the token: this one refuses it after
    at most one refresh interval, without reading the database for every post."""
    from app.services import Services

    instance_id, token = await running_instance(services)
    now = utcnow()
    first = {"instance_id": instance_id, "samples": [sample(now - dt.timedelta(seconds=5))]}
    assert (await api.post("/v1/agent/metrics", json=first, headers=bearer(token))).status_code == 202
    other = Services.build(services.settings)
    try:
        jti_hash = (await services.db.instances.find_one({"_id": instance_id}))["agent_jti_hash"]
        await revoke(other.db, instance_id, jti_hash, "delete")
    finally:
        await other.close()
    import asyncio

    deadline = asyncio.get_running_loop().time() + services.settings.agent_revocation_refresh_seconds + 5
    codes = []
    while asyncio.get_running_loop().time() < deadline:
        body = {"instance_id": instance_id, "samples": [sample(utcnow())]}
        codes.append((await api.post("/v1/agent/metrics", json=body, headers=bearer(token))).status_code)
        if codes[-1] == 401:
            break
        await asyncio.sleep(0.2)
    assert codes[-1] == 401, codes


async def test_worker_purges_metrics_past_retention(api, services):
    import asyncio

    from app.metrics.service import MetricsService
    from app.worker.runner import Worker

    instance_id, token = await running_instance(services)
    now = utcnow()
    old, recent = now - dt.timedelta(days=30), now - dt.timedelta(minutes=1)
    ops = repository.sample_ops(instance_id, [{"at": old, "cpu_percent": 1.0}, {"at": recent, "cpu_percent": 2.0}])
    await services.db.metrics.bulk_write([op for op, _ in ops])
    assert len(await stored(services, instance_id)) == 2
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(services).maintain(stop))
    for _ in range(100):
        if len(await stored(services, instance_id)) == 1:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    series = await MetricsService(services).series(instance_id, now - dt.timedelta(days=60), None, 100)
    assert [p["cpu_percent"] for p in series] == [2.0]
