"""Action requests: how a stop, start or reboot reaches an instance a job may be holding.

Like a delete (``app.lifecycle.delete_requests``), a stop, start or reboot is
never written into the instance by whoever asks for it — a user through the
API, or a policy rule through the scheduler. It is recorded as a document of
its own in ``action_requests``, whose ``_id`` is the instance's id: the unique
index lets one request per instance wait at a time, so a user's stop and an
automatic one never race (the second is refused, 409 for a user, skipped by
the scheduler). This module's job then carries it out:

* it waits while another job holds the instance (a snapshot being made of it
  counts too), and drops the request, with an event, when the instance is no
  longer in the status the action needs (a delete came first, say);
* otherwise it moves the instance in one guarded write to ``stopping``,
  ``starting`` or ``rebooting`` with the action's job (``app.lifecycle.power_jobs``)
  and records who asked (``last_request``), then removes the request.

A dispatch killed between its two writes is recognised on resume by the
request's id in the instance's job or ``last_request``, and only finishes.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.audit import record_system_action
from app.clock import utcnow
from app.db import is_duplicate_key
from app.lifecycle.engine import JobBase, JobContext, NotYet
from app.lifecycle.states import ACTIONS, INSTANCE_TRANSITIONS, check_transition, recorded
from app.worker.jobs import new_job

WAIT_SECONDS = 0.5
POLICY = "policy"  # requested_by of the scheduler's own requests


def new_action_request(instance: dict[str, Any], action: str, requested_by: str, *,
                       rule: str | None = None, reason: str | None = None) -> dict[str, Any]:
    if action not in ACTIONS:
        raise ValueError(action)
    now = utcnow()
    return {
        "_id": instance["_id"],
        "id": uuid.uuid4().hex,
        "instance_id": instance["_id"],
        "owner": instance["owner"],
        "action": action,
        "requested_by": requested_by,
        "rule": rule,  # the rule that fired when onebox asks by itself (ttl, idle, …); None for a user's request
        "reason": reason,
        "requested_at": now,
        "job": new_job("dispatch", now),
    }


async def file_action_request(db, instance: dict[str, Any], action: str, requested_by: str, *,
                              rule: str | None = None, reason: str | None = None) -> dict[str, Any] | None:
    """Record the request; None when another request for this instance is already waiting."""
    request = new_action_request(instance, action, requested_by, rule=rule, reason=reason)
    try:
        await db.action_requests.insert_one(request)
    except Exception as exc:
        if is_duplicate_key(exc):
            return None
        raise
    return request


async def audit_policy_request(db, request: dict[str, Any], action: str) -> None:
    """The audit record of a request onebox filed by itself (it names a ``rule``), with ``requested_by`` as
    the actor: written once, whoever calls this — the scheduler right after filing it, and the dispatcher
    that carries it out, in case the scheduler died in between."""
    await record_system_action(db, request["requested_by"], f"instance.{action}", "instance", request["instance_id"],
                               entry_id=f"request:{request['id']}", rule=request.get("rule"),
                               reason=request.get("reason"), owner=request.get("owner"))


def who(request: dict[str, Any]) -> str:
    """Who asked, for events: ``alice``, or ``policy: ttl``."""
    if request.get("rule"):
        return f"{request['requested_by']}: {request['rule']}"
    return request["requested_by"]


class DispatchActionJob(JobBase):
    kind = "dispatch"
    steps = ("dispatch",)
    retry_forever = True
    announce_steps = False

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None:
        request = ctx.doc
        db = ctx.services.db
        target = await db.instances.find_one({"_id": request["instance_id"]})
        if target is None:
            return None
        job = target.get("job")
        if (job or {}).get("request") == request["id"] or (target.get("last_request") or {}).get("id") == request["id"]:
            return None  # dispatched before a crash; only the request's removal was left
        action = request["action"]
        if request.get("rule"):  # filed by onebox itself: its audit record, once
            await audit_policy_request(db, request, action)
        if await db.delete_requests.find_one({"_id": target["_id"]}, {"_id": 1}):
            await ctx.event("request.dropped", f"{action} requested by {who(request)} dropped: the instance is "
                            "being deleted", action)
            return None
        if job is not None:
            raise NotYet(WAIT_SECONDS)  # its current job ends first
        needed, moving = ACTIONS[action]
        if target["status"] != needed:
            await ctx.event("request.dropped", f"{action} requested by {who(request)} dropped: the instance is "
                            f"{target['status']}, not {needed}", action)
            return None
        making = {"owner": target["owner"], "instance_id": target["_id"], "status": "creating"}  # (owner, _id) index
        if await db.snapshots.find_one(making, {"_id": 1}):
            raise NotYet(WAIT_SECONDS)  # a snapshot being made of it finishes first
        check_transition(needed, moving, INSTANCE_TRANSITIONS)
        now = utcnow()
        moved = await db.instances.update_one(
            {"_id": target["_id"], "status": needed, "job": None},
            {"$set": {"status": moving.value, "updated_at": now, "job": {**new_job(action, now), "request": request["id"]},
                      "last_request": {"id": request["id"], "action": action, "requested_by": request["requested_by"],
                                       "rule": request.get("rule"), "reason": request.get("reason"),
                                       "requested_at": request["requested_at"]}},
             "$push": {"transitions": recorded(needed, moving, now)}},
        )
        if moved.matched_count:
            await ctx.event("status", f"{needed} → {moving} (requested by {who(request)})", action)
        return None

    async def succeed(self, ctx: JobContext) -> bool:
        await ctx.db_call(lambda: ctx.services.db.action_requests.delete_one(
            {"_id": ctx.doc["_id"], "job.token": ctx.claim.token}), "removing the request")
        return True


ACTION_REQUEST_JOBS = {DispatchActionJob.kind: DispatchActionJob()}
