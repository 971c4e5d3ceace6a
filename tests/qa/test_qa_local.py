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
    listed = await api.get("/v1/qa-runs", params={"instance_id": pending["id"]}, headers=headers)
    assert listed.json()["items"] == [], "nothing was stored"


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


async def test_qa_page_in_the_browser(qa_env):
    """The dashboard's QA page in Debian's Chromium: start a run from the form, watch it live, its results and
    charts; the runs list with verdicts; a comparison with the baseline drawn. Screenshots under .artifacts/web/."""
    import re

    from playwright.async_api import expect

    from tests.web.test_dashboard import ARTIFACTS, SECONDS, browser_page, without_expected

    api, admin = qa_env.api, qa_env.admin
    await api.put("/v1/admin/qa-baselines/cpu/cpu_all_events_s/local/local", json={"value": 1, "tolerance_percent": 50},
                  headers=admin)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with browser_page(None) as (page, problems):
        await page.goto(qa_env.settings.public_url + "/")
        await page.fill("#token", qa_env.headers["Authorization"].split()[1])
        await page.click("#sign-in")
        await page.wait_for_selector("#instances")
        await page.click("[data-nav=qa]")
        await page.wait_for_selector("#qa-runs tbody tr")

        # the form refuses a run without instances, under the field
        await page.click("#qa-new")
        await page.select_option("#qa-suite", "cpu")
        await page.click("#qa-start")
        await expect(page.locator(".field[data-field=instances] .field-error")).to_contain_text("at least 1 item")
        # then starts one
        await page.check(f"#qa-instances input[value='{qa_env.a['id']}']")
        await page.fill("#qa-param-cpu_seconds", "1")
        await page.click("#qa-start")
        await page.wait_for_url(re.compile(r"#/qa/q-"))
        await expect(page.locator("#qa-live-state")).to_have_text(re.compile("live|ended"), timeout=20 * SECONDS)
        await expect(page.locator("h1 .badge")).to_have_text("passed", timeout=180 * SECONDS)
        await expect(page.locator("#qa-live-state")).to_have_text("ended (passed)")
        await expect(page.locator("#qa-results tr[data-verdict=pass]")).to_have_count(2)
        baseline_cell = page.locator("#qa-results tr[data-check=cpu_all_events_s] td").nth(4)
        await expect(baseline_cell).to_have_text("1.00 events/s ±50%")
        await expect(page.locator("#qa-timeline [data-type='qa.finished']")).to_have_count(1)
        await expect(page.locator("#qa-charts img[src^='data:image/png']")).to_have_count(2, timeout=60 * SECONDS)
        await page.screenshot(path=str(ARTIFACTS / "qa-run.png"), full_page=True)

        run_id = page.url.rsplit("/", 1)[1]
        # the list shows it with its verdicts, and a comparison over time with the admin's baseline in its table
        await page.click("[data-nav=qa]")
        row = page.locator(f"#qa-runs tr[data-id='{run_id}']")
        await expect(row.locator(".badge")).to_have_text("passed")
        await expect(row.locator(".verdict-pass")).to_have_text("2 pass")
        await page.select_option("#qa-compare-suite", "cpu")
        await page.select_option("#qa-compare-check", "cpu_all_events_s")
        await expect(page.locator("#qa-compare-chart img[src^='data:image/png']")).to_have_count(1, timeout=60 * SECONDS)
        await expect(page.locator("#qa-baselines tr[data-machine=local]")).to_contain_text("set by an admin")
        await page.select_option("#qa-compare-by", "machine")
        await expect(page.locator("#qa-compare-chart img[src^='data:image/png']")).to_have_count(1, timeout=60 * SECONDS)
        await page.screenshot(path=str(ARTIFACTS / "qa-runs.png"), full_page=True)
        assert without_expected(problems, 422) == [], problems
    await api.delete("/v1/admin/qa-baselines/cpu/cpu_all_events_s/local/local", headers=admin)
    print(f"\nscreenshots: {ARTIFACTS / 'qa-run.png'} {ARTIFACTS / 'qa-runs.png'}")


async def test_a_worker_killed_mid_run_is_replaced_and_the_run_passes(qa_env, tmp_path):
    """The crash drill: a worker dies by SIGKILL right after a benchmark step's work, before it is recorded; the
    next worker runs that step again from a clean slate and the run ends as if nothing happened."""
    import asyncio
    import signal
    import time

    from tests.e2e.test_workers import start_worker, stop

    params = {"duration_seconds": 1, "parallel_streams": 1, "udp_target_mbps": 10, "latency_samples": 3}
    await asyncio.to_thread(qa_env.server.stop_worker)
    try:
        run = await qa_env.start("network", [qa_env.a["id"], qa_env.b["id"]], params)
        log = tmp_path / "victim.log"
        victim = start_worker(qa_env.settings, log, ONEBOX_TEST_KILL_AT="network_tcp")
        deadline = time.monotonic() + 240
        try:
            while victim.poll() is None:
                assert time.monotonic() < deadline, "the worker never reached network_tcp"
                await asyncio.sleep(0.2)
        finally:
            stop(victim, signal.SIGKILL)
        assert victim.returncode == -signal.SIGKILL and "ONEBOX_TEST_KILL_AT=network_tcp" in log.read_text()
    finally:
        await asyncio.to_thread(qa_env.server.start_worker)
    done = await qa_env.wait(run["id"])
    await qa_env.expect(done, "passed")
    assert [r["check"] for r in done["results"]].count("tcp_mbps") == 1, "the step's results, once"
    started = [e for e in await qa_env.events(run["id"]) if e["type"] == "step.started" and e["step"] == "network_tcp"]
    assert len(started) == 2, "network_tcp ran again on the second worker"
    assert marked_processes(run["id"]) == []
    for instance in (qa_env.a, qa_env.b):
        assert not run_dirs(qa_env.settings, instance["id"], run["id"]).exists()


