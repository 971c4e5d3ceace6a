"""The QA suites for real on the local provider: real iperf3, fio and sysbench (installed by `make`), run over
SSH on two configured local instances, parsed into stored results, judged, reported, cleaned up."""

from __future__ import annotations

import pytest

from tests.qa.conftest import marked_processes, run_dirs

pytestmark = pytest.mark.slow


async def test_smoke_passes(qa_env):
    run = await qa_env.run("smoke", [qa_env.a["id"]])
    await qa_env.expect(run, "passed")
    verdicts = {r["check"]: r["verdict"] for r in run["results"]}
    assert verdicts == {"ssh_reachable": "pass", "sudo": "skip", "python": "pass", "agent_reporting": "pass",
                        "bootstrap_exit": "pass", "bucket_mounts": "skip"}
    assert run["summary"] == {"pass": 4, "skip": 2}
    assert run["targets"][0]["provider"] == "local" and run["targets"][0]["machine_type"] == "local"
    assert marked_processes(run["id"]) == []
    assert not run_dirs(qa_env.settings, qa_env.a["id"], run["id"]).exists(), "the run's directory is removed"


async def test_network_between_two_local_instances(qa_env, monkeypatch):
    monkeypatch.setattr(qa_env.settings, "qa_install", "always")  # the qa_tools role runs, over both instances
    params = {"duration_seconds": 2, "parallel_streams": 2, "udp_target_mbps": 20, "latency_samples": 5}
    run = await qa_env.run("network", [qa_env.a["id"], qa_env.b["id"]], params)
    await qa_env.expect(run, "passed")
    tasks = [e["message"] for e in await qa_env.events(run["id"]) if e["type"].startswith("ansible.")]
    for instance in (qa_env.a, qa_env.b):
        assert f"ok: QA tools are present (local instance) ({instance['id']})" in tasks, tasks
    by_check = {(r["check"], r["target"]): r for r in run["results"]}
    for check in ("tcp_mbps", "tcp_reverse_mbps"):
        result = by_check[(check, None)]
        assert result["unit"] == "Mbit/s" and 1 < result["value"] < 10_000_000, "positive and plausible"
        streams = result["details"]["streams"]
        assert len(streams) == 2 and all(len(s["seconds"]) == len(s["mbps"]) >= 2 for s in streams), \
            "per-stream series, 1 s apart"
        assert all(mbps > 0 for s in streams for mbps in s["mbps"])
    assert by_check[("tcp_mbps", None)]["details"]["direction"] == f"{qa_env.a['id']} → {qa_env.b['id']}"
    assert by_check[("tcp_reverse_mbps", None)]["details"]["direction"] == f"{qa_env.b['id']} → {qa_env.a['id']}"
    assert by_check[("tcp_retransmits", "forward")]["value"] >= 0
    udp = by_check[("udp_jitter_ms", None)]
    assert udp["value"] >= 0 and udp["details"]["mbps"] == pytest.approx(20, rel=0.25)
    assert 0 <= by_check[("udp_loss_percent", None)]["value"] <= 100
    p50, p99 = by_check[("latency_p50_ms", None)], by_check[("latency_p99_ms", None)]
    assert 0 < p50["value"] <= p99["value"] < 1000
    assert p50["details"]["target"] == f"{qa_env.b['public_ip']}:2222"
    events = [e["message"] for e in await qa_env.events(run["id"])]
    assert any("iperf3 server on" in m and "for the run only (RSA credentials)" in m for m in events), events
    assert marked_processes(run["id"]) == [], "no iperf3 is left listening"
    for instance in (qa_env.a, qa_env.b):
        assert not run_dirs(qa_env.settings, instance["id"], run["id"]).exists()
    # the report's charts are real PNGs drawn from these results
    png = await qa_env.api.get(f"/v1/qa-runs/{run['id']}/report", params={"format": "png", "chart": "throughput"},
                               headers=qa_env.headers)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG") and len(png.content) > 10_000


