"""The scheduler's lifecycle check: TTL (with warnings ahead), idle autostop, and stopped-then-deleted.

Run once per scheduler pass (``app.worker.scheduler``, one process at a time). For every instance at rest
(``running`` or ``stopped``, no job holding it, no request of anyone waiting for it) it works out the
instance's schedule (``app.policies.rules``: its own settings under its owner's policy, read afresh each pass,
so a tightened policy is obeyed at once) and, when a rule is due, files the action as a request — an action
request for a stop, a delete request for a delete — in the very queues users' own requests go through. It
never writes an instance record, so it cannot race a user or a job: if a user's request is already waiting,
the rule waits for the next pass; if the request it files finds the instance changed, the dispatcher drops it.

Every action it files is an event of type ``policy`` (its step names the rule) and an audit record with actor
``policy`` and the rule in its detail, written once (keyed by the request). Warnings before a TTL acts
(``ttl_warning_seconds``: 1 h and 10 min by default) are events of type ``policy.warning``, each sent once per
deadline (a unique ``notices`` entry), the nearest one only when several are already due.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from app.clock import utcnow
from app.db import is_duplicate_key
from app.lifecycle.action_requests import POLICY, audit_policy_request, file_action_request
from app.lifecycle.delete_requests import file_delete_request
from app.metrics.service import MetricsService
from app.policies.idle import MAX_GAP_INTERVALS, Thresholds, Verdict, judge
from app.policies.rules import Schedule, last_entered, schedule_for
from app.policies.service import LifecycleSettings, PolicyService
from app.services import Services

log = logging.getLogger("onebox.policies")

NOTICES_KEPT = dt.timedelta(days=30)
TAIL_SAMPLES = 4  # the newest samples are read first: most instances are busy, and that settles it


@dataclass
class PolicyReport:
    """What one pass did."""

    acted: list[tuple[str, str, str]] = field(default_factory=list)  # (instance id, rule, stop|delete)
    warned: list[tuple[str, int]] = field(default_factory=list)  # (instance id, lead in seconds)
    checked: int = 0


def _stamp(value: dt.datetime) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z")


def _remaining(delta: dt.timedelta) -> str:
    seconds = max(delta.total_seconds(), 0)
    if seconds >= 5400:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 90:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


async def check_policies(services: Services, now: dt.datetime | None = None) -> PolicyReport:
    db, settings = services.db, services.settings
    now = now or utcnow()
    report = PolicyReport()
    docs = [d for status in ("running", "stopped")  # one (status, provider) index range each
            async for d in db.instances.find({"status": status, "job": None})]
    ids = [d["_id"] for d in docs]
    if not ids:
        return report
    waiting = {d["_id"] async for d in db.action_requests.find({"_id": {"$in": ids}}, {"_id": 1})}
    waiting |= {d["_id"] async for d in db.delete_requests.find({"_id": {"$in": ids}}, {"_id": 1})}
    own = await LifecycleSettings(services).many(ids)
    policies = await PolicyService(services).effective_for({d["owner"] for d in docs})
    for doc in docs:
        if doc["_id"] in waiting:
            continue  # someone's request comes first; look again next pass
        report.checked += 1
        schedule = schedule_for(doc, own.get(doc["_id"]), policies[doc["owner"]], settings.policy_time_scale)
        try:
            await _check_one(services, doc, schedule, now, report)
        except Exception:  # noqa: BLE001 - one instance must not keep the others from their checks
            log.exception("policy check of %s failed", doc["_id"])
    await db.notices.delete_many({"at": {"$lt": now - NOTICES_KEPT}})
    return report


async def _check_one(services: Services, doc: dict, schedule: Schedule, now: dt.datetime,
                     report: PolicyReport) -> None:
    if doc["status"] == "stopped":
        if schedule.delete_at is not None and now >= schedule.delete_at:
            since = last_entered(doc, "stopped")
            reason = (f"stopped since {_stamp(since) if since else 'long ago'}, longer than "
                      f"delete_after_stopped_days ({schedule.delete_after_stopped_days})")
            await _act(services, doc, "delete", "stopped_too_long", reason, report)
        return
    if schedule.expires_at is not None:
        if now >= schedule.expires_at:
            await _act(services, doc, schedule.on_expiry, "ttl", f"its TTL ran out at {_stamp(schedule.expires_at)}",
                       report)
            return
        await _warn(services, doc, schedule, now, report)
    if schedule.idle_minutes is not None:
        verdict = await idle_verdict(services, doc["_id"], schedule, now)
        if verdict.idle:
            await _act(services, doc, schedule.on_idle or "stop", "idle",
                       f"idle for {schedule.idle_minutes} min: {verdict.reason}", report)


async def idle_verdict(services: Services, instance_id: str, schedule: Schedule, now: dt.datetime) -> Verdict:
    """Idle over the schedule's window? Samples are read through ``MetricsService.series`` only."""
    settings = services.settings
    window = schedule.idle_window(settings.policy_time_scale)
    interval = float(settings.agent_interval_seconds)
    thresholds = Thresholds.from_settings(settings)
    metrics = MetricsService(services)
    slack = dt.timedelta(seconds=interval * MAX_GAP_INTERVALS + 1)
    tail_start = now - min(window, dt.timedelta(seconds=interval * TAIL_SAMPLES))
    tail = await metrics.series(instance_id, tail_start - slack, now, TAIL_SAMPLES * 4 + 8)
    verdict = judge(tail, tail_start, now, interval, thresholds)
    if not verdict.idle or tail_start <= now - window:
        return verdict
    window_start = now - window
    expected = int(window.total_seconds() / interval) * 2 + 16
    samples = await metrics.series(instance_id, window_start - slack, now, expected)
    return judge(samples, window_start, now, interval, thresholds)


