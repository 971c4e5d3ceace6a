"""The jobs of an instance: provision it, and delete it (stop, start and reboot: ``app.lifecycle.power_jobs``).

Provision: ``create`` (pending → provisioning) → ``wait_running`` →
``configure`` (provisioning → configuring) → running. A failure at any step
cleans up by tag and ends in ``failed``. A delete requested while the
instance is still being provisioned (a document in ``delete_requests``)
cancels at the next step boundary: the job cleans up and records ``failed``
with code ``cancelled``; the delete request's own job then takes the idle
instance on to ``deleting`` and ``deleted`` (``app.lifecycle.delete_requests``).
"""

from __future__ import annotations

from typing import Any

from app.clock import utcnow
from app.lifecycle.engine import JobBase, JobContext
from app.lifecycle.power_jobs import POWER_JOBS
from app.lifecycle.specs import instance_ref, instance_spec
from app.lifecycle.states import INSTANCE_TRANSITIONS, InstanceStatus
from app.metrics.revocations import revoke
from providers.base import ProviderError

S = InstanceStatus


class ProvisionJob(JobBase):
    kind = "provision"
    table = INSTANCE_TRANSITIONS
    steps = ("create", "wait_running", "configure")

    def provider(self, ctx: JobContext):
        return ctx.services.providers.get(ctx.doc["provider"])

    async def cancel_requested(self, ctx: JobContext) -> bool:
        requests = ctx.services.db.delete_requests
        found = await ctx.db_call(lambda: requests.find_one({"_id": ctx.doc["_id"]}, {"_id": 1}),
                                  "a look for a delete request")
        return found is not None

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None:
        provider = self.provider(ctx)
        call = ctx.services.providers.call
        if step == "create":
            if ctx.doc["status"] == S.PENDING:
                await ctx.transition(S.PROVISIONING)
            snapshot = None
            if ctx.doc.get("snapshot_id"):
                snapshot = await ctx.services.db.snapshots.find_one({"_id": ctx.doc["snapshot_id"]})
                if snapshot is None:
                    raise ProviderError(f"snapshot {ctx.doc['snapshot_id']} no longer exists", code="snapshot_gone")
            admin_key = None
            if ctx.services.settings.configure == "ansible":
                from app.configure.keys import deploy_key

                admin_key = deploy_key(ctx.services.settings.data_dir)[1]
            info = await call(provider.create_instance, instance_spec(ctx.doc, snapshot, admin_key))
            if info.extra.get("notice"):  # what the provider wants the user to know (e.g. qemu's accelerator)
                await ctx.event("provider.notice", info.extra["notice"], step)
            return {"cloud_id": info.cloud_id}
        if step == "wait_running":
            timeout = ctx.services.settings.wait_running_timeout_seconds
            info = await call(provider.wait_running, instance_ref(ctx.doc), timeout)
            await ctx.event("instance.running", f"running at {info.public_ip}:{info.ssh_port}", step)
            return {"cloud_id": info.cloud_id, "public_ip": info.public_ip, "private_ip": info.private_ip,
                    "ssh_port": info.ssh_port, "zone": info.zone or ctx.doc.get("zone")}
        if step == "configure":
            if ctx.doc["status"] == S.PROVISIONING:
                await ctx.transition(S.CONFIGURING)
            from app.configure.service import configure_instance

            await configure_instance(ctx)
            return None
        raise ValueError(step)

    async def succeed(self, ctx: JobContext) -> bool:
        if await self.cancel_requested(ctx):
            return False
        return await ctx.transition(S.RUNNING, {"job": None, "error": None})

    async def cleanup(self, ctx: JobContext) -> None:
        await ctx.services.providers.call(self.provider(ctx).delete_instance, instance_ref(ctx.doc))

    async def fail(self, ctx: JobContext, failure: dict[str, Any]) -> None:
        # an agent configured before the failure must not go on posting for an instance that no longer runs
        await ctx.db_call(lambda: revoke(ctx.services.db, ctx.doc["_id"], ctx.doc.get("agent_jti_hash"), "failed"),
                          "withdrawing the agent token")
        await ctx.transition(S.FAILED, {"job": None, "error": failure, "public_ip": None, "private_ip": None})
        # nothing runs any more: it no longer counts
        await ctx.release_quota()


class DeleteInstanceJob(JobBase):
    kind = "delete"
    table = INSTANCE_TRANSITIONS
    steps = ("delete",)
    retry_forever = True  # deletes never give up: a leaked VM costs money

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None:
        if ctx.doc["status"] != S.DELETING:
            await ctx.transition(S.DELETING)
        provider = ctx.services.providers.get(ctx.doc["provider"])
        await ctx.services.providers.call(provider.delete_instance, instance_ref(ctx.doc))
        return None

    async def succeed(self, ctx: JobContext) -> bool:
        await ctx.transition(S.DELETED, {"job": None, "deleted_at": utcnow(), "agent_jti_hash": None})
        await ctx.release_quota()
        return True


INSTANCE_JOBS = {ProvisionJob.kind: ProvisionJob(), DeleteInstanceJob.kind: DeleteInstanceJob(), **POWER_JOBS}
