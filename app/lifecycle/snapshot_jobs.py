"""The jobs of a snapshot: make it from its instance's root disk, and delete it.

Their events go to the instance's event log, where a user watching the
instance sees them.
"""

from __future__ import annotations

from typing import Any

from app.clock import utcnow
from app.lifecycle.engine import JobBase, JobContext
from app.lifecycle.specs import instance_ref, snapshot_ref
from app.lifecycle.states import SNAPSHOT_TRANSITIONS, SnapshotStatus
from providers.base import ProviderError, SnapshotSpec

S = SnapshotStatus


class CreateSnapshotJob(JobBase):
    kind = "create"
    table = SNAPSHOT_TRANSITIONS
    steps = ("snapshot",)

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None:
        instance = await ctx.services.db.instances.find_one({"_id": ctx.doc["instance_id"]})
        if instance is None or not instance.get("cloud_id"):
            raise ProviderError("the instance is gone", code="instance_gone")
        spec = SnapshotSpec(snapshot_id=ctx.doc["_id"], owner=ctx.doc["owner"], name=ctx.doc["name"],
                            instance=instance_ref(instance))
        provider = ctx.services.providers.get(ctx.doc["provider"])
        info = await ctx.services.providers.call(provider.create_snapshot, spec)
        return {"cloud_id": info.cloud_id}

    async def succeed(self, ctx: JobContext) -> bool:
        await ctx.transition(S.AVAILABLE, {"job": None})
        await ctx.event("snapshot.available", f"snapshot {ctx.doc['_id']} is available", "snapshot")
        return True

    async def cleanup(self, ctx: JobContext) -> None:
        provider = ctx.services.providers.get(ctx.doc["provider"])
        await ctx.services.providers.call(provider.delete_snapshot, snapshot_ref(ctx.doc))

    async def fail(self, ctx: JobContext, failure: dict[str, Any]) -> None:
        await ctx.transition(S.FAILED, {"job": None, "error": failure})
        await ctx.release_quota()


class DeleteSnapshotJob(JobBase):
    kind = "delete"
    table = SNAPSHOT_TRANSITIONS
    steps = ("delete_snapshot",)
    retry_forever = True

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None:
        provider = ctx.services.providers.get(ctx.doc["provider"])
        await ctx.services.providers.call(provider.delete_snapshot, snapshot_ref(ctx.doc))
        return None

    async def succeed(self, ctx: JobContext) -> bool:
        await ctx.transition(S.DELETED, {"job": None, "deleted_at": utcnow()})
        await ctx.release_quota()
        return True


SNAPSHOT_JOBS = {CreateSnapshotJob.kind: CreateSnapshotJob(), DeleteSnapshotJob.kind: DeleteSnapshotJob()}