async def _warn(services: Services, doc: dict, schedule: Schedule, now: dt.datetime, report: PolicyReport) -> None:
    scale = services.settings.policy_time_scale
    due = [lead for lead in sorted(services.settings.ttl_warning_seconds)
           if now >= schedule.expires_at - dt.timedelta(seconds=lead * scale)]
    if not due:
        return
    lead = due[0]  # the nearest one; those further ahead are past already
    key = f"ttl-warning:{doc['_id']}:{int(schedule.expires_at.timestamp() * 1000)}:{lead}"
    try:
        await services.db.notices.insert_one({"_id": key, "at": now})
    except Exception as exc:
        if is_duplicate_key(exc):
            return
        raise
    verb = "stops" if schedule.on_expiry == "stop" else "deletes"
    await services.events.add(doc["_id"], "policy.warning", f"the TTL {verb} this instance in "
                              f"{_remaining(schedule.expires_at - now)}, at {_stamp(schedule.expires_at)}; "
                              "PATCH ttl_seconds or expires_at to change it", step="ttl")
    report.warned.append((doc["_id"], lead))


async def _act(services: Services, doc: dict, action: str, rule: str, reason: str, report: PolicyReport) -> None:
    """File the action as a request, then say so in the events and the audit log."""
    db = services.db
    if action == "stop":
        request = await file_action_request(db, doc, "stop", POLICY, rule=rule, reason=reason)
        if request is None:
            return  # a user's request got there first
    else:
        request = await file_delete_request(services, doc, POLICY, rule=rule, reason=reason)
        if request is None:
            return  # a delete is on its way already
    await services.events.add(doc["_id"], "policy", f"{reason}: {'stopping' if action == 'stop' else 'deleting'} "
                              f"it (rule {rule})", step=rule)
    await audit_policy_request(db, request, action)
    log.info("policy %s: %s %s (%s)", rule, action, doc["_id"], reason)
    report.acted.append((doc["_id"], rule, action))