async def test_network_against_onebox_host(qa_env):
    params = {"duration_seconds": 1, "parallel_streams": 1, "udp_target_mbps": 10, "latency_samples": 3}
    run = await qa_env.run("network", [qa_env.b["id"]], params)
    await qa_env.expect(run, "passed")
    tcp = next(r for r in run["results"] if r["check"] == "tcp_mbps")
    assert tcp["target"] == "onebox-host" and tcp["value"] > 1 and tcp["baseline"] is None
    assert "not compared with a baseline" in tcp["message"]
    assert marked_processes(run["id"]) == []


async def test_disk_reports_iops_and_mb_s(qa_env):
    params = {"runtime_seconds": 1, "size_mb": 16, "block_sizes": ["4k", "64k"]}
    run = await qa_env.run("disk", [qa_env.a["id"]], params)
    await qa_env.expect(run, "passed")
    values = {r["check"]: r for r in run["results"]}
    for check, unit in (("seq_write_mb_s", "MB/s"), ("seq_read_mb_s", "MB/s"), ("rand_read_iops", "IOPS"),
                        ("rand_write_iops", "IOPS")):
        assert values[check]["value"] > 0 and values[check]["unit"] == unit, values[check]
    assert 0 < values["rand_read_p99_ms"]["value"] < 10_000
    assert set(values["rand_read_iops"]["details"]["iops_by_block_size"]) == {"4k", "64k"}
    assert values["mount_write_mb_s"]["verdict"] == "skip" and "no bucket mounts" in values["mount_write_mb_s"]["message"]
    events = [e["message"] for e in await qa_env.events(run["id"])]
    assert "fio already installed: nothing to install" in events and not any("task:" in m for m in events)
    assert marked_processes(run["id"]) == []
    assert not run_dirs(qa_env.settings, qa_env.a["id"], run["id"]).exists(), "the fio file went with the run"


async def test_a_baseline_above_the_measured_value_fails_the_run(qa_env):
    api, admin = qa_env.api, qa_env.admin
    path = "/v1/admin/qa-baselines/cpu/cpu_single_events_s/local/local"
    assert (await api.put(path, json={"value": 1e9}, headers=qa_env.headers)).status_code == 403, "admins only"
    put = await api.put(path, json={"value": 1e9, "tolerance_percent": 10}, headers=admin)
    assert put.status_code == 200, put.text
    try:
        run = await qa_env.run("cpu", [qa_env.a["id"]], {"cpu_seconds": 1})
        await qa_env.expect(run, "failed")
        single = next(r for r in run["results"] if r["check"] == "cpu_single_events_s")
        assert single["verdict"] == "fail" and single["value"] > 0
        assert single["baseline"] == {"value": 1e9, "tolerance_percent": 10.0, "source": "admin", "samples": 0}
        assert "below the baseline 1,000,000,000 events/s (set by an admin, tolerance 10%)" in single["message"]
        every = next(r for r in run["results"] if r["check"] == "cpu_all_events_s")
        assert every["verdict"] == "pass" and every["details"]["threads"] >= 1, "no baseline there"
        # the report says so, in HTML and in JUnit XML
        report = await api.get(f"/v1/qa-runs/{run['id']}/report", headers=qa_env.headers)
        assert report.status_code == 200 and "text/html" in report.headers["content-type"]
        assert "cpu_single_events_s" in report.text and "data:image/png;base64," in report.text
        assert "default-src 'none'" in report.headers["content-security-policy"]
        archive = await api.get(f"/v1/qa-runs/{run['id']}/report", params={"format": "zip"}, headers=qa_env.headers)
        import io
        import zipfile
        from xml.etree import ElementTree

        names = zipfile.ZipFile(io.BytesIO(archive.content)).namelist()
        assert {"report.html", "run.json", "junit.xml", "checks.png", "trend.png"} <= set(names)
        junit = ElementTree.fromstring(zipfile.ZipFile(io.BytesIO(archive.content)).read("junit.xml"))
        suite = junit.find("testsuite")
        assert suite.get("failures") == "1" and suite.get("tests") == "2"
        failed = [c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None]
        assert failed == ["cpu_single_events_s"]
    finally:
        assert (await api.delete(path, headers=admin)).status_code == 204


