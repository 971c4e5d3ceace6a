"""The jobs that stop, start and reboot an instance.

Each is one step that calls the provider's blocking, idempotent verb
(``stop_instance``, ``start_instance``, ``reboot_instance``; see
``providers.base``) and records what the cloud then says about the VM:

* stop: ``stopping`` → ``stopped``; the disks are kept, the addresses are
  what the cloud reports for a stopped VM (a public IP it does not reserve is
  gone). The agent's token stays valid: the agent reports again once the VM
  runs; while the instance is stopped its posts are refused (the token is
  paused, ``app.metrics.pauses``, from the moment the VM is stopped until
  the start begins).
* start: ``starting`` → ``running`` with the public IP read again (EC2 without
  an Elastic IP and GCE ephemeral IPs change). Configuration is not run again.
* reboot: ``rebooting`` → ``running``. A reboot resumed after a crash reboots
  again: at least once, as the provider contract says.

Run again after a crash, a step repeats its verb, which finds the VM already
in the wanted state (stop and start) or reboots it once more (reboot).

A step that fails for good (``max_attempts`` retryable errors, or one that is
not retryable, e.g. no capacity to start a GPU VM again) does not remove
anything: its cleanup asks the cloud what state the VM is in, and the job ends
there — ``running``, ``stopped``, or ``failed`` with code
``cloud_resource_missing`` if the VM is gone — with the failure in ``error``
so the user sees why. An instance back in ``running`` or ``stopped`` can be
acted on again (a policy files its request again on its next check).
"""

from __future__ import annotations

from typing import Any

from app.lifecycle.engine import JobBase, JobContext
from app.lifecycle.specs import instance_ref
from app.lifecycle.states import INSTANCE_TRANSITIONS, InstanceStatus
from app.metrics import pauses
from app.metrics.revocations import revoke
from providers.base import InstanceState, NotFound, ProviderError

S = InstanceStatus
SETTLED = {InstanceState.RUNNING: S.RUNNING, InstanceState.STOPPED: S.STOPPED, InstanceState.TERMINATED: S.FAILED}
VM_GONE = "cloud_resource_missing"


class PowerJob(JobBase):
    """What stop, start and reboot share: one provider call, and settling after a failure."""

    table = INSTANCE_TRANSITIONS
    verb: str = ""  # the provider method
    goal: InstanceStatus = S.RUNNING
    cleanup_started = "finding out what state the VM was left in"
    cleanup_done = "the VM's state is known"

    def provider(self, ctx: JobContext):
        return ctx.services.providers.get(ctx.doc["provider"])

    def timeout(self, ctx: JobContext) -> float:
        return ctx.services.settings.wait_running_timeout_seconds

    async def pause_agent(self, ctx: JobContext, paused: bool, moment: str) -> None:
        """Refuse (or accept again) the agent's posts (``app.metrics.pauses``); here at once, elsewhere soon."""
        entry = await ctx.db_call(lambda: pauses.record(ctx.services.db, ctx.doc["_id"], ctx.doc.get("agent_jti_hash"),
                                                        paused, f"{ctx.claim.job['id']}:{moment}"), "an agent pause")
        ctx.services.agent_pauses.note(entry)

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None:
        if self.goal == S.RUNNING:
            await self.pause_agent(ctx, False, step)  # the agent's first posts after the boot are welcome
        verb = getattr(self.provider(ctx), self.verb)
        info = await ctx.services.providers.call(verb, instance_ref(ctx.doc), self.timeout(ctx))
        if self.goal == S.STOPPED:
            await self.pause_agent(ctx, True, step)
        sets = {"cloud_id": info.cloud_id or ctx.doc.get("cloud_id"), "public_ip": info.public_ip,
                "private_ip": info.private_ip, "zone": info.zone or ctx.doc.get("zone")}
        if self.goal == S.RUNNING:
            sets["ssh_port"] = info.ssh_port
            # A cloud that released the address on stop left none in the record: compare with the one before.
            before = ctx.doc.get("public_ip") or ctx.doc.get("last_public_ip")
            await ctx.event("instance.running", f"running at {info.public_ip}:{info.ssh_port}", step)
            if before and info.public_ip and before != info.public_ip:
                await ctx.event("instance.address", f"the public IP changed from {before} to {info.public_ip}", step)
        else:
            await ctx.event("instance.stopped", "stopped; its disks are kept"
                            + ("" if info.public_ip else " (no public IP while stopped)"), step)
            if ctx.doc.get("public_ip"):
                sets["last_public_ip"] = ctx.doc["public_ip"]  # what a start compares its new address with
        return sets

    async def succeed(self, ctx: JobContext) -> bool:
        return await ctx.transition(self.goal, {"job": None, "error": None})

    async def cleanup(self, ctx: JobContext) -> None:
        """Ask the cloud where the VM is now; a VM on its way somewhere is asked again (the engine
        retries a cleanup until it succeeds)."""
        try:
            info = await ctx.services.providers.call(self.provider(ctx).get_instance, instance_ref(ctx.doc))
            state = info.state
        except NotFound:
            state = InstanceState.TERMINATED
        settled = SETTLED.get(InstanceState(state))
        if settled is None:
            raise ProviderError(f"the VM is {state}; looking again", retryable=True)
        await ctx.claim.update({"$set": {"job.settled": settled.value}})

    async def fail(self, ctx: JobContext, failure: dict[str, Any]) -> None:
        settled = S(ctx.claim.job["settled"])
        if settled == S.FAILED:
            jti_hash = ctx.doc.get("agent_jti_hash")
            await ctx.db_call(lambda: revoke(ctx.services.db, ctx.doc["_id"], jti_hash, "lost"), "revoking its token")
            ctx.services.agent_revocations.add(jti_hash)
            error = {"code": VM_GONE, "step": failure.get("step"),
                     "message": f"the VM is gone from the cloud ({failure.get('message')})"}
            await ctx.transition(S.FAILED, {"job": None, "error": error, "public_ip": None, "private_ip": None,
                                            "agent_jti_hash": None})
            await ctx.release_quota()  # nothing runs any more: it no longer counts
            return
        await self.pause_agent(ctx, settled == S.STOPPED, "settled")
        # The cloud got there after all (a stop that timed out, then finished): no error to show.
        error = None if settled == self.goal else failure
        await ctx.transition(settled, {"job": None, "error": error})


class StopInstanceJob(PowerJob):
    kind = "stop"
    steps = ("stop",)
    verb = "stop_instance"
    goal = S.STOPPED

    def timeout(self, ctx: JobContext) -> float:
        return ctx.services.settings.stop_timeout_seconds


class StartInstanceJob(PowerJob):
    kind = "start"
    steps = ("start",)
    verb = "start_instance"
    goal = S.RUNNING


class RebootInstanceJob(PowerJob):
    kind = "reboot"
    steps = ("reboot",)
    verb = "reboot_instance"
    goal = S.RUNNING


POWER_JOBS = {job.kind: job for job in (StopInstanceJob(), StartInstanceJob(), RebootInstanceJob())}
