"""Delete requests: how a user's DELETE reaches a document a job may be writing.

The API never writes an instance or snapshot that a job may hold. It records
the request as a document of its own in ``delete_requests`` (``_id`` = the
target's id, so a second request is refused by the unique index), and this
job carries it out: once the target has no active job (a provision job sees
the request and cancels at its next step; a snapshot being made finishes
first), it moves the target to ``deleting`` and queues the delete job. A
request for a target already deleting or deleted just ends.
"""

from __future__ import annotations

from typing import Any

from app.clock import utcnow
from app.lifecycle.engine import JobBase, JobContext, NotYet
from app.lifecycle.states import INSTANCE_TRANSITIONS, SNAPSHOT_TRANSITIONS, check_transition
from app.worker.jobs import new_job

TABLES = {"instances": INSTANCE_TRANSITIONS, "snapshots": SNAPSHOT_TRANSITIONS}
WAIT_SECONDS = 0.5


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
        check_transition(target["status"], "deleting", TABLES[name])
        now = utcnow()
        moved = await collection.update_one(
            {"_id": target["_id"], "status": target["status"], "job": None},
            {"$set": {"status": "deleting", "updated_at": now, "job": new_job("delete", now)}},
        )
        if moved.matched_count:
            kind = "instance" if name == "instances" else f"snapshot {target['_id']}"
            await ctx.event("status", f"{kind} {target['status']} → deleting", "delete")
        return None

    async def succeed(self, ctx: JobContext) -> bool:
        await ctx.claim.update({"$set": {"job": None, "dispatched_at": utcnow()}})
        return True


DELETE_REQUEST_JOBS = {DispatchDeleteJob.kind: DispatchDeleteJob()}
