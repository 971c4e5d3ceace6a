"""The QA runs API through the real app and database: validation, ownership, one run per instance (race-safe),
cancelling, the run's event stream, baselines and suites. No instance is really tested here (test_qa_local.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest

from app.clock import utcnow
from app.ids import new_instance_id, new_qa_run_id

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVh9k3YgCz0m3b0nB2H0q8q3oH9u3Xl0VvS1r7Jm1xY alice@laptop"


async def instance(services, owner: str = "alice", status: str = "running", configured: bool = True) -> str:
    """A record like a running local instance's; its "VM" (127.0.0.1, port 1) refuses every connection."""
    instance_id = new_instance_id()
    now = utcnow()
    await services.db.instances.insert_one({
        "_id": instance_id, "owner": owner, "name": "box", "provider": "local", "region": "local", "zone": "local",
        "machine_type": "local", "image": None, "snapshot_id": None, "disk_gb": 20, "ssh_user": "alice",
        "ssh_public_key": SSH_KEY, "labels": {}, "status": status, "error": None, "public_ip": "127.0.0.1",
        "private_ip": "127.0.0.1", "ssh_port": 1, "created_at": now, "updated_at": now, "job": None,
        **({"ssh_host_keys": ["[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVh9k3YgCz0m3b0nB2H0q8q3oH9u3Xl0VvS1r7Jm1xY"]}
           if configured else {})})
    return instance_id


async def post(api, headers, suite="cpu", instances=(), **extra):
    return await api.post("/v1/qa-runs", json={"suite": suite, "instances": list(instances), **extra}, headers=headers)


class TestValidation:
    @pytest.mark.parametrize("body,field", [
        ({"suite": "benchmark", "instances": ["i-x"]}, "suite"),
        ({"suite": "cpu", "instances": []}, "instances"),
        ({"suite": "cpu", "instances": ["i-x"], "owner": "bob"}, "owner"),
        ({"suite": "cpu", "instances": ["i-x"], "params": {"cpu_seconds": 0}}, "params.cpu_seconds"),
        ({"suite": "cpu", "instances": ["i-x"], "params": {"duration_seconds": 5}}, "params.duration_seconds"),
        ({"suite": "disk", "instances": ["i-x"], "params": {"block_sizes": ["3k"]}}, "params.block_sizes"),
        ({"suite": "network", "instances": ["i-a", "i-b", "i-c"]}, "instances"),
        ({"suite": "cpu", "instances": ["i-a", "i-a"]}, "instances"),
    ])
    async def test_bad_input_names_the_field_and_stores_nothing(self, api, mint, services, body, field):
        response = await api.post("/v1/qa-runs", json=body, headers=mint())
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in response.json()["errors"]], response.json()
        assert await services.db.qa_runs.count_documents({}) == 0
        assert await services.db.qa_locks.count_documents({}) == 0

    async def test_suites_describe_checks_and_params(self, api, mint):
        suites = {s["name"]: s for s in (await api.get("/v1/qa-suites", headers=mint())).json()}
        assert set(suites) == {"smoke", "network", "disk", "cpu", "memory", "gpu"}
        assert suites["network"]["max_instances"] == 2
        tcp = next(c for c in suites["network"]["checks"] if c["name"] == "tcp_mbps")
        assert tcp["unit"] == "Mbit/s" and tcp["better"] == "higher" and tcp["auto_baseline"]
        assert {p["name"]: p["default"] for p in suites["disk"]["params"]}["block_sizes"] == ["4k", "64k", "1m"]


