"""Cost reports through the API, on state histories written into the database: the JSON and CSV of one
report agree, figures match the hand-computed ones of test_ledger, users see only their own."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from app.clock import utcnow
from app.ids import new_id
from tests.costs.test_ledger import STOP_START

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVh9k3YgCz0m3b0nB2H0q8q3oH9u3Xl0VvS1r7Jm1xY alice@laptop"
# Twenty days ago at midnight: every history below ends before now.
T0 = (utcnow() - dt.timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def iso(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def history(*steps) -> list[dict]:
    out, previous = [], None
    for hours, status in steps:
        out.append({"from": previous, "to": status, "at": at(hours)})
        previous = status
    return out


def instance_doc(name, provider, region, machine_type, steps, owner="alice", team=None) -> dict:
    transitions = history(*steps)
    return {"_id": new_id("i", at=transitions[0]["at"].timestamp()), "owner": owner, "team": team, "name": name,
            "provider": provider, "region": region, "zone": None, "machine_type": machine_type, "image": None,
            "snapshot_id": None, "disk_gb": 73, "ssh_user": "alice", "ssh_public_key": SSH_KEY, "labels": {},
            "status": transitions[-1]["to"], "error": None, "created_at": transitions[0]["at"],
            "updated_at": transitions[-1]["at"], "transitions": transitions, "job": None}


@pytest.fixture
async def world(services):
    """alice: an AWS box with a stop and a start ($1.3972), a failed GCP launch ($0.010625), a snapshot of the
    AWS box (17.1 h × $0.005 = $0.0855) and a box running since 2 h; bob (team research): a GCP box."""
    aws = instance_doc("trainer", "aws", "us-east-1", "t3.medium", STOP_START)
    failed = instance_doc("flaky", "gcp", "us-central1", "e2-medium",
                          [(0, "pending"), (1, "provisioning"), (1.25, "failed"), (30, "deleting"), (30.1, "deleted")])
    bobs = instance_doc("bobs", "gcp", "us-central1", "e2-medium",
                        [(0, "pending"), (1, "provisioning"), (2, "running"), (12, "deleting"), (12.5, "deleted")],
                        owner="bob", team="research")
    now_running = instance_doc("live", "aws", "us-east-1", "t3.medium", [(0, "pending"), (0.1, "provisioning"),
                                                                           (0.2, "running")])
    hours_ago = (utcnow() - T0) / dt.timedelta(hours=1)
    now_running["transitions"] = history((hours_ago - 2.2, "pending"), (hours_ago - 2.1, "provisioning"),
                                         (hours_ago - 2, "running"))
    now_running["created_at"] = now_running["updated_at"] = now_running["transitions"][0]["at"]
    await services.db.instances.insert_many([aws, failed, bobs, now_running])
    snap = {"_id": new_id("s", at=at(3).timestamp()), "instance_id": aws["_id"], "owner": "alice", "team": None,
            "name": "snap", "provider": "aws", "region": "us-east-1", "disk_gb": 73, "cloud_id": "ami-1",
            "error": None, "created_at": at(3), "updated_at": at(20.1), "status": "deleted", "job": None,
            "transitions": history((3, "creating"), (3.25, "available"), (20, "deleting"), (20.1, "deleted"))}
    await services.db.snapshots.insert_one(snap)
    return {"aws": aws, "failed": failed, "bobs": bobs, "live": now_running, "snap": snap}


async def report(api, headers, **params) -> dict:
    response = await api.get("/v1/costs", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_json_and_csv_reports_agree_and_match_the_hand_computed_figures(api, mint, world):
    alice = mint("alice")
    window = {"from": iso(T0), "to": iso(at(72))}
    by_provider = await report(api, alice, group_by="provider", granularity="day", **window)
    assert by_provider["currency"] == "USD" and by_provider["unpriced"] == []
    totals: dict[str, float] = {}
    for item in by_provider["items"]:
        totals[item["group"]] = totals.get(item["group"], 0) + item["total_usd"]
        assert item["total_usd"] == pytest.approx(item["compute_usd"] + item["disk_usd"] + item["public_ip_usd"]
                                                  + item["snapshot_usd"], abs=1e-5)
    assert totals["aws"] == pytest.approx(1.3972 + 0.0855, abs=1e-5)
    assert totals["gcp"] == pytest.approx(0.010625, abs=1e-5)
    assert by_provider["total_usd"] == pytest.approx(1.3972 + 0.0855 + 0.010625, abs=1e-5)
    assert [i["period"] for i in by_provider["items"]][:1] == [T0.strftime("%Y-%m-%d")]

    for group_by in ("provider", "instance", "machine_type", "region", "user", "team"):
        for granularity in ("day", "month"):
            params = {"group_by": group_by, "granularity": granularity, **window}
            as_json = await report(api, alice, **params)
            response = await api.get("/v1/costs", params=params, headers={**alice, "Accept": "text/csv"})
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
            assert "attachment" in response.headers["content-disposition"]
            rows = list(csv.DictReader(io.StringIO(response.text)))
            assert len(rows) == len(as_json["items"]) > 0
            for row, item in zip(rows, as_json["items"]):
                assert (row["period"], row["group"], row["label"] or None) == (item["period"], item["group"], item["label"])
                for column in ("compute_usd", "disk_usd", "public_ip_usd", "snapshot_usd", "total_usd"):
                    assert float(row[column]) == pytest.approx(item[column], abs=1e-6), (group_by, column)
            assert sum(float(r["total_usd"]) for r in rows) == pytest.approx(as_json["total_usd"], abs=1e-5)

    by_instance = await report(api, alice, group_by="instance", granularity="month", **window)
    named = {i["group"]: (i["label"], i["total_usd"]) for i in by_instance["items"]}
    assert named[world["aws"]["_id"]] == ("trainer", pytest.approx(1.3972, abs=1e-5))
    assert named[world["snap"]["_id"]] == ("snap", pytest.approx(0.0855, abs=1e-5))
    assert world["bobs"]["_id"] not in named, "a user sees only their own"


async def test_admins_see_everyone_and_may_narrow_to_one_user_or_team(api, mint, world):
    admin = mint("root", admin=True)
    window = {"from": iso(T0), "to": iso(at(72))}
    users = {i["group"] for i in (await report(api, admin, group_by="user", granularity="month", **window))["items"]}
    assert users == {"alice", "bob"}
    bob_only = await report(api, admin, group_by="team", granularity="month", owner="bob", **window)
    assert [(i["group"], i["total_usd"]) for i in bob_only["items"]] == \
        [("research", pytest.approx(11 * (0.0335 + 0.005) + 11.5 * 0.004, abs=1e-5))]
    team = await report(api, admin, group_by="user", granularity="month", team="research", **window)
    assert [i["group"] for i in team["items"]] == ["bob"]
    # a user's owner= is ignored: still their own
    assert {i["group"] for i in (await report(api, mint("bob"), group_by="user", granularity="month",
                                               owner="alice", **window))["items"]} == {"bob"}


async def test_an_instance_shows_its_cost(api, mint, world):
    alice = mint("alice")
    done = (await api.get(f"/v1/instances/{world['aws']['_id']}", headers=alice)).json()
    assert done["cost"]["to_date_usd"] == pytest.approx(1.3972, abs=1e-5)
    assert done["cost"]["hourly_usd"] == 0 and done["cost"]["priced"] is True
    live = (await api.get(f"/v1/instances/{world['live']['_id']}", headers=alice)).json()
    rate = 0.0416 + 0.008 + 0.005
    assert live["cost"]["hourly_usd"] == pytest.approx(rate)
    # provisioning 0.1 h then running 2 h: the disk, compute and IP from provisioning on
    assert live["cost"]["to_date_usd"] == pytest.approx(2.1 * rate, rel=0.01)
    listed = (await api.get("/v1/instances", headers=alice)).json()["items"]
    assert {i["id"]: i["cost"]["hourly_usd"] for i in listed}[world["live"]["_id"]] == pytest.approx(rate)


@pytest.mark.parametrize("params,field", [
    ({"from": "2026-01-02", "to": "2026-01-01"}, "from"),
    ({"from": "2020-01-01", "to": "2026-01-01", "granularity": "month"}, "from"),
    ({"from": "2026-01-01", "to": "2026-06-01", "granularity": "day"}, "granularity"),
    ({"group_by": "colour"}, "group_by"),
    ({"granularity": "hour"}, "granularity"),
    ({"from": "yesterday"}, "from"),
])
async def test_bad_report_parameters_name_the_field(api, mint, params, field):
    response = await api.get("/v1/costs", params=params, headers=mint("alice"))
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == field, response.text


async def test_prometheus_gauges_of_spend_and_budgets(api, mint, world, services):
    """The cost gauges are part of the one GET /metrics; the budgets' (which name users and teams) only
    when the endpoint is guarded by its token."""
    from prometheus_client.parser import text_string_to_metric_families
    from pydantic import SecretStr

    def scrape(text):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    await services.db.budgets.insert_one({"_id": "user:alice", "scope": "user", "name": "alice", "monthly_usd": 10.0})
    rate = 0.0416 + 0.008 + 0.005  # the live box; the others ended days ago
    open_ = await api.get("/metrics")
    assert open_.status_code == 200 and open_.headers["content-type"].startswith("text/plain")
    samples = scrape(open_.text)
    assert samples[("onebox_spend_hourly_usd", (("provider", "aws"),))] == pytest.approx(rate)
    assert not any(name.startswith("onebox_budget_") for name, _ in samples) and "alice" not in open_.text

    token = "scrape-me-" + "p" * 30
    services.settings = services.settings.model_copy(update={"prometheus_token": SecretStr(token)})
    assert (await api.get("/metrics", headers=mint("root", admin=True))).status_code == 401  # a user token is not it
    response = await api.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    samples = scrape(response.text)
    assert samples[("onebox_budget_limit_usd", (("name", "alice"), ("scope", "user")))] == 10.0
    # alice's live box has run 2.1 h this month (her older history falls in this month or the last)
    spent = samples[("onebox_budget_spent_usd", (("name", "alice"), ("scope", "user")))]
    assert spent >= 2.1 * rate * 0.99
    assert samples[("onebox_budget_used_ratio", (("name", "alice"), ("scope", "user")))] == pytest.approx(spent / 10)
    everyone = sum(v for (name, _), v in samples.items() if name == "onebox_spend_month_to_date_usd")
    assert everyone >= spent