async def test_memory_and_gpu(qa_env):
    memory = await qa_env.run("memory", [qa_env.b["id"]], {"memory_seconds": 1, "block_mb": 8})
    await qa_env.expect(memory, "passed")
    assert all(r["value"] > 100 and r["unit"] == "MB/s" for r in memory["results"]), memory["results"]
    gpu = await qa_env.run("gpu", [qa_env.b["id"]], {"gpu_seconds": 5})
    await qa_env.expect(gpu, "passed")
    assert {r["verdict"] for r in gpu["results"]} == {"skip"}
    assert all("machine type local has no GPUs" in r["message"] for r in gpu["results"])


async def test_a_run_on_an_instance_that_is_not_running_is_refused(qa_env, ssh_keypair):
    from tests.api.helpers import instance_body, wait_status

    api, headers = qa_env.api, qa_env.headers
    pending = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="qa-c"),
                              headers=headers)).json()
    refused = await api.post("/v1/qa-runs", json={"suite": "smoke", "instances": [pending["id"]]}, headers=headers)
    assert refused.status_code == 409 and refused.json()["code"] == "instance_not_running", refused.text
    assert refused.json()["errors"][0]["field"] == "instances.0"
    assert (await api.delete(f"/v1/instances/{pending['id']}", headers=headers)).status_code == 202
    gone = await wait_status(api, f"/v1/instances/{pending['id']}", headers, {"deleted"}, 120)
    refused = await api.post("/v1/qa-runs", json={"suite": "smoke", "instances": [gone["id"]]}, headers=headers)
    assert refused.status_code == 409 and refused.json()["current_status"] == "deleted"
    assert await qa_env.svc.db.qa_runs.count_documents({"instances": pending["id"]}) == 0


@pytest.mark.parametrize("suite,params,tool", [
    ("disk", {"runtime_seconds": 60, "size_mb": 16, "block_sizes": ["4k"]}, "fio"),
    ("network", {"duration_seconds": 60, "parallel_streams": 1}, "iperf3"),
])
async def test_cancel_mid_run_leaves_no_process_and_no_file(qa_env, suite, params, tool):
    import asyncio
    import time

    instances = [qa_env.a["id"], qa_env.b["id"]] if suite == "network" else [qa_env.a["id"]]
    # a run from the previous test may still hold instance B: wait for the instances to be free
    deadline = time.monotonic() + 120
    while True:
        response = await qa_env.api.post("/v1/qa-runs", json={"suite": suite, "instances": instances, "params": params},
                                         headers=qa_env.headers)
        if response.status_code == 202 or time.monotonic() > deadline:
            break
        await asyncio.sleep(1)
    assert response.status_code == 202, response.text
    run = response.json()
    deadline = time.monotonic() + 180
    while not any(tool in p for p in marked_processes(run["id"])):
        assert time.monotonic() < deadline, f"{tool} never started: {await qa_env.events(run['id'])}"
        await asyncio.sleep(0.2)
    cancelled = await qa_env.api.delete(f"/v1/qa-runs/{run['id']}", headers=qa_env.headers)
    assert cancelled.status_code == 202 and cancelled.json()["cancel_requested"] is True
    again = await qa_env.api.delete(f"/v1/qa-runs/{run['id']}", headers=qa_env.headers)
    assert again.status_code == 409 and again.json()["code"] == "already_cancelling"
    started = time.monotonic()
    done = await qa_env.wait(run["id"], timeout=120)
    await qa_env.expect(done, "cancelled")
    assert time.monotonic() - started < 60, "the command in flight is stopped, not waited for"
    assert done["error"]["code"] == "cancelled"
    assert marked_processes(run["id"]) == [], f"no {tool} process is left"
    for instance_id in instances:
        assert not run_dirs(qa_env.settings, instance_id, run["id"]).exists()
    events = [e["type"] for e in await qa_env.events(run["id"])]
    assert "qa.cancel_requested" in events and "cleanup.succeeded" in events
    finished = await qa_env.api.delete(f"/v1/qa-runs/{run['id']}", headers=qa_env.headers)
    assert finished.status_code == 409 and finished.json()["code"] == "qa_run_finished"
