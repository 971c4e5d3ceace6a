"""The scheduler's lifecycle check against a real database, with samples posted by "agents" through the real
API: what it files (requests in the users' queues), what it says (events, audit), and what it leaves alone.
No worker runs here, so nothing is carried out; ``tests/e2e/test_lifecycle_flow.py`` carries it out."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

from app.clock import utcnow
from app.policies.checks import check_policies
from app.worker.scheduler import Scheduler
from tests.api.helpers import instance_body
from tests.conftest import make_settings

INTERVAL = 10


@pytest.fixture
def settings(dbserver, tmp_path):
    return make_settings(dbserver, tmp_path / "data", agent_interval_seconds=INTERVAL, scheduler_interval_seconds=1.0)


async def running(api, services, mint, key, owner="alice", **lifecycle) -> tuple[dict, str]:
    """An instance created through the API, then (as a worker would have) running with an agent token."""
    response = await api.post("/v1/instances", json=instance_body(key, **lifecycle), headers=mint(owner))
    assert response.status_code == 202, response.text
    inst = response.json()
    token, jti_hash = services.tokens.mint_agent(inst["id"])
    await services.db.instances.update_one({"_id": inst["id"]}, {
        "$set": {"status": "running", "job": None, "agent_jti_hash": jti_hash},
        "$push": {"transitions": {"from": "configuring", "to": "running", "at": utcnow()}}})
    return inst, token


def quiet(at: dt.datetime, n: int, **overrides) -> dict:
    sample = {"at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "cpu_percent": 1.5, "ssh_sessions": 0,
              "net_rx_bytes": 2000 * n, "net_tx_bytes": 1000 * n, "disk_read_bytes": 0, "disk_write_bytes": 4096 * n,
              "gpus": [{"index": 0, "name": "NVIDIA A100", "utilization_percent": 0.0, "memory_used_mib": 5.0,
                        "memory_total_mib": 40960.0, "power_draw_w": 50.0, "power_limit_w": 400.0}]}
    sample.update(overrides)
    return sample


async def report_samples(api, instance_id, token, seconds: int, now: dt.datetime, skip: range = range(0),
                         **overrides) -> None:
    """Samples every INTERVAL covering the ``seconds`` up to ``now``, posted as the agent would."""
    count = seconds // INTERVAL + 2
    samples = [quiet(now - dt.timedelta(seconds=INTERVAL * (count - 1 - i)), i, **overrides)
               for i in range(count) if i not in skip]
    response = await api.post("/v1/agent/metrics", json={"instance_id": instance_id, "samples": samples},
                              headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text


async def events_of(api, mint, instance_id, type_):
    events = (await api.get(f"/v1/instances/{instance_id}/events", headers=mint("alice"))).json()
    return [e for e in events if e["type"] == type_]


async def test_ttl_warns_ahead_then_files_a_stop_as_policy(api, services, mint, ssh_keypair):
    inst, _ = await running(api, services, mint, ssh_keypair.public, ttl_seconds=7200)
    created = dt.datetime.fromisoformat(inst["created_at"])
    assert (await check_policies(services, created + dt.timedelta(minutes=30))).warned == []
    report = await check_policies(services, created + dt.timedelta(minutes=65))
    assert report.warned == [(inst["id"], 3600)] and report.acted == []
    assert (await check_policies(services, created + dt.timedelta(minutes=70))).warned == [], "each warning once"
    assert (await check_policies(services, created + dt.timedelta(minutes=111))).warned == [(inst["id"], 600)]
    [first, second] = await events_of(api, mint, inst["id"], "policy.warning")
    assert "stops this instance in 55 min" in first["message"] and first["step"] == "ttl"
    assert "in 9 min" in second["message"]

    report = await check_policies(services, created + dt.timedelta(minutes=121))
    assert report.acted == [(inst["id"], "ttl", "stop")]
    request = await services.db.action_requests.find_one({"_id": inst["id"]})
    assert (request["action"], request["requested_by"], request["rule"]) == ("stop", "policy", "ttl")
    [event] = await events_of(api, mint, inst["id"], "policy")
    assert event["step"] == "ttl" and "TTL ran out" in event["message"] and "stopping" in event["message"]
    audit = [a async for a in services.db.audit.find({"target_id": inst["id"], "actor": "policy"})]
    assert [(a["action"], a["role"], a["detail"]["rule"]) for a in audit] == [("instance.stop", "system", "ttl")]
    assert (await check_policies(services, created + dt.timedelta(minutes=122))).acted == [], \
        "a request already waits: nothing twice"


async def test_ttl_with_on_expiry_delete_files_a_delete(api, services, mint, ssh_keypair):
    inst, _ = await running(api, services, mint, ssh_keypair.public, ttl_seconds=600, on_expiry="delete")
    created = dt.datetime.fromisoformat(inst["created_at"])
    assert (await check_policies(services, created + dt.timedelta(minutes=11))).acted == [(inst["id"], "ttl", "delete")]
    request = await services.db.delete_requests.find_one({"_id": inst["id"]})
    assert (request["requested_by"], request["rule"]) == ("policy", "ttl")


async def test_idle_means_every_signal_for_the_whole_window(api, services, mint, ssh_keypair):
    window = dict(idle_minutes=1)
    gpu_busy, _ = await running(api, services, mint, ssh_keypair.public, name="gpu-busy", **window)
    idle, _ = await running(api, services, mint, ssh_keypair.public, name="idle", **window)
    gap, _ = await running(api, services, mint, ssh_keypair.public, name="gap", **window)
    session, _ = await running(api, services, mint, ssh_keypair.public, name="ssh", **window)
    no_rule, _ = await running(api, services, mint, ssh_keypair.public, name="no-rule")
    tokens = {}
    for inst in (gpu_busy, idle, gap, session, no_rule):
        tokens[inst["id"]] = services.tokens.mint_agent(inst["id"])
        await services.db.instances.update_one({"_id": inst["id"]},
                                               {"$set": {"agent_jti_hash": tokens[inst["id"]][1]}})
    busy_gpu = [{"index": 0, "utilization_percent": 90.0, "memory_used_mib": 30000.0, "memory_total_mib": 40960.0,
                 "power_draw_w": 350.0, "power_limit_w": 400.0}]
    now = utcnow().replace(microsecond=0)  # the checks judge the window up to the last samples, however slow this is
    await report_samples(api, gpu_busy["id"], tokens[gpu_busy["id"]][0], 80, now, cpu_percent=0.0, gpus=busy_gpu)
    await report_samples(api, idle["id"], tokens[idle["id"]][0], 80, now)
    await report_samples(api, gap["id"], tokens[gap["id"]][0], 80, now, skip=range(3, 5))
    await report_samples(api, session["id"], tokens[session["id"]][0], 80, now, ssh_sessions=1)
    await report_samples(api, no_rule["id"], tokens[no_rule["id"]][0], 80, now)

    report = await check_policies(services, now)
    assert report.acted == [(idle["id"], "idle", "stop")]
    [event] = await events_of(api, mint, idle["id"], "policy")
    assert event["step"] == "idle" and "idle on every signal" in event["message"]
    assert await services.db.action_requests.count_documents({}) == 1


async def test_stopped_too_long_is_deleted(api, services, mint, ssh_keypair):
    inst, _ = await running(api, services, mint, ssh_keypair.public, delete_after_stopped_days=2)
    now = utcnow()
    await services.db.instances.update_one({"_id": inst["id"]}, {
        "$set": {"status": "stopped"},
        "$push": {"transitions": {"from": "stopping", "to": "stopped", "at": now - dt.timedelta(days=1)}}})
    assert (await check_policies(services, now)).acted == []
    report = await check_policies(services, now + dt.timedelta(days=1, minutes=1))
    assert report.acted == [(inst["id"], "stopped_too_long", "delete")]
    [event] = await events_of(api, mint, inst["id"], "policy")
    assert "longer than delete_after_stopped_days (2)" in event["message"]


async def test_an_admin_tightening_the_policy_is_obeyed_on_the_next_check(api, services, mint, ssh_keypair):
    inst, _ = await running(api, services, mint, ssh_keypair.public, ttl_seconds=7200)
    no_ttl, _ = await running(api, services, mint, ssh_keypair.public, name="no-ttl")
    bob, _ = await running(api, services, mint, ssh_keypair.public, owner="bob", name="bobs")
    later = utcnow() + dt.timedelta(minutes=20)
    assert (await check_policies(services, later)).acted == []
    admin = mint("root", admin=True)
    assert (await api.put("/v1/admin/policies/alice", json={"max_ttl_seconds": 900}, headers=admin)).status_code == 200
    report = await check_policies(services, later)
    assert sorted(report.acted) == sorted([(inst["id"], "ttl", "stop"), (no_ttl["id"], "ttl", "stop")])
    assert bob["id"] not in {i for i, _, _ in report.acted}


async def test_a_user_s_waiting_request_comes_first(api, services, mint, ssh_keypair):
    inst, _ = await running(api, services, mint, ssh_keypair.public, ttl_seconds=600)
    assert (await api.post(f"/v1/instances/{inst['id']}/reboot", headers=mint("alice"))).status_code == 202
    report = await check_policies(services, utcnow() + dt.timedelta(hours=1))
    assert report.acted == [] and report.checked == 0


async def test_one_scheduler_pass_per_slot(api, services, mint, ssh_keypair):
    inst, _ = await running(api, services, mint, ssh_keypair.public, ttl_seconds=600)
    hour_ago = utcnow() - dt.timedelta(hours=1)  # its TTL ran out long ago
    await services.db.lifecycle_settings.update_one({"_id": inst["id"]}, {"$set": {"ttl_set_at": hour_ago}})
    await services.db.instances.update_one({"_id": inst["id"]}, {"$set": {"created_at": hour_ago}})

    # Hour-long slots: the two passes surely ask for the same one, however slow this machine is.
    services.settings = services.settings.model_copy(update={"scheduler_interval_seconds": 3600.0})
    first, second = Scheduler(services, "a"), Scheduler(services, "b")
    reports = await asyncio.gather(first.run_once(), second.run_once())
    ran = [r for r in reports if r is not None]
    assert len(ran) == 1 and ran[0]["policies"].acted == [(inst["id"], "ttl", "stop")]