class TestWhichInstances:
    async def test_anonymous_and_someone_elses(self, api, mint, services):
        theirs = await instance(services, owner="carol")
        assert (await post(api, {}, instances=[theirs])).status_code == 401
        refused = await post(api, mint("alice"), instances=[theirs])
        assert refused.status_code == 404 and refused.json()["code"] == "not_found"
        assert (await post(api, mint("root", admin=True), instances=[theirs])).status_code == 404, \
            "not even an admin runs a QA suite on someone else's VM"

    @pytest.mark.parametrize("status", ["pending", "configuring", "stopped", "failed", "deleted"])
    async def test_not_running_is_409(self, api, mint, services, status):
        mine = await instance(services, status=status)
        refused = await post(api, mint(), instances=[mine])
        assert refused.status_code == 409 and refused.json()["code"] == "instance_not_running"
        assert refused.json()["current_status"] == status and refused.json()["errors"][0]["field"] == "instances.0"

    async def test_being_deleted_is_409(self, api, mint, services):
        mine = await instance(services)
        assert (await api.delete(f"/v1/instances/{mine}", headers=mint())).status_code == 202
        refused = await post(api, mint(), instances=[mine])
        assert refused.status_code == 409 and refused.json()["current_status"] == "deleting"

    async def test_never_configured_is_409(self, api, mint, services):
        mine = await instance(services, configured=False)
        refused = await post(api, mint(), instances=[mine])
        assert refused.status_code == 409 and refused.json()["code"] == "instance_not_configured"


class TestOneRunPerInstance:
    async def test_racing_requests_get_one_run(self, api, mint, services):
        a, b = await instance(services), await instance(services)
        answers = await asyncio.gather(*(post(api, mint(), "network", [a, b] if n % 2 else [b, a]) for n in range(10)))
        assert sorted(r.status_code for r in answers) == [202] + [409] * 9
        [winner] = [r.json() for r in answers if r.status_code == 202]
        assert await services.db.qa_runs.count_documents({}) == 1
        locks = {d["_id"]: d["run_id"] async for d in services.db.qa_locks.find({})}
        assert locks == {a: winner["id"], b: winner["id"]}, "a loser gave back the locks it took"
        busy = [r.json() for r in answers if r.status_code == 409]
        assert {b["code"] for b in busy} == {"qa_run_in_progress"}
        assert winner["id"] in {b["run_id"] for b in busy}, "a refusal names the run holding the instance"
        # one of the two is free for nobody else either
        assert (await post(api, mint(), "smoke", [a])).status_code == 409

    async def test_stale_locks_are_taken_over(self, api, mint, services):
        a, b = await instance(services), await instance(services)
        old = utcnow() - dt.timedelta(minutes=5)
        # a's lock names a run that was never stored (the API died between the writes): stale once old
        await services.db.qa_locks.insert_one({"_id": a, "run_id": new_qa_run_id(), "at": old})
        # b's lock names a run that ended
        ended = new_qa_run_id()
        await services.db.qa_runs.insert_one({"_id": ended, "owner": "alice", "status": "passed", "job": None})
        await services.db.qa_locks.insert_one({"_id": b, "run_id": ended, "at": old})
        created = await post(api, mint(), "network", [a, b])
        assert created.status_code == 202, created.text
        locks = {d["_id"]: d["run_id"] async for d in services.db.qa_locks.find({})}
        assert locks == {a: created.json()["id"], b: created.json()["id"]}
        # a fresh lock of a run being stored right now is respected
        c = await instance(services)
        await services.db.qa_locks.insert_one({"_id": c, "run_id": new_qa_run_id(), "at": utcnow()})
        assert (await post(api, mint(), "smoke", [c])).status_code == 409


