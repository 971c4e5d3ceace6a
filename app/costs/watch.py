"""The budget watch: thresholds checked by the workers, one process at a time.

Every ``ONEBOX_BUDGET_CHECK_SECONDS`` (60) one worker — whoever wins that interval's slot in
``claims``, an insert against a unique index, as for the reaper — computes every budget's
spend for the month from the ledger and acts:

* at ``warn_at_percent`` (default ``ONEBOX_BUDGET_WARN_PERCENT``, 80): an alert, once per budget
  and month (its ``_id`` is ``<scope>:<name>:<month>:warning``, so a second insert is refused);
* at 100 %: an ``exhausted`` alert the same way, and the policy. ``stop`` files a stop request for
  each of the budget's ``running`` instances (one already stopping or stopped is left alone; one
  provisioning, starting or rebooting is stopped at the first pass that finds it running): its
  disks are kept, and go on costing (the ledger charges disk while stopped). ``delete`` files a
  delete request for every instance that still exists, stopped ones included. The requests go
  through the lifecycle's own queues (``app.lifecycle.action_requests``, ``…delete_requests``), as a
  user's and the scheduler's do, so they never race one: an instance with a request already waiting
  is skipped and looked at again next pass. Each request names the rule ``budget_exhausted``, with
  the budget and its figures as the reason, and ``requested_by: budget``. This is repeated at every
  pass while the budget stays exhausted, and ends once an admin raises the budget or the month ends;
  meanwhile a start is refused (402 ``budget_exceeded``, ``app.costs.budgets``).

Each request is an event (``budget.stop`` / ``budget.delete``, actor ``budget``) and an audit record
(``instance.stop`` / ``instance.delete``, actor ``budget``, the rule and reason in its detail) written
once, keyed by the request, whether by this pass or by the dispatcher after a crash.
Each alert becomes an event on every instance of the budget and an audit record, both with
``actor: budget`` and naming the rule, and a webhook delivery (``app.costs.webhook``). The alert
is stored first and marks itself notified only after its events and audit record are written, so
a worker killed in between leaves it for the next pass (events may then be written twice; an
alert is never lost).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from app.audit import record_system_action
from app.clock import utcnow
from app.costs.budgets import BudgetKeeper, Standing
from app.costs.repository import CostRepository, scope_filter
from app.costs.webhook import body_of, deliver_due
from app.db import is_duplicate_key
from app.lifecycle.action_requests import audit_policy_request, file_action_request
from app.lifecycle.delete_requests import file_delete_request
from app.services import Services
from app.worker.slots import acquire_slot, release_slot

log = logging.getLogger("onebox.costs.watch")

ACTOR = "budget"  # requested_by of the budget's requests, the actor of its events and audit records
RULE = "budget_exhausted"  # the rule its requests name (the reason names the budget and its figures)
GONE = ("deleting", "deleted")


@dataclass
class WatchReport:
    """What one pass did."""

    alerts: list[str] = field(default_factory=list)  # alert ids raised
    stopped: list[str] = field(default_factory=list)  # instance ids a stop was requested for
    deleted: list[str] = field(default_factory=list)  # instance ids a delete was requested for
    delivered: int = 0  # webhook deliveries that reached the receiver


def rule_of(st: Standing, level: str, warn_at: float, policy: str) -> str:
    b = st.budget
    threshold = f"{warn_at:g} %" if level == "warning" else "100 %"
    then = f" → {policy}" if level == "exhausted" else ""
    return (f"{b['scope']} budget {b['name']}: {st.spent_usd:.2f} of {st.monthly_usd:.2f} USD spent in {st.month} "
            f"({st.used_percent:.1f} %) ≥ {threshold}{then}")


class BudgetWatch:
    def __init__(self, services: Services, owner: str) -> None:
        self.services = services
        self.owner = owner
        self.repo = CostRepository(services.db)
        self.keeper = BudgetKeeper(self.repo)

    async def run_once(self) -> WatchReport | None:
        """One pass, if this process wins the current interval; None when another one did."""
        claims = self.services.db.claims
        # at least 0.2 s a slot, as before (the reaper and the scheduler allow shorter ones)
        claim = await acquire_slot(claims, "budgets", max(self.services.settings.budget_check_seconds, 0.2), self.owner)
        if claim is None:
            return None
        try:
            report = await self.check()
            report.delivered = await deliver_due(self.services)
        finally:  # done: the next slot's winner need not wait for this one
            await release_slot(claims, claim)
        return report

    async def check(self) -> WatchReport:
        report = WatchReport()
        book = await self.repo.price_book()
        for budget in await self.repo.all_budgets():
            try:
                await self._check_one(budget, book, report)
            except Exception:  # noqa: BLE001 - one budget's trouble must not stop the others
                log.exception("checking budget %s failed", budget["_id"])
        await self._finish_notifications()
        return report

    async def _check_one(self, budget: dict[str, Any], book, report: WatchReport) -> None:
        st = await self.keeper.standing(budget, book)
        warn_at = budget.get("warn_at_percent") or self.services.settings.budget_warn_percent
        policy = budget.get("on_exhausted", "stop")
        if st.used_percent >= warn_at:
            await self._alert(st, "warning", warn_at, policy, report)
        if st.used_percent >= 100.0:
            await self._alert(st, "exhausted", warn_at, policy, report)
            await self._enforce(st, warn_at, policy, report)

    async def _alert(self, st: Standing, level: str, warn_at: float, policy: str, report: WatchReport) -> None:
        b = st.budget
        alert_id = f"{b['scope']}:{b['name']}:{st.month}:{level}"
        now = utcnow()
        payload = {"id": alert_id, "type": f"budget.{level}", "at": now.isoformat(), "month": st.month,
                   "budget": {"scope": b["scope"], "name": b["name"], "monthly_usd": st.monthly_usd,
                              "warn_at_percent": warn_at, "on_exhausted": policy},
                   "spent_usd": round(st.spent_usd, 6), "used_percent": round(st.used_percent, 3),
                   "action": policy if level == "exhausted" else None, "rule": rule_of(st, level, warn_at, policy)}
        webhook = ({"status": "pending", "event": f"budget.{level}", "body": body_of(payload), "attempts": 0,
                    "next_attempt_at": now, "last_error": None} if self.services.settings.webhook_url
                   else {"status": "off"})
        try:
            await self.services.db.budget_alerts.insert_one({
                "_id": alert_id, "scope": b["scope"], "name": b["name"], "month": st.month, "level": level, "at": now,
                "spent_usd": st.spent_usd, "monthly_usd": st.monthly_usd, "used_percent": st.used_percent,
                "rule": payload["rule"], "notified": False, "webhook": webhook})
        except Exception as exc:
            if is_duplicate_key(exc):
                return  # raised already this month
            raise
        report.alerts.append(alert_id)
        log.warning("budget alert: %s", payload["rule"])

    async def _finish_notifications(self) -> None:
        """Events and audit records of the alerts not notified yet (this pass's, or a crashed one's)."""
        alerts = self.services.db.budget_alerts
        async for alert in alerts.find({"notified": False}):
            level, rule = alert["level"], alert["rule"]
            message = (f"budget {'warning' if level == 'warning' else 'exhausted'}: {rule}")
            async for doc in self.services.db.instances.find(
                    {**scope_filter(alert["scope"], alert["name"]), "status": {"$nin": list(GONE)}}, {"_id": 1}):
                await self.services.events.add(doc["_id"], f"budget.{level}", message, step="budget", actor=ACTOR)
            await record_system_action(self.services.db, ACTOR, f"budget.{level}", "budget",
                                       f"{alert['scope']}:{alert['name']}", rule=rule, month=alert["month"])
            await alerts.update_one({"_id": alert["_id"]}, {"$set": {"notified": True}})

    async def _enforce(self, st: Standing, warn_at: float, policy: str, report: WatchReport) -> None:
        """The budget's policy, filed as the scheduler's rules file theirs (``app.policies.checks``): a stop as
        an action request, a delete as a delete request, each naming the rule ``budget_exhausted`` with the
        budget's figures as the reason; then an event and the request's audit record (actor ``budget``, once)."""
        db = self.services.db
        b = st.budget
        reason = rule_of(st, "exhausted", warn_at, policy)
        if policy == "delete":
            targets = {"status": {"$nin": ["failed", *GONE]}}  # failed ones cost nothing; users decide
        else:
            targets = {"status": "running"}  # stopping/stopped ones are left alone; starting ones next pass
        docs = [d async for d in db.instances.find({**scope_filter(b["scope"], b["name"]), **targets})]
        ids = [d["_id"] for d in docs]
        deleting = {d["_id"] async for d in db.delete_requests.find({"_id": {"$in": ids}}, {"_id": 1})} if ids else set()
        for doc in docs:
            if doc["_id"] in deleting:
                continue  # a delete is on its way (the user's, a policy's or ours)
            if policy == "delete":
                request = await file_delete_request(self.services, doc, ACTOR, rule=RULE, reason=reason)
            else:
                request = await file_action_request(db, doc, "stop", ACTOR, rule=RULE, reason=reason)
            if request is None:
                continue  # another request for it is waiting; look again next pass
            (report.deleted if policy == "delete" else report.stopped).append(doc["_id"])
            await self.services.events.add(doc["_id"], f"budget.{policy}", f"{policy} requested by the budget "
                                           f"(rule {RULE}): {reason}", step="budget", actor=ACTOR)
            await audit_policy_request(db, request, policy)
            log.warning("budget: %s of %s requested: %s", policy, doc["_id"], reason)
