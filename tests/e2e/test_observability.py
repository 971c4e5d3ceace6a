"""Metrics and logs across real processes: 2 API processes (`onebox serve --no-worker`) and 1
`onebox worker` on one database and one host. Every count is the same whichever API process is
scraped, and equals what the test itself did (no request, step or instance lost or counted twice,
even across a worker killed by SIGKILL and replaced); a request's id is in the API's log and in
the worker's for the same instance."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from tests.api.helpers import instance_body
from tests.conftest import make_settings
from tests.e2e.test_workers import start_api, start_worker, stop, wait_until
from tests.observability.support import parse, value

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

INSTANCES = 6
STEPS = ("create", "wait_running", "configure")


def json_lines(path) -> list[dict]:
    entries = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


async def test_two_apis_one_worker_count_everything_once_and_share_request_ids(dbserver, tmp_path, ssh_keypair):
    settings = make_settings(dbserver, tmp_path / "data", lease_seconds=10.0)
    env = {"ONEBOX_LOG_LEVEL": "INFO", "ONEBOX_LOG_FORMAT": "json"}
    logs = [tmp_path / "api-0.log", tmp_path / "api-1.log", tmp_path / "worker.log", tmp_path / "worker-2.log"]
    processes = []
    try:
        for n in range(2):
            process, port = await start_api(settings, logs[n], **env)
            processes.append((process, port))
        processes.append((start_worker(settings, logs[2], **env), None))
        from app.auth.tokens import TokenService

        headers = {"Authorization": f"Bearer {TokenService(settings).mint('alice')}"}
        apis = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) for _, port in processes[:2]]
        reads = 0  # GET /v1/instances/{id} answered 200, whichever process answered them
        ids = []
        for n in range(INSTANCES):
            r = await apis[n % 2].post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"box-{n}"),
                                       headers={**headers, "X-Request-ID": f"create-{n}"})
            assert r.status_code == 202 and r.headers["x-request-id"] == f"create-{n}", r.text
            ids.append(r.json()["id"])

        async def all_in(statuses: set[str]) -> bool:
            nonlocal reads
            found = []
            for n, instance_id in enumerate(ids):
                r = await apis[n % 2].get(f"/v1/instances/{instance_id}", headers=headers)
                assert r.status_code == 200
                reads += 1
                found.append(r.json()["status"])
            assert "failed" not in found, found
            return set(found) <= statuses

        await wait_until(lambda: all_in({"running"}), timeout=120, what="every instance running")
        mid = parse((await apis[0].get("/metrics")).text)
        assert value(mid, "onebox_instances", provider="local", status="running") == INSTANCES
        # The worker dies like a power cut; its counts stay, and its successor takes over its slot.
        stop(processes[2][0], signal.SIGKILL)
        processes.append((start_worker(settings, logs[3], **env), None))
        for n, instance_id in enumerate(ids):
            r = await apis[(n + 1) % 2].delete(f"/v1/instances/{instance_id}",
                                                headers={**headers, "X-Request-ID": f"delete-{n}"})
            assert r.status_code == 202
        await wait_until(lambda: all_in({"deleted"}), timeout=120, what="every instance deleted")

        scrapes = [parse((await api.get("/metrics")).text) for api in apis]
        expected = {
            ("onebox_http_requests_total", (("method", "POST"), ("route", "/v1/instances"), ("status", "202"))): INSTANCES,
            ("onebox_http_requests_total", (("method", "DELETE"), ("route", "/v1/instances/{instance_id}"),
                                            ("status", "202"))): INSTANCES,
            ("onebox_http_requests_total", (("method", "GET"), ("route", "/v1/instances/{instance_id}"),
                                            ("status", "200"))): reads,
            ("onebox_jobs_finished_total", (("kind", "instance.provision"), ("outcome", "succeeded"))): INSTANCES,
            ("onebox_jobs_finished_total", (("kind", "instance.delete"), ("outcome", "succeeded"))): INSTANCES,
            ("onebox_time_to_ready_seconds_count", (("provider", "local"),)): INSTANCES,
            ("onebox_time_to_delete_seconds_count", (("provider", "local"),)): INSTANCES,
            **{("onebox_job_steps_total", (("kind", "instance.provision"), ("outcome", "succeeded"), ("step", step))):
               INSTANCES for step in STEPS},
        }
        for scrape in scrapes:
            assert {key: scrape.get(key) for key in expected} == expected
            assert value(scrape, "onebox_instances", provider="local", status="running") == 0
        # Both processes answer the same sums (the worker's counts included), bar the scrapes themselves.
        shared = [k for k in scrapes[0] if k[0].startswith(("onebox_job", "onebox_time_to"))]
        assert shared and all(scrapes[0][k] == scrapes[1].get(k) for k in shared)
        counter_files = sorted(p.name for p in (settings.data_dir / "prometheus").glob("counter_*.db"))
        assert counter_files == ["counter_slot0.db", "counter_slot1.db", "counter_slot2.db"]
        for api in apis:
            await api.aclose()
    finally:
        for process, _ in processes:
            stop(process, signal.SIGTERM)

    api_lines = json_lines(logs[0]) + json_lines(logs[1])
    worker_lines = json_lines(logs[2]) + json_lines(logs[3])
    assert worker_lines and all(e.get("worker_id") for e in worker_lines if e["logger"] == "onebox.lifecycle")
    for n, instance_id in enumerate(ids):
        for request_id in (f"create-{n}", f"delete-{n}"):
            in_api = [e for e in api_lines if e.get("request_id") == request_id and e.get("instance_id") == instance_id]
            in_worker = [e for e in worker_lines
                         if e.get("request_id") == request_id and e.get("instance_id") == instance_id]
            assert in_api, (request_id, "API")
            assert in_worker, (request_id, "worker")
        access = [e for e in api_lines if e["logger"] == "uvicorn.access" and e.get("request_id") == f"delete-{n}"]
        assert [e.get("instance_id") for e in access] == [instance_id], "the access line names the instance"
        steps = {e.get("step") for e in worker_lines if e.get("request_id") == f"create-{n}"}
        assert set(STEPS) <= steps
    assert not any("Traceback" in e.get("exc", "") for e in worker_lines)