# --- the CLI, as CI runs it ----------------------------------------------------------------------------

def cli_env(qa_env, tmp_path) -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBOX_")}
    return {**env, "HOME": str(tmp_path), "NO_COLOR": "1", "COLUMNS": "200", "ONEBOX_URL": qa_env.settings.public_url,
            "ONEBOX_TOKEN": qa_env.headers["Authorization"].split()[1]}


def onebox(*args: str, env: dict, timeout: float = 600):
    import subprocess

    from tests.client.conftest import ONEBOX

    return subprocess.run([str(ONEBOX), *args], env=env, capture_output=True, text=True, timeout=timeout)


async def test_cli_provisions_runs_reports_and_tears_down(qa_env, tmp_path):
    """`onebox qa run` with no instance: it makes one, runs the suite, writes JUnit XML and the report, deletes it."""
    import asyncio
    from xml.etree import ElementTree

    env = cli_env(qa_env, tmp_path)
    done = await asyncio.to_thread(onebox, "qa", "run", "--suite", "smoke", "--provider", "local",
                                   "--ssh-user", "alice", "--junit", str(tmp_path / "qa.xml"),
                                   "--report", str(tmp_path / "report"), env=env)
    assert done.returncode == 0, done.stderr
    assert "accepted: local/local/local" in done.stderr and "pass  python" in done.stderr
    assert "smoke run q-" in done.stdout and "passed" in done.stdout
    suite = ElementTree.parse(tmp_path / "qa.xml").getroot().find("testsuite")
    assert suite.get("name") == "onebox-qa.smoke" and suite.get("failures") == "0" and int(suite.get("tests")) == 6
    report = tmp_path / "report"
    assert {p.name for p in report.iterdir()} >= {"report.html", "checks.png", "run.json", "junit.xml"}
    run = __import__("json").loads((report / "run.json").read_text())
    assert run["status"] == "passed"
    made = run["targets"][0]["instance_id"]
    instance = (await qa_env.api.get(f"/v1/instances/{made}", headers=qa_env.headers)).json()
    assert instance["status"] in ("deleting", "deleted") and instance["labels"] == {"purpose": "qa"}


async def test_cli_exit_code_says_a_check_failed(qa_env, tmp_path):
    import asyncio

    path = "/v1/admin/qa-baselines/memory/mem_copy_single_mb_s/local/local"
    await qa_env.api.put(path, json={"value": 1e9}, headers=qa_env.admin)
    try:
        done = await asyncio.to_thread(onebox, "qa", "run", "--suite", "memory", "--instance", "qa-a",
                                       "--param", "memory_seconds=1", "--param", "block_mb=8",
                                       "--junit", str(tmp_path / "out" / "qa.xml"), env=cli_env(qa_env, tmp_path))
    finally:
        await qa_env.api.delete(path, headers=qa_env.admin)
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert "fail  mem_copy_single_mb_s" in done.stdout and "memory run q-" in done.stderr
    assert 'failures="1"' in (tmp_path / "out" / "qa.xml").read_text()
    assert (await qa_env.api.get(f"/v1/instances/{qa_env.a['id']}", headers=qa_env.headers)).json()["status"] == \
        "running", "instances it did not make are never torn down"


async def test_cli_interrupted_while_provisioning_deletes_what_it_made(qa_env, tmp_path):
    import asyncio
    import signal
    import subprocess
    import time

    from tests.client.conftest import ONEBOX, Reader

    proc = subprocess.Popen([str(ONEBOX), "qa", "run", "--suite", "cpu", "--provider", "local", "--ssh-user", "alice"],
                            env=cli_env(qa_env, tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = Reader(proc.stderr)
    line = await asyncio.to_thread(err.wait_for, "accepted", 120)
    instance_id = line.split("(")[1].split(")")[0]
    proc.send_signal(signal.SIGTERM)  # a CI job cancelled
    code = await asyncio.to_thread(proc.wait, 120)
    assert code == 130, err.text
    assert f"deleting qa-cpu-" in err.text and "interrupted" in err.text
    deadline = time.monotonic() + 120
    while True:
        status = (await qa_env.api.get(f"/v1/instances/{instance_id}", headers=qa_env.headers)).json()["status"]
        if status == "deleted" or time.monotonic() > deadline + 120:
            break
        await asyncio.sleep(0.5)
    assert status == "deleted"
