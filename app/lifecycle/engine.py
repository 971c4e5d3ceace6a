"""The step runner: one job, step by step, with retries, cleanup and events.

A job definition names its ordered steps and what each does; this module
runs them the same way for every kind of job:

* steps already in ``job.steps_done`` are skipped, so a job resumed by another
  worker starts at the first unfinished step (every step is idempotent);
* each step writes ``step.started`` and ``step.succeeded`` (or ``step.retrying``
  / ``step.failed``) events;
* a retryable ``ProviderError`` gives the job back to the queue with
  exponential backoff, up to ``max_attempts`` tries of that step;
* any other failure is recorded in ``job.failure`` and the definition's
  cleanup runs (itself retried, never given up), then ``fail``;
* every write is guarded by the lease (see ``app.worker.jobs``);
* a database outage is waited out, never a reason to fail: writes are retried
  while the lease surely holds, and a step that met the outage runs again
  (steps are idempotent) once the database answers;
* a worker that is stopping hands its job back at the next step boundary.

``ONEBOX_TEST_KILL_AT`` (drills and tests only; nothing happens unless it is
set) makes the worker process die by SIGKILL at a named step: ``<step>``
right after the step's work and before it is recorded (the moment a crash
hurts most), ``<step>:before`` just before its work. ``cleanup`` names the
cleanup of a failed job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import signal
import time
from dataclasses import dataclass
from typing import Any, Protocol

from app import quotas
from app.clock import utcnow
from app.db import is_database_down, retry_while_down
from app.lifecycle.states import check_transition, recorded
from app.services import Services
from app.worker.jobs import Claim, JobQueue, LeaseLost
from providers.base import ProviderError

log = logging.getLogger("onebox.lifecycle")

FAULT_CODE = "injected_fault"


class NotYet(Exception):
    """The step cannot run yet (another job holds the target); look again after ``delay`` seconds."""

    def __init__(self, delay: float = 1.0) -> None:
        super().__init__(delay)
        self.delay = delay


def kill_if_drilled(settings, step: str, moment: str = "") -> None:
    """The crash drill: die like a power cut (SIGKILL, no cleanup, no flush) at a named step."""
    name = f"{step}:{moment}" if moment else step
    if name in settings.test_kill_at:
        log.critical("ONEBOX_TEST_KILL_AT=%s: killing this worker now", name)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class JobContext:
    services: Services
    claim: Claim
    table: dict
    stopping: asyncio.Event | None = None  # set when the worker shuts down: hand over at the next step

    @property
    def doc(self) -> dict[str, Any]:
        return self.claim.doc

    @property
    def event_instance_id(self) -> str:
        return self.doc.get("instance_id") or self.doc["_id"]

    async def event(self, type_: str, message: str, step: str | None = None) -> None:
        await self.services.events.add(self.event_instance_id, type_, message, step=step,
                                       wait_until=self.claim.lease_deadline)

    async def release_quota(self, target_id: str | None = None) -> None:
        """Give back what the target (by default this job's document) counted against its owner's quota."""
        target = target_id or self.doc["_id"]
        await self.db_call(lambda: quotas.release(self.services.db, target), "releasing quota")

    async def db_call(self, op, what: str):
        """A database call from a job (safe to repeat): an outage is waited out while the lease holds."""
        return await retry_while_down(op, deadline=self.claim.lease_deadline, what=what)

    async def transition(self, target: str, sets: dict[str, Any] | None = None,
                         condition: dict[str, Any] | None = None) -> bool:
        """Move to ``target`` through the state table; False when ``condition`` no longer holds."""
        current = self.doc["status"]
        check_transition(current, target, self.table)
        now = utcnow()
        update = {"$set": {"status": target, "updated_at": now, **(sets or {})},
                  "$push": {"transitions": recorded(current, target, now)}}
        doc = await self.claim.update_if({"status": current, **(condition or {})}, update)
        if doc is None:
            return False
        await self.event("status", f"{current} → {target}")
        return True


class JobDefinition(Protocol):
    steps: tuple[str, ...]
    retry_forever: bool  # deletes never give up: a leaked resource costs money
    announce_steps: bool  # write step.started/step.succeeded events
    cancel_message: str  # the failure's message when a cancel request stops the job
    cancel_event: str
    cleanup_started: str  # the cleanup events' messages
    cleanup_done: str

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None: ...
    async def cancel_requested(self, ctx: JobContext) -> bool: ...
    async def succeed(self, ctx: JobContext) -> bool: ...
    async def cleanup(self, ctx: JobContext) -> None: ...
    async def fail(self, ctx: JobContext, failure: dict[str, Any]) -> None: ...


class JobBase:
    """Defaults for job definitions: steps announced, not retried forever, nothing to cancel or clean."""

    table: dict = {}
    steps: tuple[str, ...] = ()
    retry_forever = False
    announce_steps = True
    cancel_message = "deleted before it was ready"
    cancel_event = "delete requested: stopping and cleaning up"
    cleanup_started = "removing everything this instance may own"
    cleanup_done = "cleanup done; nothing is left in the cloud"

    async def cancel_requested(self, ctx: JobContext) -> bool:
        return False

    async def cleanup(self, ctx: JobContext) -> None:
        return None

    async def fail(self, ctx: JobContext, failure: dict[str, Any]) -> None:
        return None


def backoff_delay(settings, attempts: int, retry_after: float | None = None) -> float:
    delay = min(settings.backoff_base_seconds * (2 ** attempts), settings.backoff_max_seconds)
    delay *= 0.5 + random.random() / 2  # jitter, so retries of many jobs spread out
    return max(delay, retry_after or 0.0)


async def _retry_later(ctx: JobContext, attempts: int, delay: float) -> None:
    not_before = utcnow() + dt.timedelta(seconds=delay)
    await ctx.claim.update({"$set": {**JobQueue.release_fields(not_before), "job.attempts": attempts}})


async def run_job(ctx: JobContext, definition: JobDefinition) -> None:
    settings = ctx.services.settings
    if ctx.claim.job.get("failure") is None:
        failure = await _run_steps(ctx, definition)
        if failure is None:
            return
    else:
        failure = ctx.claim.job["failure"]
    await _cleanup(ctx, definition, failure, settings)


async def _run_steps(ctx: JobContext, definition: JobDefinition) -> dict[str, Any] | None:
    """Run the remaining steps; None when the job ended (done, or given back for a retry)."""
    settings = ctx.services.settings
    for step in definition.steps:
        if step in ctx.claim.job["steps_done"]:
            continue
        if await definition.cancel_requested(ctx):
            failure = {"code": "cancelled", "message": definition.cancel_message, "step": step}
            await ctx.claim.update({"$set": {"job.failure": failure, "job.attempts": 0}})
            await ctx.event("step.cancelled", definition.cancel_event, step)
            return failure
        if ctx.stopping is not None and ctx.stopping.is_set():
            await ctx.claim.release()
            await ctx.event("step.handed_over", f"worker stopping: {step} is left to another worker", step)
            return None
        if definition.announce_steps:
            await ctx.event("step.started", f"{step} started", step)
        failure = None
        try:
            kill_if_drilled(settings, step, "before")
            sets = await _run_step_through_outages(ctx, definition, step)
            if step in settings.inject_delays:
                await asyncio.sleep(settings.inject_delays[step])
            kill_if_drilled(settings, step)
            if step in settings.inject_faults:
                raise ProviderError(f"fault injected after {step} (ONEBOX_INJECT_FAULTS)", code=FAULT_CODE)
        except LeaseLost:
            raise
        except NotYet as wait:
            await _retry_later(ctx, ctx.claim.job["attempts"], wait.delay)
            return None
        except ProviderError as exc:
            attempts = ctx.claim.job["attempts"] + 1
            if exc.retryable and (definition.retry_forever or attempts < settings.max_attempts):
                delay = backoff_delay(settings, attempts - 1, exc.retry_after)
                await _retry_later(ctx, attempts, delay)
                await ctx.event("step.retrying", f"{exc.message}; retrying in {delay:.0f}s (attempt {attempts + 1})", step)
                return None
            if definition.retry_forever:
                delay = settings.backoff_max_seconds
                await _retry_later(ctx, attempts, delay)
                await ctx.event("step.retrying", f"{exc.message}; retrying in {delay:.0f}s", step)
                return None
            failure = {"code": exc.code, "message": exc.message, "step": step}
        except Exception as exc:  # noqa: BLE001 - any bug must still end in cleanup, not a stuck job
            if is_database_down(exc):
                raise  # not the job's fault: the lease runs out and the step is tried again
            log.exception("step %s of %s failed unexpectedly", step, ctx.doc["_id"])
            failure = {"code": "internal_error", "message": f"unexpected error during {step}", "step": step}
        if failure is not None:
            await ctx.claim.update({"$set": {"job.failure": failure, "job.attempts": 0}})
            await ctx.event("step.failed", f"{step} failed: {failure['message']}", step)
            return failure
        await ctx.claim.update({"$addToSet": {"job.steps_done": step},
                                "$set": {**sets, "job.attempts": 0, "updated_at": utcnow()}})
        if definition.announce_steps:
            await ctx.event("step.succeeded", f"{step} done", step)
    if await definition.succeed(ctx):
        return None
    # succeed() declined: a delete came in at the last moment.
    failure = {"code": "cancelled", "message": definition.cancel_message, "step": definition.steps[-1]}
    await ctx.claim.update({"$set": {"job.failure": failure, "job.attempts": 0}})
    return failure


async def _run_step_through_outages(ctx: JobContext, definition: JobDefinition, step: str) -> dict[str, Any]:
    """Run one step; if the database goes away under it, wait for it and run the step again."""
    while True:
        try:
            return await definition.run_step(step, ctx) or {}
        except Exception as exc:
            if not is_database_down(exc) or time.monotonic() > ctx.claim.lease_deadline:
                raise
            log.warning("database unavailable during %s of %s; running the step again", step, ctx.doc["_id"])
            await asyncio.sleep(1.0)


async def _cleanup(ctx: JobContext, definition: JobDefinition, failure: dict[str, Any], settings) -> None:
    await ctx.event("cleanup.started", definition.cleanup_started, "cleanup")
    try:
        kill_if_drilled(settings, "cleanup")
        await definition.cleanup(ctx)
    except LeaseLost:
        raise
    except Exception as exc:  # noqa: BLE001 - cleanup is retried until it succeeds
        attempts = ctx.claim.job["attempts"] + 1
        message = exc.message if isinstance(exc, ProviderError) else "unexpected error"
        if not isinstance(exc, ProviderError):
            log.exception("cleanup of %s failed", ctx.doc["_id"])
        retry_after = exc.retry_after if isinstance(exc, ProviderError) else None
        delay = backoff_delay(settings, min(attempts - 1, 10), retry_after)
        await _retry_later(ctx, attempts, delay)
        await ctx.event("cleanup.retrying", f"cleanup failed: {message}; retrying in {delay:.0f}s", "cleanup")
        return
    await ctx.event("cleanup.succeeded", definition.cleanup_done, "cleanup")
    await definition.fail(ctx, failure)
