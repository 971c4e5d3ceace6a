"""Budget thresholds end to end on the local provider with prices overridden: the 80 % alert (an event, an
audit record, and a webhook a local receiver verifies — retried after a failure), the 100 % action through
the same queue as users' requests, and the webhook's signature and SSRF checks."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from app.costs import webhook
from app.costs.watch import BudgetWatch
from providers import prices
from app.settings import Settings
from tests.api.helpers import instance_body, wait_status
from tests.conftest import make_settings
from tests.e2e.cloud_support import running_onebox
from tests.support import free_port

SECRET = "webhook-secret-" + "w" * 24
PRICE = "/v1/admin/prices/local/local/local"


class Receiver:
    """A webhook receiver on this machine: answers 500 to the first delivery, 200 afterwards, and keeps
    (headers, body, signature valid?) of each request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers["X-Onebox-Timestamp"]
                expected = "sha256=" + hmac.new(SECRET.encode(), timestamp.encode() + b"." + body,
                                                hashlib.sha256).hexdigest()
                receiver.requests.append({"headers": dict(self.headers), "body": json.loads(body),
                                          "valid": hmac.compare_digest(expected, self.headers["X-Onebox-Signature"]),
                                          "fresh": abs(time.time() - int(timestamp)) < 300})
                self.send_response(500 if len(receiver.requests) == 1 else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/onebox"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def accepted(self, event: str) -> list[dict]:
        """The deliveries of ``event`` this receiver answered 200 to."""
        return [r for i, r in enumerate(self.requests) if i > 0 and r["headers"]["X-Onebox-Event"] == event]

    async def wait_for(self, event: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.accepted(event):
                return self.accepted(event)[0]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no {event} delivery accepted: {self.requests}")


async def spend(api, headers, instance_id: str, at_least: float, admin) -> None:
    """Run the instance at $36,000/h ($10/s) until it has cost ``at_least``, then make it free again."""
    assert (await api.put(PRICE, json={"hourly_usd": 36000}, headers=admin)).status_code == 200
    deadline = time.monotonic() + 60
    while (await api.get(f"/v1/instances/{instance_id}", headers=headers)).json()["cost"]["to_date_usd"] < at_least:
        assert time.monotonic() < deadline, "the instance did not accrue its cost"
        await asyncio.sleep(0.1)
    assert (await api.delete(PRICE, headers=admin)).status_code == 200


async def test_warning_at_80_percent_then_delete_at_100_percent(dbserver, tmp_path, ssh_keypair):
    receiver = Receiver()
    settings = make_settings(dbserver, tmp_path / "data", webhook_url=receiver.url, webhook_secret=SECRET,
                             url_allowlist=["127.0.0.1"], budget_check_seconds=0.3, webhook_backoff_seconds=0.2)
    try:
        async with running_onebox(settings) as (api, svc):
            admin = {"Authorization": f"Bearer {svc.tokens.mint('root', role='admin')}"}
            alice = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            box = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="spender"),
                                  headers=alice)).json()
            await wait_status(api, f"/v1/instances/{box['id']}", alice, {"running"})
            await spend(api, alice, box["id"], 8.0, admin)
            spent = (await api.get("/v1/budget", headers=alice)).json()["spent_usd"]
            assert spent >= 8.0

            # 90 % of the budget is spent: a warning (event, audit, webhook), and nothing is stopped.
            budget = await api.put("/v1/admin/budgets/users/alice", headers=admin,
                                   json={"monthly_usd": round(spent / 0.9, 2), "on_exhausted": "delete"})
            assert budget.json()["state"] == "warning", budget.text
            warning = await receiver.wait_for("budget.warning")
            assert warning["valid"] and warning["fresh"]
            first, retried = receiver.requests[0], warning
            assert first["headers"]["X-Onebox-Delivery"] == retried["headers"]["X-Onebox-Delivery"], \
                "the failed first attempt was retried as the same delivery"
            assert warning["body"]["budget"] == {"scope": "user", "name": "alice", "on_exhausted": "delete",
                                                 "monthly_usd": round(spent / 0.9, 2), "warn_at_percent": 80}
            assert warning["body"]["spent_usd"] == pytest.approx(spent, abs=0.01) and warning["body"]["action"] is None
            assert SECRET not in json.dumps(receiver.requests)
            events = (await api.get(f"/v1/instances/{box['id']}/events", headers=alice)).json()
            [event] = [e for e in events if e["type"] == "budget.warning"]
            assert event["actor"] == "budget" and "≥ 80 %" in event["message"]
            audit = (await api.get("/v1/admin/audit", headers=admin)).json()
            [entry] = [a for a in audit if a["action"] == "budget.warning"]
            assert (entry["actor"], entry["role"], entry["target_id"]) == ("budget", "system", "user:alice")
            assert "≥ 80 %" in entry["detail"]["rule"]
            assert (await api.get(f"/v1/instances/{box['id']}", headers=alice)).json()["status"] == "running"

            # Over 100 %: the budget deletes the instance through the delete queue, and refuses new creates.
            await api.put("/v1/admin/budgets/users/alice", headers=admin,
                          json={"monthly_usd": round(spent / 1.5, 2), "on_exhausted": "delete"})
            exhausted = await receiver.wait_for("budget.exhausted")
            assert exhausted["valid"] and exhausted["body"]["action"] == "delete"
            done = await wait_status(api, f"/v1/instances/{box['id']}", alice, {"deleted"})
            assert done["cost"]["hourly_usd"] == 0
            events = (await api.get(f"/v1/instances/{box['id']}/events", headers=alice)).json()
            [deleted] = [e for e in events if e["type"] == "budget.delete"]
            assert deleted["actor"] == "budget" and "→ delete" in deleted["message"]
            assert any(e["type"] == "status" and "→ deleting (requested by budget: budget_exhausted)" in e["message"]
                       for e in events)
            audit = (await api.get("/v1/admin/audit", headers=admin)).json()
            [entry] = [a for a in audit if a["action"] == "instance.delete" and a["actor"] == "budget"]
            assert entry["target_id"] == box["id"] and entry["detail"]["rule"] == "budget_exhausted"
            assert entry["detail"]["reason"].startswith("user budget alice:")
            request = await svc.db.delete_requests.find_one({"_id": box["id"]})
            assert request["requested_by"] == "budget"
            refused = await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=alice)
            assert refused.status_code == 402 and refused.json()["left_usd"] == 0
            alerts = [a async for a in svc.db.budget_alerts.find({})]
            assert sorted(a["level"] for a in alerts) == ["exhausted", "warning"], "each alert once a month"
            assert all(a["webhook"]["status"] == "delivered" for a in alerts)
    finally:
        receiver.server.shutdown()


