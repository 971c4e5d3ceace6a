"""``GET /metrics`` through the real app, a worker and the local provider: the exposition parses
with Prometheus' own parser, and the counters move as an instance is created and deleted."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import SecretStr

from tests.api.helpers import instance_body, wait_status
from tests.observability.support import parse, total, value


async def scrape(api, headers=None) -> dict:
    response = await api.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def until_counted(api, before: dict, name: str, timeout: float = 90.0, **labels) -> dict:
    """Scrapes until the series moved past its value in ``before`` (a job that leaves the status as it was)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        now = await scrape(api)
        if value(now, name, **labels) > value(before, name, **labels):
            return now
        assert asyncio.get_running_loop().time() < deadline, f"{name}{labels} never moved"
        await asyncio.sleep(0.2)


async def test_counters_move_as_an_instance_is_created_and_deleted(api, worker, mint, ssh_keypair):
    alice = mint("alice")
    before = await scrape(api)
    created = await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=alice)
    assert created.status_code == 202, created.text
    path = f"/v1/instances/{created.json()['id']}"
    assert (await wait_status(api, path, alice, {"running", "failed"}))["status"] == "running"
    running = await scrape(api)
    assert value(running, "onebox_instances", provider="local", status="running") == 1
    assert value(running, "onebox_instances", provider="local", status="pending") == 0  # every status is there
    assert (await api.delete(path, headers=alice)).status_code == 202
    await wait_status(api, path, alice, {"deleted"})
    after = await scrape(api)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("onebox_http_requests_total", route="/v1/instances", method="POST", status="202") == 1
    assert moved("onebox_http_requests_total", route="/v1/instances/{instance_id}", method="DELETE", status="202") == 1
    assert moved("onebox_http_request_duration_seconds_count", route="/v1/instances", method="POST", status="202") == 1
    for step in ("create", "wait_running", "configure"):
        assert moved("onebox_job_steps_total", kind="instance.provision", step=step, outcome="succeeded") == 1
        assert moved("onebox_job_step_duration_seconds_count", kind="instance.provision", step=step,
                     outcome="succeeded") == 1
    assert moved("onebox_job_steps_total", kind="instance.delete", step="delete", outcome="succeeded") == 1
    assert moved("onebox_jobs_finished_total", kind="instance.provision", outcome="succeeded") == 1
    assert moved("onebox_jobs_finished_total", kind="delete_request.dispatch", outcome="succeeded") == 1
    assert moved("onebox_time_to_ready_seconds_count", provider="local") == 1
    assert moved("onebox_time_to_delete_seconds_count", provider="local") == 1
    ready_sum = moved("onebox_time_to_ready_seconds_sum", provider="local")
    assert 0 < ready_sum < 60
    assert value(after, "onebox_instances", provider="local", status="running") == 0  # deleted: not counted
    assert total(after, "onebox_db_command_duration_seconds_count", command="insert", outcome="ok") > \
        total(before, "onebox_db_command_duration_seconds_count", command="insert", outcome="ok")
    assert total(after, "onebox_build_info") == 1


async def test_a_failed_create_counts_a_failed_step_and_job(dbserver, tmp_path, ssh_keypair):
    from tests.conftest import make_settings
    from tests.e2e.cloud_support import running_onebox

    settings = make_settings(dbserver, tmp_path / "data", inject_faults=["wait_running"])
    async with running_onebox(settings) as (api, svc):
        alice = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        before = await scrape(api)
        inst = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=alice)).json()
        await wait_status(api, f"/v1/instances/{inst['id']}", alice, {"failed"})
        after = await scrape(api)
    for name, labels in [("onebox_job_steps_total", dict(kind="instance.provision", step="wait_running", outcome="failed")),
                         ("onebox_job_steps_total", dict(kind="instance.provision", step="cleanup", outcome="succeeded")),
                         ("onebox_jobs_finished_total", dict(kind="instance.provision", outcome="failed"))]:
        assert value(after, name, **labels) - value(before, name, **labels) == 1, (name, labels)
    assert value(after, "onebox_instances", provider="local", status="failed") == 1


