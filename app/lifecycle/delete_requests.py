"""Delete requests: how a user's DELETE reaches a document a job may be writing.

The API never writes an instance or snapshot that a job may hold. It records
the request as a document of its own in ``delete_requests`` (``_id`` = the
target's id, so a second request is refused by the unique index), and this
job carries it out: once the target has no active job (a provision job sees
the request and cancels at its next step; a snapshot being made finishes
first), it moves the target to ``deleting`` and queues the delete job. A
request for a target already deleting or deleted just ends.

The reaper files requests here too, with ``action: mark_lost``, for a running
or stopped instance whose VM is gone from the cloud: the dispatcher then moves the idle
instance to ``failed`` (code ``cloud_resource_missing``) instead, and removes
the request so the user can still delete the record. Going through this one
queue keeps a record to one writer, and a user's delete filed first wins.
The scheduler files deletes here as well (``requested_by: policy``, with the
rule that fired: ``app.policies.checks``).
"""

from __future__ import annotations

import uuid
from typing import Any

from app.clock import utcnow
from app.db import is_duplicate_key
from app.lifecycle.action_requests import audit_policy_request
from app.lifecycle.engine import JobBase, JobContext, NotYet
from app.lifecycle.states import INSTANCE_TRANSITIONS, SNAPSHOT_TRANSITIONS, check_transition, recorded
from app.metrics.revocations import revoke
from app.worker.jobs import new_job

TABLES = {"instances": INSTANCE_TRANSITIONS, "snapshots": SNAPSHOT_TRANSITIONS}
WAIT_SECONDS = 0.5
MARK_LOST = "mark_lost"
LOST_ERROR = {"code": "cloud_resource_missing", "step": "reaper",
              "message": "the VM disappeared from the cloud (deleted outside onebox?)"}


def new_delete_request(collection: str, target: dict[str, Any], requested_by: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "_id": target["_id"],
        "collection": collection,
        "instance_id": target.get("instance_id") or target["_id"],
        "owner": target["owner"],
        "requested_by": requested_by,
        "requested_at": now,
        "job": new_job("dispatch", now),
    }


async def file_delete_request(services, instance: dict[str, Any], requested_by: str, *, rule: str,
                              reason: str) -> dict[str, Any] | None:
    """A delete onebox files by itself (a policy rule; ``rule`` names it): None when a delete is already on
    its way. Its agent's token stops working now, as for a user's delete."""
    request = {**new_delete_request("instances", instance, requested_by), "id": uuid.uuid4().hex, "rule": rule,
               "reason": reason}
    try:
        await services.db.delete_requests.insert_one(request)
    except Exception as exc:
        if is_duplicate_key(exc):
            return None
        raise
    await revoke(services.db, instance["_id"], instance.get("agent_jti_hash"), "delete")
    services.agent_revocations.add(instance.get("agent_jti_hash"))
    return request


class DispatchDeleteJob(JobBase):
    kind = "dispatch"
    steps = ("dispatch",)
    retry_forever = True
    announce_steps = False

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None:
        name = ctx.doc["collection"]
        collection = ctx.services.db.db[name]
        target = await collection.find_one({"_id": ctx.doc["_id"]})
        if target is None or target["status"] in ("deleting", "deleted"):
            return None
        if target.get("job") is not None:
            raise NotYet(WAIT_SECONDS)  # its current job ends first (a provision job cancels itself)
        if ctx.doc.get("action") == MARK_LOST:
            await self._mark_lost(ctx, collection, target)
            return None
        if ctx.doc.get("rule") and ctx.doc.get("id"):  # filed by onebox itself: its audit record, once
            await audit_policy_request(ctx.services.db, ctx.doc, "delete")
        check_transition(target["status"], "deleting", TABLES[name])
        now = utcnow()
        moved = await collection.update_one(
            {"_id": target["_id"], "status": target["status"], "job": None},
            {"$set": {"status": "deleting", "updated_at": now, "job": new_job("delete", now)},
             "$push": {"transitions": recorded(target["status"], "deleting", now)}},
        )
        if moved.matched_count:
            kind = "instance" if name == "instances" else f"snapshot {target['_id']}"
            by = f" (requested by {ctx.doc['requested_by']}: {ctx.doc['rule']})" if ctx.doc.get("rule") else ""
            await ctx.event("status", f"{kind} {target['status']} → deleting{by}", "delete")
        return None

    @staticmethod
    async def _mark_lost(ctx: JobContext, collection, target: dict[str, Any]) -> None:
        status = target["status"]
        if status not in ("running", "stopped"):
            return  # it moved on (deleted, say): nothing is lost any more
        check_transition(status, "failed", INSTANCE_TRANSITIONS)
        now = utcnow()
        moved = await collection.update_one(
            {"_id": target["_id"], "status": status, "job": None},
            {"$set": {"status": "failed", "updated_at": now, "error": LOST_ERROR,
                      "public_ip": None, "private_ip": None, "agent_jti_hash": None},
             "$push": {"transitions": recorded(status, "failed", now)}},
        )
        if moved.matched_count:
            await ctx.event("status", f"{status} → failed: {LOST_ERROR['message']}", "reaper")
            await ctx.release_quota(target["_id"])

    async def succeed(self, ctx: JobContext) -> bool:
        if ctx.doc.get("action") == MARK_LOST:  # done: a user's delete may follow
            await ctx.db_call(lambda: ctx.services.db.delete_requests.delete_one(
                {"_id": ctx.doc["_id"], "job.token": ctx.claim.token}), "removing the request")
            return True
        await ctx.claim.update({"$set": {"job": None, "dispatched_at": utcnow()}})
        return True


DELETE_REQUEST_JOBS = {DispatchDeleteJob.kind: DispatchDeleteJob()}