DISK_GB_MONTH_USD = 73.0  # the local sheet's disk, priced for this test: 20 GB cost 2 USD an hour


async def costs_of(api, headers, instance_id: str) -> dict:
    report = (await api.get("/v1/costs", params={"group_by": "instance", "granularity": "month"},
                            headers=headers)).json()
    [item] = [i for i in report["items"] if i["group"] == instance_id]
    return item


async def test_stop_at_100_percent_keeps_the_disk_charging_and_refuses_starts(dbserver, tmp_path, ssh_keypair,
                                                                             monkeypatch):
    monkeypatch.setitem(prices.SHEETS, "local", dataclasses.replace(prices.SHEETS["local"],
                                                                    disk_gb_month_usd=DISK_GB_MONTH_USD))
    settings = make_settings(dbserver, tmp_path / "data", budget_check_seconds=0.3)
    async with running_onebox(settings) as (api, svc):
        admin = {"Authorization": f"Bearer {svc.tokens.mint('root', role='admin')}"}
        alice = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        box = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="spender"),
                              headers=alice)).json()
        path = f"/v1/instances/{box['id']}"
        await wait_status(api, path, alice, {"running"})
        await spend(api, alice, box["id"], 4.0, admin)
        # compute is priced again (cheaply), so that a stopped instance's rate shows it is not charged
        assert (await api.put(PRICE, json={"hourly_usd": 3.6}, headers=admin)).status_code == 200
        spent = (await api.get("/v1/budget", headers=alice)).json()["spent_usd"]

        budget = await api.put("/v1/admin/budgets/users/alice", headers=admin,
                               json={"monthly_usd": round(spent / 2, 2), "on_exhausted": "stop"})
        assert budget.json()["state"] == "exhausted", budget.text
        stopped = await wait_status(api, path, alice, {"stopped"}, timeout=120)
        assert stopped["last_request"]["requested_by"] == "budget"
        assert stopped["last_request"]["rule"] == "budget_exhausted"

        events = (await api.get(f"{path}/events", headers=alice)).json()
        [asked] = [e for e in events if e["type"] == "budget.stop"]
        assert asked["actor"] == "budget" and "budget_exhausted" in asked["message"] and "→ stop" in asked["message"]
        assert any(e["type"] == "status" and "running → stopping (requested by budget: budget_exhausted)"
                   in e["message"] for e in events)
        audit = (await api.get("/v1/admin/audit", headers=admin)).json()
        [entry] = [a for a in audit if a["action"] == "instance.stop"]
        assert (entry["actor"], entry["role"], entry["target_id"]) == ("budget", "system", box["id"])
        assert entry["detail"]["rule"] == "budget_exhausted"
        assert entry["detail"]["reason"].startswith("user budget alice:") and "→ stop" in entry["detail"]["reason"]
        report = await BudgetWatch(svc, "test").check()
        assert report.stopped == [] and report.deleted == [], "a stopped instance is left alone"

        # Still exhausted: a start is refused as a create is, and nothing is queued.
        started = await api.post(f"{path}/start", headers=alice)
        created = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="another"),
                                 headers=alice)
        assert started.status_code == created.status_code == 402, started.text
        refusal = started.json()
        assert refusal["code"] == "budget_exceeded" and set(refusal) == set(created.json())
        assert refusal["budget"]["scope"] == "user" and refusal["budget"]["name"] == "alice"
        assert refusal["left_usd"] == 0 and refusal["spent_usd"] >= spent and refusal["projection_usd"] > 0
        assert "start is projected" in refusal["detail"]
        assert await svc.db.action_requests.find_one({"_id": box["id"]}) is None
        assert (await api.get(path, headers=alice)).json()["status"] == "stopped"

        # Stopped, its disk is still charged and its compute is not.
        disk_rate = 20 * DISK_GB_MONTH_USD / 730
        shown = (await api.get(path, headers=alice)).json()["cost"]
        assert shown["hourly_usd"] == pytest.approx(disk_rate)
        before = await costs_of(api, alice, box["id"])
        deadline = time.monotonic() + 30
        while (after := await costs_of(api, alice, box["id"]))["disk_usd"] <= before["disk_usd"]:
            assert time.monotonic() < deadline, "the stopped instance's disk was not charged"
            await asyncio.sleep(0.2)
        assert after["compute_usd"] == pytest.approx(before["compute_usd"], abs=1e-9)
        later = (await api.get(path, headers=alice)).json()["cost"]
        assert later["to_date_usd"] > shown["to_date_usd"]


def test_signatures_are_hmac_sha256_of_timestamp_and_body():
    body = b'{"a":1}'
    expected = hmac.new(b"k" * 20, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook.signature(b"k" * 20, "1700000000", body) == f"sha256={expected}"


async def test_the_webhook_url_is_ssrf_checked(monkeypatch):
    with pytest.raises(ValueError, match="non-public"):
        Settings(webhook_url="http://169.254.169.254/latest", webhook_secret=SECRET)
    with pytest.raises(ValueError, match="SECRET"):
        Settings(webhook_url="https://hooks.example.com/x")
    answers = {"hooks.example.com": "10.1.2.3", "public.example.com": "93.184.216.34"}

    def resolve(host, *args, **kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    with pytest.raises(ValueError, match="resolves to a non-public address"):
        await webhook.check_destination("https://hooks.example.com/x", [])
    await webhook.check_destination("https://public.example.com/x", [])
    await webhook.check_destination("https://hooks.example.com/x", ["10.0.0.0/8"])