class TestCancel:
    async def test_cancel_before_a_worker_took_it(self, api, mint, services, worker):
        mine = await instance(services)
        run = (await post(api, mint(), "cpu", [mine], params={"cpu_seconds": 1})).json()
        cancelled = await api.delete(f"/v1/qa-runs/{run['id']}", headers=mint())
        assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"]
        again = await api.delete(f"/v1/qa-runs/{run['id']}", headers=mint())
        assert again.status_code == 409 and again.json()["code"] == "already_cancelling"
        assert (await api.delete(f"/v1/qa-runs/{run['id']}", headers=mint("bob"))).status_code == 404
        # the stream follows it to its end
        lines, last_id = [], None
        for _ in range(60):  # the test settings end a stream after 1 s: reconnect with Last-Event-ID, as clients do
            headers = {**mint(), **({"Last-Event-ID": last_id} if last_id else {})}
            async with api.stream("GET", f"/v1/qa-runs/{run['id']}/events/stream", headers=headers) as stream:
                assert stream.status_code == 200
                async for line in stream.aiter_lines():
                    lines.append(line)
                    if line.startswith("id: "):
                        last_id = line[4:]
            if "event: end" in lines:
                break
        messages = [line for line in lines if line.startswith("event: ")]
        assert messages[0] == "event: status" and messages[-1] == "event: end"
        qa_events = [json.loads(line[6:])["type"] for line in lines if line.startswith("data: ") and '"type"' in line]
        assert qa_events[0] == "qa.requested" and qa_events[-2:] == ["qa.finished", "status"]
        assert len(qa_events) == len(set((e, i) for i, e in enumerate(qa_events))), "each event once"
        done = (await api.get(f"/v1/qa-runs/{run['id']}", headers=mint())).json()
        assert done["status"] == "cancelled" and done["error"]["code"] == "cancelled"
        assert await services.db.qa_locks.count_documents({}) == 0, "the instance is free again"
        events = [e["type"] for e in (await api.get(f"/v1/qa-runs/{run['id']}/events", headers=mint())).json()]
        assert events[0] == "qa.requested" and "qa.cancel_requested" in events and events[-2] == "qa.finished"
        assert (await api.delete(f"/v1/qa-runs/{run['id']}", headers=mint())).json()["code"] == "qa_run_finished"
        listed = (await api.get("/v1/qa-runs", params={"status": "cancelled"}, headers=mint())).json()["items"]
        assert [r["id"] for r in listed] == [run["id"]]
        assert (await api.get("/v1/qa-runs", headers=mint("bob"))).json()["items"] == []
        # its report exists, with nothing measured
        report = await api.get(f"/v1/qa-runs/{run['id']}/report", headers=mint())
        assert report.status_code == 200 and "cancelled" in report.text
        bad = await api.get(f"/v1/qa-runs/{run['id']}/report", params={"format": "png", "chart": "iops"},
                            headers=mint())
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "chart"


    async def test_deleting_an_instance_cancels_its_run_by_rule(self, api, mint, services, worker):
        mine = await instance(services)
        run = (await post(api, mint(), "cpu", [mine], params={"cpu_seconds": 1})).json()
        assert (await api.delete(f"/v1/instances/{mine}", headers=mint())).status_code == 202
        for _ in range(600):
            done = (await api.get(f"/v1/qa-runs/{run['id']}", headers=mint())).json()
            if done["status"] in ("cancelled", "error", "passed", "failed"):
                break
            await asyncio.sleep(0.1)
        assert done["status"] == "cancelled" and done["error"]["message"] == f"cancelled: {mine} is being deleted"
        events = [e["type"] for e in (await api.get(f"/v1/qa-runs/{run['id']}/events", headers=mint())).json()]
        assert "qa.auto_cancelled" in events
        audit = (await api.get("/v1/admin/audit", headers=mint("root", admin=True))).json()
        assert any(a["action"] == "qa_run.cancel" and a["actor"] == "qa" and a["role"] == "system" for a in audit)
        record = await services.db.audit.find_one({"action": "qa_run.cancel", "target_id": run["id"]})
        assert record["detail"] == {"rule": "instance_being_deleted", "instances": mine}
        assert await services.db.qa_locks.count_documents({}) == 0


