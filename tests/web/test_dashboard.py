"""The web dashboard in a real browser: Debian's Chromium driven by Playwright, against onebox on a real port
with the local provider, a real Ansible run and the real agent.

Screenshots of the list and detail pages are saved under ``.artifacts/web/`` (the path is printed); CI keeps
them as artifacts. Every wait is on a condition, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from app.settings import REPO_ROOT
from tests.conftest import make_settings
from tests.e2e.cloud_support import served_app
from tests.support import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO_ROOT / ".artifacts" / "web"
SECONDS = 1000  # Playwright counts milliseconds



def dashboard_settings(dbserver, tmp_path, **overrides):
    """The embedded-default shape (no ONEBOX_MONGODB_URL, so dev sign-in may be on), on the test's FerretDB."""
    values = {"public_url": f"http://127.0.0.1:{free_port()}", "dev_login": True, "events_stream_poll_seconds": 0.25,
              "events_stream_max_seconds": 300, **overrides}
    settings = make_settings(dbserver, tmp_path / "data", **values)
    return settings.model_copy(update={"mongodb_url": None, "embedded_db_address": dbserver.address})


@contextlib.asynccontextmanager
async def browser_page(tmp_path):
    from playwright.async_api import async_playwright

    if not CHROMIUM.exists():  # like the database: missing is a failure, never a silent skip
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (make test does)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = await browser.new_context(viewport={"width": 1400, "height": 1050})
        await context.grant_permissions(["clipboard-read", "clipboard-write"])
        page = await context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("console", lambda msg: problems.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("request", lambda req: problems.append(f"off-site request: {req.url}")
                if not req.url.startswith(("http://127.0.0.1", "data:")) else None)
        try:
            yield page, problems
        finally:
            await browser.close()


def without_expected(problems: list[str], *statuses: int) -> list[str]:
    """The problems left once the answers a test provokes on purpose (the browser logs each one) are removed."""
    return [p for p in problems if not any(f"status of {s} " in p for s in statuses)]


async def sign_in_with_dev_button(page, base_url: str) -> None:
    await page.goto(base_url + "/")
    await page.wait_for_url(re.compile(r"#/signin$"))
    await page.fill("#dev-user", "webtester")
    await page.click("#dev-login")
    await page.wait_for_selector("#instances")
    assert await page.inner_text("[data-testid=user]") == "webtester"


async def test_create_watch_snapshot_delete_in_the_browser(dbserver, tmp_path, ssh_keypair):
    from playwright.async_api import expect

    settings = dashboard_settings(dbserver, tmp_path, configure="ansible", agent_interval_seconds=2,
                                  configure_timeout_seconds=120)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with served_app(settings) as (api, svc), browser_page(tmp_path) as (page, problems):
        await sign_in_with_dev_button(page, settings.public_url)
        assert await page.locator("[data-nav=instances]").count() == 1, "the sidebar shows Instances (flag on)"

        # create through the form: its dropdowns come from GET /v1/catalog
        await page.click("#new-instance")
        await page.wait_for_selector("#create-form")
        assert await page.locator("#f-provider option").all_inner_texts() == ["local"]
        assert "1 vCPU" in await page.inner_text("#f-machine-type option")
        await page.fill("#f-name", "web-box")
        await page.fill("#f-ssh-user", "alice")
        await page.fill("#f-ssh-key", ssh_keypair.public)
        await page.fill("#f-labels", "team=web")
        await page.click("#create")
        await page.wait_for_url(re.compile(r"#/instances/i-"))
        instance_id = page.url.rsplit("/", 1)[1]

        # the live stream carries it to running, step by step
        await expect(page.locator("#live-state")).to_have_text("live", timeout=10 * SECONDS)
        await expect(page.locator("h1 .badge")).to_have_text("running", timeout=90 * SECONDS)
        await expect(page.locator("#timeline [data-type=status]").filter(has_text="configuring → running")) \
            .to_have_count(1)
        assert await page.locator("#live-state").inner_text() == "live", "no fallback to polling was needed"
        states = await page.locator("#stepper .step").evaluate_all("els => els.map(e => e.dataset.state)")
        assert states == ["done"] * 5, states
        await expect(page.locator("#public-ip .mono")).to_have_text(re.compile(r"^127\.0\.0\.\d+$"))
        assert re.search(r"ssh -p 2222 \S+@127\.0\.0\.\d+", await page.inner_text("#ssh-command"))
        # the real agent reports: a CPU value appears, and the CPU chart draws its line
        await expect(page.locator("#cpu-now")).to_have_text(re.compile(r"^\d+(\.\d)?%$"), timeout=30 * SECONDS)
        await expect(page.locator("[data-chart=cpu] path.series[d*=L]")).to_have_count(1, timeout=20 * SECONDS)
        await page.screenshot(path=str(ARTIFACTS / "instance-detail.png"), full_page=False)

        # day 2: stop and start it from its page; its lifecycle settings, refused past the policy, then saved
        assert await page.is_disabled("#start-button") and not await page.is_disabled("#stop-button")
        await page.click("#stop-button")
        await expect(page.locator("h1 .badge")).to_have_text("stopped", timeout=60 * SECONDS)
        await expect(page.locator("#stepper [data-step=stopped] .step-label")).to_have_text("Stopped")
        assert await page.is_disabled("#stop-button") and await page.is_disabled("#reboot-button")
        await expect(page.locator("#timeline [data-type=status]").filter(has_text="stopping → stopped")).to_have_count(1)
        await page.click("#start-button")
        await expect(page.locator("h1 .badge")).to_have_text("running", timeout=60 * SECONDS)
        admin = {"Authorization": f"Bearer {svc.tokens.mint('root', role='admin')}"}
        assert (await api.put("/v1/admin/policies/_default", json={"max_idle_minutes": 60},
                              headers=admin)).status_code == 200
        await page.fill("#l-ttl", "8")
        await page.fill("#l-idle", "90")
        await page.click("#lifecycle-save")
        await expect(page.locator("#l-idle-error")).to_have_text(re.compile("at most 60"))
        await page.fill("#l-idle", "45")
        await page.click("#lifecycle-save")
        await expect(page.locator("#schedule-idle")).to_have_text(re.compile("stop after 45 min idle"))
        await expect(page.locator("#schedule-ttl")).to_have_text(re.compile("stopped at"))
        saved = (await api.get(f"/v1/instances/{instance_id}", headers=admin)).json()
        assert (saved["ttl_seconds"], saved["idle_minutes"]) == (8 * 3600, 45)
        await page.locator("#lifecycle-card").scroll_into_view_if_needed()
        await page.screenshot(path=str(ARTIFACTS / "instance-lifecycle.png"), full_page=False)

        # the list shows it with its IP and CPU
        await page.click("[data-nav=instances]")
        row = page.locator(f"#instances tr[data-id='{instance_id}']")
        await expect(row.locator(".badge")).to_have_text("running")
        await expect(row.locator(".ip .mono")).to_have_text(re.compile(r"^127\.0\.0\.\d+$"))
        await expect(row.locator("[data-testid=cpu]")).to_have_text(re.compile(r"^\d+(\.\d)?%$"))
        await page.screenshot(path=str(ARTIFACTS / "instances-list.png"), full_page=False)

        # snapshot it
        await row.click()
        await page.click("#snapshot-button")
        snapshot = page.locator("#instance-snapshots tr")
        await expect(snapshot).to_have_count(1)
        await expect(snapshot.locator(".badge")).to_have_text("available", timeout=30 * SECONDS)

        # delete it, with confirmation
        await page.click("#delete-button")
        await expect(page.locator("#confirm-delete")).to_be_visible()
        await page.click("#confirm-delete-button")
        await expect(page.locator("h1 .badge")).to_have_text("deleted", timeout=60 * SECONDS)
        await expect(page.locator("#live-state")).to_have_text("ended (deleted)")

        # gone from the (default) list
        await page.click("[data-nav=instances]")
        await page.wait_for_selector("#instances tbody tr")
        assert await page.locator(f"#instances tr[data-id='{instance_id}']").count() == 0
        assert (await svc.db.instances.find_one({"_id": instance_id}))["status"] == "deleted"

        # the snapshot outlives it and seeds a new instance's form
        await page.click("[data-nav=snapshots]")
        await page.click("#snapshots [data-action=create-from]")
        await page.wait_for_selector("#create-form")
        assert (await page.input_value("#f-source")).startswith("snapshot:s-")
        assert await page.locator(".field[data-field=snapshot_id]").count() == 1
        assert without_expected(problems, 422) == [], problems  # 422: the idle window past the policy
    print(f"\nscreenshots: {ARTIFACTS / 'instances-list.png'} {ARTIFACTS / 'instance-detail.png'} "
          f"{ARTIFACTS / 'instance-lifecycle.png'}")


def _record(instance_id: str, owner: str, name: str, status: str) -> dict:
    from app.clock import utcnow

    now = utcnow()
    return {"_id": instance_id, "owner": owner, "name": name, "provider": "local", "region": "local", "zone": None,
            "machine_type": "local", "image": None, "snapshot_id": None, "disk_gb": 20, "ssh_user": "alice",
            "ssh_public_key": "k", "labels": {}, "status": status, "error": None, "public_ip": None, "ssh_port": None,
            "created_at": now, "updated_at": now, "job": None}


async def test_pages_then_api_field_errors_show_next_to_their_fields(dbserver, tmp_path, ssh_keypair):
    from playwright.async_api import expect

    settings = dashboard_settings(dbserver, tmp_path, dev_login=False)
    async with served_app(settings) as (api, svc), browser_page(tmp_path) as (page, problems):
        await page.goto(settings.public_url + "/")
        await page.wait_for_url(re.compile(r"#/signin$"))
        assert await page.locator("#dev-login").count() == 0, "no development button unless the server says so"
        await page.fill("#token", "not-a-token")
        await page.click("#sign-in")
        await page.wait_for_selector("#token-error:has-text('invalid or expired')")
        await page.fill("#token", svc.tokens.mint("alice"))
        await page.click("#sign-in")
        await page.wait_for_selector("#instances")
        assert await page.locator("[data-nav=instances]").count() == 1

        # 21 instances: two pages through the API's cursor, and back
        from app.ids import new_instance_id

        ids = sorted(new_instance_id() for _ in range(21))  # the list is newest first: by id
        for n, instance_id in enumerate(ids):
            await svc.db.instances.insert_one(_record(instance_id, "alice", f"box-{n:02d}", "pending"))
        await page.click("[data-nav=instances]")
        rows = page.locator("#instances tbody tr")
        await expect(rows).to_have_count(20)
        assert await rows.first.get_attribute("data-id") == ids[-1], "newest first"
        await page.click("#next-page")
        await expect(rows).to_have_count(1)
        assert await rows.first.get_attribute("data-id") == ids[0]
        assert await page.is_disabled("#next-page")
        await page.click("#prev-page")
        await expect(rows).to_have_count(20)
        await page.select_option("#filter-status", "running")
        await expect(page.locator("#instances .empty")).to_have_text(re.compile("No instance matches"))
        await svc.db.instances.delete_many({})

        await page.click("#new-instance")
        await page.wait_for_selector("#create-form")
        await page.fill("#f-name", "Bad_Name")
        await page.fill("#f-ssh-user", "alice")
        await page.fill("#f-ssh-key", "ssh-ed25519 not-a-key")
        await page.fill("#f-labels", "onebox-owner=mallory")
        await page.click("#create")
        name_error = page.locator(".field[data-field=name] .field-error")
        await name_error.wait_for()
        await page.wait_for_function("document.querySelector('.field[data-field=name] .field-error').textContent")
        assert "should match pattern" in await name_error.inner_text()
        assert "not a valid OpenSSH public key" in await page.inner_text(".field[data-field=ssh_public_key] .field-error")
        assert "reserved" in await page.inner_text(".field[data-field=labels] .field-error")
        assert await page.inner_text(".field[data-field=ssh_user] .field-error") == ""
        assert await page.locator(".field.invalid").count() == 3
        assert await page.inner_text("#form-banner") == "", "every error found its field"
        assert await svc.db.instances.count_documents({}) == 0
        assert without_expected(problems, 401, 422) == [], problems


async def test_instances_entry_absent_when_its_flag_is_off(dbserver, tmp_path):
    settings = dashboard_settings(dbserver, tmp_path, features={"instances_ui": False})
    async with served_app(settings) as (api, svc), browser_page(tmp_path) as (page, problems):
        await page.goto(settings.public_url + "/")
        await page.click("#dev-login")
        await page.wait_for_selector("#snapshots")  # the first page left on
        assert await page.locator("[data-nav=snapshots]").count() == 1
        assert await page.locator("[data-nav=instances]").count() == 0
        assert await page.locator("[data-nav=new]").count() == 0
        await page.goto(settings.public_url + "/#/instances")
        await page.wait_for_selector("h1:has-text('Nothing here')")
        assert without_expected(problems) == [], problems



@pytest.mark.parametrize("gpu_metrics", [True, False])
async def test_each_gpu_has_its_line_unless_the_flag_is_off(dbserver, tmp_path, gpu_metrics):
    """An instance whose agent reports two GPUs: one line per GPU, from the real metrics route."""
    import datetime as dt

    from app.clock import utcnow
    from app.ids import new_instance_id

    settings = dashboard_settings(dbserver, tmp_path, features={"gpu_metrics": gpu_metrics})
    async with served_app(settings) as (api, svc), browser_page(tmp_path) as (page, problems):
        instance_id = new_instance_id()
        agent_token, jti_hash = svc.tokens.mint_agent(instance_id)
        now = utcnow()
        await svc.db.instances.insert_one({
            "_id": instance_id, "owner": "gpu-user", "name": "gpu-box", "provider": "local", "region": "local",
            "zone": None, "machine_type": "local", "image": None, "snapshot_id": None, "disk_gb": 20,
            "ssh_user": "alice", "ssh_public_key": "k", "labels": {}, "status": "running", "error": None,
            "public_ip": "127.0.0.99", "ssh_port": 2222, "created_at": now, "updated_at": now, "job": None,
            "agent_jti_hash": jti_hash})
        samples = [{"at": (now - dt.timedelta(seconds=30 * n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "cpu_percent": 10.0 + n, "memory_percent": 30.0,
                    "gpus": [{"index": 0, "name": "NVIDIA A100", "utilization_percent": 90.0 - n},
                             {"index": 1, "name": "NVIDIA A100", "utilization_percent": 20.0 + n}]}
                   for n in range(4)]
        posted = await api.post("/v1/agent/metrics", json={"instance_id": instance_id, "samples": samples},
                                headers={"Authorization": f"Bearer {agent_token}"})
        assert posted.status_code == 202, posted.text

        await page.goto(settings.public_url + "/")
        await page.fill("#dev-user", "gpu-user")
        await page.click("#dev-login")
        await page.wait_for_selector("#instances")
        await page.goto(f"{settings.public_url}/#/instances/{instance_id}")
        await page.wait_for_selector("[data-chart=cpu] path.series", state="attached")
        if gpu_metrics:
            await page.wait_for_selector("[data-chart=gpu]")
            assert await page.locator("[data-chart=gpu] path.series").count() == 2
            assert await page.locator("[data-chart=gpu] .legend-item").all_inner_texts() == \
                ["GPU 0 (NVIDIA A100)", "GPU 1 (NVIDIA A100)"]
        else:
            await page.wait_for_selector("[data-chart=memory] path.series", state="attached")
            assert await page.locator("[data-chart=gpu]").count() == 0
        assert without_expected(problems) == [], problems


async def test_the_page_falls_back_to_polling_when_the_stream_fails(dbserver, tmp_path, ssh_keypair):
    from playwright.async_api import expect

    from tests.api.helpers import instance_body

    settings = dashboard_settings(dbserver, tmp_path)  # configure=skip: the lifecycle, not Ansible, is under test
    async with served_app(settings) as (api, svc), browser_page(tmp_path) as (page, problems):
        streams = []

        async def refuse(route):  # a proxy that breaks streaming, say
            streams.append(route.request.url)
            await route.abort()

        await page.route("**/events/stream", refuse)
        headers = {"Authorization": f"Bearer {svc.tokens.mint('poller')}"}
        created = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)).json()
        await page.goto(settings.public_url + "/")
        await page.fill("#dev-user", "poller")
        await page.click("#dev-login")
        await page.wait_for_selector("#instances")
        await page.goto(f"{settings.public_url}/#/instances/{created['id']}")
        await expect(page.locator("#live-state")).to_have_text("polling", timeout=20 * SECONDS)
        assert len(streams) == 3, "three tries, then polling"
        await expect(page.locator("h1 .badge")).to_have_text("running", timeout=30 * SECONDS)
        await expect(page.locator("#timeline [data-type='instance.running']")).to_have_count(1)
        assert (await api.delete(f"/v1/instances/{created['id']}", headers=headers)).status_code == 202
        await expect(page.locator("h1 .badge")).to_have_text("deleted", timeout=30 * SECONDS)
        assert without_expected([p for p in problems if "ERR_FAILED" not in p]) == [], problems
