"""The Costs page in a real browser (Debian's Chromium through Playwright): this month's spend stacked by
provider, the budget line, the forecast, the top instances and the CSV download, from the real API; and an
instance's page showing its cost. A screenshot is saved as ``.artifacts/web/costs.png``."""

from __future__ import annotations

import datetime as dt
import re

from app.clock import utcnow
from app.costs.ledger import month_start
from app.ids import new_id
from tests.api.helpers import instance_body, wait_status
from tests.e2e.cloud_support import served_app
from tests.web.test_dashboard import ARTIFACTS, SECONDS, browser_page, dashboard_settings, without_expected

USER = "webtester"


def past_record(kind: str, name: str, provider: str, region: str, machine_type: str | None,
                steps: list[tuple[dt.datetime, str]]) -> dict:
    transitions, previous = [], None
    for at, status in steps:
        transitions.append({"from": previous, "to": status, "at": at})
        previous = status
    doc = {"_id": new_id(kind, at=steps[0][0].timestamp()), "owner": USER, "team": None, "name": name,
           "provider": provider, "region": region, "disk_gb": 100, "status": previous, "error": None,
           "created_at": steps[0][0], "updated_at": steps[-1][0], "transitions": transitions, "job": None}
    if kind == "i":
        doc.update({"machine_type": machine_type, "zone": None, "image": None, "snapshot_id": None, "ssh_user": "web",
                    "ssh_public_key": "k", "labels": {}, "public_ip": None, "ssh_port": None})
    else:
        doc.update({"instance_id": "i-gone", "cloud_id": "c"})
    return doc


async def seed_history(svc) -> None:
    """Earlier this month: an AWS box that ran three days, a GCP box running since, an Azure snapshot."""
    now = utcnow()
    start = max(month_start(now), now - dt.timedelta(days=10))
    span = now - start

    def at(share: float) -> dt.datetime:
        return start + span * share

    await svc.db.instances.insert_many([
        past_record("i", "trainer", "aws", "us-east-1", "t3.large",
                    [(at(0), "pending"), (at(0.01), "provisioning"), (at(0.02), "running"), (at(0.3), "deleting"),
                     (at(0.31), "deleted")]),
        past_record("i", "notebook", "gcp", "us-central1", "n2-standard-4",
                    [(at(0.1), "pending"), (at(0.11), "provisioning"), (at(0.12), "running")]),
    ])
    await svc.db.snapshots.insert_one(past_record("s", "dataset-v1", "azure", "eastus", None,
                                                  [(at(0.05), "creating"), (at(0.06), "available")]))


async def test_costs_page_chart_budget_forecast_top_instances(dbserver, tmp_path, ssh_keypair):
    from playwright.async_api import expect

    settings = dashboard_settings(dbserver, tmp_path)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with served_app(settings) as (api, svc), browser_page(tmp_path) as (page, problems):
        admin = {"Authorization": f"Bearer {svc.tokens.mint('root', role='admin')}"}
        user = {"Authorization": f"Bearer {svc.tokens.mint(USER)}"}
        await seed_history(svc)
        # A real local instance, priced by an admin as an on-premises team would.
        assert (await api.put("/v1/admin/prices/local/local/local", json={"hourly_usd": 0.5}, headers=admin)).status_code == 200
        box = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="onprem"), headers=user)).json()
        await wait_status(api, f"/v1/instances/{box['id']}", user, {"running"})
        spent = (await api.get("/v1/costs", headers=user)).json()["total_usd"]
        budget = round(spent / 0.6, 2)  # 60 % used: the chart's budget line sits above the stacked spend
        assert (await api.put(f"/v1/admin/budgets/users/{USER}", json={"monthly_usd": budget}, headers=admin)).status_code == 200

        await page.goto(settings.public_url + "/")
        await page.fill("#dev-user", USER)
        await page.click("#dev-login")
        await page.wait_for_selector("#instances")
        await page.click("[data-nav=costs]")
        await page.wait_for_selector("#cost-chart svg")
        providers = await page.locator("#cost-chart path.area").evaluate_all("els => els.map(e => e.dataset.series)")
        assert sorted(providers) == ["aws", "azure", "gcp", "local"], providers
        assert providers[0] == "gcp", "the costliest provider is drawn first, at the bottom"
        assert await page.locator("#cost-chart [data-budget=budget]").count() == 1
        assert await page.locator("#cost-chart .forecast-line").count() == 1
        shown = float(re.sub(r"[$,]", "", await page.inner_text("#stat-spent .stat-value")))
        assert abs(shown - spent) < 0.05, (shown, spent)  # the page read it a moment later
        assert "% used" in await page.inner_text("#stat-budget") and "ok" in await page.inner_text("#stat-budget")
        forecast = float(re.sub(r"[$,]", "", await page.inner_text("#stat-forecast .stat-value")))
        assert forecast >= shown
        # the GCP notebook (compute, disk, IP), the Azure snapshot and the local box
        rate = 0.1942 + 100 * 0.04 / 730 + 0.005 + 100 * 0.05 / 730 + 0.5
        assert await page.inner_text("#stat-spent .stat-note") == f"${rate:.4f}/h right now"
        rows = page.locator("#top-table tbody tr")
        names = await rows.locator("td:first-child .strong").all_inner_texts()
        assert names[0] == "notebook" and {"trainer", "dataset-v1", "onprem"} <= set(names), names
        await page.screenshot(path=str(ARTIFACTS / "costs.png"), full_page=True)

        async with page.expect_download() as download:
            await page.click("#download-csv")
        csv_text = (await (await download.value).path()).read_text()
        assert csv_text.startswith("period,group,label,compute_usd,disk_usd,public_ip_usd,snapshot_usd,total_usd")
        assert "notebook" in csv_text and "onprem" in csv_text

        # the instance's own page shows its cost
        await page.click(f"#top-table tr[data-id='{box['id']}'] a")
        await expect(page.locator("#instance-cost [data-testid=cost-hourly]")).to_have_text("$0.5000/h now",
                                                                                        timeout=10 * SECONDS)
        assert (await page.inner_text("#instance-cost [data-testid=cost-to-date]")).startswith("$")
        assert without_expected(problems) == [], problems