class TestBaselines:
    async def test_admins_set_list_and_remove(self, api, mint, services):
        admin = mint("root", admin=True)
        path = "/v1/admin/qa-baselines/network/tcp_mbps/aws/c6i.large"
        assert (await api.put(path, json={"value": 9000}, headers=mint())).status_code == 403
        set_ = await api.put(path, json={"value": 9000}, headers=admin)
        assert set_.status_code == 200 and set_.json()["tolerance_percent"] == 25.0, "the check's own tolerance"
        listed = (await api.get("/v1/admin/qa-baselines", headers=admin)).json()
        assert [(b["check"], b["machine_type"], b["value"], b["set_by"]) for b in listed] == \
            [("tcp_mbps", "c6i.large", 9000.0, "root")]
        audit = (await api.get("/v1/admin/audit", headers=admin)).json()
        assert audit[0]["action"] == "qa_baseline.set"
        assert (await api.delete(path, headers=admin)).status_code == 204
        assert (await api.delete(path, headers=admin)).status_code == 404

    @pytest.mark.parametrize("path,field", [
        ("/v1/admin/qa-baselines/smoke/python/local/local", "check"),
        ("/v1/admin/qa-baselines/cpu/no_such_check/local/local", "check"),
        ("/v1/admin/qa-baselines/cpu/cpu_all_events_s/openstack/x", "provider"),
    ])
    async def test_bad_baselines(self, api, mint, path, field):
        response = await api.put(path, json={"value": 1}, headers=mint("root", admin=True))
        assert response.status_code == 422 and field in [e["field"] for e in response.json()["errors"]]
        response = await api.put("/v1/admin/qa-baselines/cpu/cpu_all_events_s/local/local", json={"value": -1},
                                 headers=mint("root", admin=True))
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "value"

    async def test_history_of_an_unknown_check(self, api, mint):
        response = await api.get("/v1/qa-history", params={"suite": "cpu", "check": "tcp_mbps"}, headers=mint())
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "check"


class TestHistory:
    async def _results(self, services, machine: str, values: list[float], status: str = "passed", owner="alice",
                       after: int = 0):
        start = utcnow() - dt.timedelta(days=1) + dt.timedelta(minutes=after)
        ids = []
        for n, value in enumerate(values):
            run_id = new_qa_run_id()
            ids.append(run_id)
            await services.db.qa_results.insert_one({
                "_id": f"{run_id}|i-x|cpu_all_events_s|", "run_id": run_id, "owner": owner, "suite": "cpu",
                "check": "cpu_all_events_s", "instance_id": "i-x", "target": None, "provider": "aws",
                "region": "us-east-1", "machine_type": machine, "image": "ubuntu-24.04", "value": value,
                "unit": "events/s", "verdict": "pass" if status == "passed" else "fail", "run_status": status,
                "comparable": True, "at": start + dt.timedelta(minutes=n)})
        return ids

    async def test_the_derived_baseline_is_the_median_of_the_latest_passed_runs(self, api, mint, services):
        await self._results(services, "c6i.large", [1.0, 100.0, 110.0, 5000.0, 90.0, 95.0])  # oldest first
        await self._results(services, "c6i.large", [10.0], status="failed", after=30)
        await self._results(services, "m7i.large", [200.0, 210.0])  # too few runs for a baseline
        await self._results(services, "c6i.large", [7.0], owner="bob", after=20)  # others' runs count for baselines
        history = (await api.get("/v1/qa-history", params={"suite": "cpu", "check": "cpu_all_events_s",
                                                           "provider": "aws"}, headers=mint())).json()
        assert [i["value"] for i in history["items"]][:3] == [10.0, 95.0, 90.0], "newest first, failed runs shown"
        assert all(i["value"] != 7.0 for i in history["items"]), "but only your own runs"
        # the latest 5 passed runs: 7 (bob's), 95, 90, 5000, 110 → median 95; the oldest two fall out
        assert history["baselines"] == [{"provider": "aws", "machine_type": "c6i.large", "value": 95.0,
                                         "tolerance_percent": 15.0, "source": "history", "samples": 5}]
        # an admin's baseline wins
        admin = mint("root", admin=True)
        await api.put("/v1/admin/qa-baselines/cpu/cpu_all_events_s/aws/m7i.large", json={"value": 250,
                                                                                          "tolerance_percent": 5},
                      headers=admin)
        history = (await api.get("/v1/qa-history", params={"suite": "cpu", "check": "cpu_all_events_s"},
                                 headers=mint())).json()
        assert [(b["machine_type"], b["source"], b["value"]) for b in history["baselines"]] == \
            [("c6i.large", "history", 95.0), ("m7i.large", "admin", 250.0)]
        for by in ("time", "machine"):
            chart = await api.get("/v1/qa-history/chart", params={"suite": "cpu", "check": "cpu_all_events_s",
                                                                  "by": by}, headers=mint())
            assert chart.status_code == 200 and chart.content.startswith(b"\x89PNG") and len(chart.content) > 10_000