async def test_day_two_jobs_statuses_and_policy_actions_are_counted(api, services, worker, mint, ssh_keypair):
    """Stop, start and reboot are jobs of their own (a start is not a create: no second time-to-ready);
    a stopped instance is counted as such; an action the scheduler files by itself is counted by its rule."""
    import datetime as dt

    from app.policies.checks import check_policies

    alice = mint("alice")
    created = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, ttl_seconds=3600), headers=alice)
    assert created.status_code == 202, created.text
    inst = created.json()
    path = f"/v1/instances/{inst['id']}"
    assert (await wait_status(api, path, alice, {"running", "failed"}))["status"] == "running"
    before = await scrape(api)
    assert (await api.post(f"{path}/stop", headers=alice)).status_code == 202
    await wait_status(api, path, alice, {"stopped"})
    stopped = await scrape(api)
    assert value(stopped, "onebox_instances", provider="local", status="stopped") == 1
    assert value(stopped, "onebox_instances", provider="local", status="running") == 0
    assert (await api.post(f"{path}/start", headers=alice)).status_code == 202
    await wait_status(api, path, alice, {"running"})
    assert (await api.post(f"{path}/reboot", headers=alice)).status_code == 202
    await until_counted(api, before, "onebox_jobs_finished_total", kind="instance.reboot", outcome="succeeded")
    assert (await api.get(path, headers=alice)).json()["status"] == "running"

    # The TTL runs out: the scheduler's check files a stop naming its rule, and a worker carries it out.
    report = await check_policies(services, dt.datetime.fromisoformat(inst["created_at"]) + dt.timedelta(hours=2))
    assert report.acted == [(inst["id"], "ttl", "stop")]
    await wait_status(api, path, alice, {"stopped"})
    after = await scrape(api)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("onebox_job_steps_total", kind="instance.stop", step="stop", outcome="succeeded") == 2
    assert moved("onebox_job_steps_total", kind="instance.start", step="start", outcome="succeeded") == 1
    assert moved("onebox_job_steps_total", kind="instance.reboot", step="reboot", outcome="succeeded") == 1
    assert moved("onebox_jobs_finished_total", kind="instance.stop", outcome="succeeded") == 2
    assert moved("onebox_jobs_finished_total", kind="instance.start", outcome="succeeded") == 1
    assert moved("onebox_jobs_finished_total", kind="action_request.dispatch", outcome="succeeded") == 4
    assert moved("onebox_http_requests_total", route="/v1/instances/{instance_id}/stop", method="POST",
                 status="202") == 1
    assert moved("onebox_policy_actions_total", provider="local", rule="ttl", action="stop") == 1
    assert moved("onebox_time_to_ready_seconds_count", provider="local") == 0  # a start or reboot is not a create
    assert value(after, "onebox_instances", provider="local", status="stopped") == 1
    assert (await api.delete(path, headers=alice)).status_code == 202
    await wait_status(api, path, alice, {"deleted"})


async def test_request_id_is_returned_and_made_up_when_missing_or_malformed(api):
    given = await api.get("/healthz", headers={"X-Request-ID": "client-chosen-42"})
    assert given.headers["x-request-id"] == "client-chosen-42"
    made = await api.get("/healthz")
    bad = await api.get("/healthz", headers={"X-Request-ID": "no spaces allowed"})
    assert len(made.headers["x-request-id"]) == 32 and bad.headers["x-request-id"] != "no spaces allowed"
    unmatched = await api.get("/no/such/route")
    assert unmatched.status_code == 404 and unmatched.headers["x-request-id"]


async def test_unmatched_paths_and_agent_refusals_are_counted(api):
    before = await scrape(api)
    await api.get("/wp-login.php")
    await api.post("/v1/agent/metrics", json={})  # no agent token
    after = await scrape(api)
    assert value(after, "onebox_http_requests_total", route="unmatched", method="GET", status="404") - \
        value(before, "onebox_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert value(after, "onebox_agent_posts_total", outcome="refused") - \
        value(before, "onebox_agent_posts_total", outcome="refused") == 1


@pytest.fixture
async def guarded_api(services):
    import httpx

    from app.main import create_app

    settings = services.settings.model_copy(update={"prometheus_token": SecretStr("scrape-me-" + "p" * 30)})
    services.settings = settings
    app = create_app(settings, services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://onebox.test") as client:
        yield client


async def test_a_prometheus_token_guards_the_endpoint(guarded_api, mint):
    assert (await guarded_api.get("/metrics")).status_code == 401
    wrong = await guarded_api.get("/metrics", headers={"Authorization": "Bearer scrape-me-wrong"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "unauthorized"
    assert (await guarded_api.get("/metrics", headers=mint("alice"))).status_code == 401  # a user token is not it
    ok = await guarded_api.get("/metrics", headers={"Authorization": "Bearer scrape-me-" + "p" * 30})
    assert ok.status_code == 200 and "onebox_build_info" in ok.text


async def test_other_features_gauges_join_the_one_route(api, monkeypatch):
    """The hook the cost gauges use: a source's families are in the scrape; a failing source is left out
    and counted, and costs nothing else."""
    from prometheus_client.core import GaugeMetricFamily

    from app.observability import service

    async def spend(services):
        family = GaugeMetricFamily("onebox_test_spend_usd", "a feature's gauge", labels=["provider"])
        family.add_metric(["local"], 12.5)
        return [family]

    async def broken(services):
        raise RuntimeError("ledger away")

    monkeypatch.setattr(service, "SCRAPE_SOURCES", [broken, spend])
    before = await scrape(api)
    after = await scrape(api)
    assert value(after, "onebox_test_spend_usd", provider="local") == 12.5
    assert value(after, "onebox_scrape_errors_total") - value(before, "onebox_scrape_errors_total") == 1
    assert total(after, "onebox_build_info") == 1 and total(after, "onebox_instances") == 0
    assert any(name == "onebox_instances" for name, _ in after)
