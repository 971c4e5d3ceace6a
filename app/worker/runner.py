"""The worker loop: claim jobs, run them, keep their leases alive.

Any number of workers may run against one database (``onebox worker``, or the
one inside ``onebox serve``); the atomic claim in ``app.worker.jobs`` gives
each job to one of them at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from app.lifecycle.action_requests import ACTION_REQUEST_JOBS
from app.lifecycle.delete_requests import DELETE_REQUEST_JOBS
from app.lifecycle.engine import JobContext, run_job
from app.lifecycle.instance_jobs import INSTANCE_JOBS
from app.lifecycle.snapshot_jobs import SNAPSHOT_JOBS
from app.qa.jobs import QA_JOBS
from app.services import Services
from app.worker.jobs import Claim, JobQueue, LeaseLost

log = logging.getLogger("onebox.worker")


class Worker:
    def __init__(self, services: Services, worker_id: str | None = None) -> None:
        self.services = services
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        lease = services.settings.lease_seconds
        db = services.db
        # (queue, job definitions) pairs, polled in this order.
        self.queues = [
            (JobQueue(db.delete_requests, db.claims, self.worker_id, lease), DELETE_REQUEST_JOBS),
            (JobQueue(db.action_requests, db.claims, self.worker_id, lease), ACTION_REQUEST_JOBS),
            (JobQueue(db.instances, db.claims, self.worker_id, lease), INSTANCE_JOBS),
            (JobQueue(db.snapshots, db.claims, self.worker_id, lease), SNAPSHOT_JOBS),
            (JobQueue(db.qa_runs, db.claims, self.worker_id, lease), QA_JOBS),
        ]
        self._tasks: set[asyncio.Task] = set()
        self._stopping = asyncio.Event()  # replaced by run()'s stop event

    async def claim_one(self) -> tuple[Claim, dict] | None:
        for queue, definitions in self.queues:
            claim = await queue.claim()
            if claim is not None:
                return claim, definitions
        return None

    async def maintain(self, stop: asyncio.Event) -> None:
        """Periodic housekeeping: metrics past retention and old rate-limit windows (TTL indexes
        are not portable)."""
        from app.metrics.service import purge_old_metrics
        from app.ratelimit import purge_windows

        while not stop.is_set():
            try:
                purged = await purge_old_metrics(self.services)
                await purge_windows(self.services)
                if purged:
                    log.info("purged %d metric samples past retention", purged)
            except Exception as exc:  # noqa: BLE001 - try again next round
                log.warning("housekeeping failed: %s", type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.services.settings.maintenance_seconds)

    async def reap_periodically(self, stop: asyncio.Event) -> None:
        """The reaper, every ``reaper_interval_seconds``; a lease keeps it to one process at a time."""
        from app.worker.reaper import Reaper

        reaper = Reaper(self.services, self.worker_id)
        while not stop.is_set():
            try:
                await reaper.run_once()
            except Exception as exc:  # noqa: BLE001 - one failed pass must not stop the next
                log.warning("reaper pass failed: %s", type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.services.settings.reaper_interval_seconds)

    async def schedule_periodically(self, stop: asyncio.Event) -> None:
        """The scheduler (TTL, idle, stopped-too-long), every ``scheduler_interval_seconds``; an interval
        slot keeps it to one process at a time."""
        from app.worker.scheduler import Scheduler

        scheduler = Scheduler(self.services, self.worker_id)
        while not stop.is_set():
            try:
                await scheduler.run_once()
            except Exception as exc:  # noqa: BLE001 - one failed pass must not stop the next
                log.warning("scheduler pass failed: %s", type(exc).__name__)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), self.services.settings.scheduler_interval_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.services.settings
        self._stopping = stop
        log.info("worker %s started", self.worker_id)
        background = [asyncio.create_task(self.maintain(stop))]
        if settings.reaper_enabled:
            background.append(asyncio.create_task(self.reap_periodically(stop)))
        if settings.scheduler_enabled:
            background.append(asyncio.create_task(self.schedule_periodically(stop)))
        failures = 0  # claims in a row that failed: the database is away, back off
        while not stop.is_set():
            claimed = None
            if len(self._tasks) < settings.worker_concurrency:
                try:
                    claimed = await self.claim_one()
                    failures = 0
                except Exception as exc:  # noqa: BLE001 - the database may be down for a while
                    failures += 1
                    log.warning("claiming failed (%s); backing off", type(exc).__name__)
            if claimed is not None:
                task = asyncio.create_task(self.execute(*claimed))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                continue
            pause = min(settings.poll_seconds * 2 ** failures, 10.0) if failures else settings.poll_seconds
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
        await self._shut_down(settings.shutdown_grace_seconds)
        await asyncio.gather(*background, return_exceptions=True)
        log.info("worker %s stopped", self.worker_id)

    async def _shut_down(self, grace: float) -> None:
        """Jobs in flight get ``grace`` seconds to finish their step (each then hands its job back
        at the step boundary); the rest are stopped and handed back at once."""
        if not self._tasks:
            return
        log.info("stopping: %d job(s) get %.0fs to finish their current step", len(self._tasks), grace)
        _, pending = await asyncio.wait(list(self._tasks), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def run_until_idle(self, timeout: float = 60.0) -> None:
        """Run jobs until none is claimable (tests, one-shot maintenance)."""
        async def drain():
            while True:
                claimed = await self.claim_one()
                if claimed is None:
                    return
                await self.execute(*claimed)
        await asyncio.wait_for(drain(), timeout)

    async def execute(self, claim: Claim, definitions: dict) -> None:
        definition = definitions.get(claim.job["kind"])
        if definition is None:
            log.error("unknown job kind %r on %s", claim.job["kind"], claim.id)
            return
        ctx = JobContext(self.services, claim, definition.table, stopping=self._stopping)
        work = asyncio.create_task(run_job(ctx, definition))
        renewer = asyncio.create_task(self._keep_lease(claim, work))
        try:
            await work
        except LeaseLost:
            log.warning("lost the lease on %s; another worker carries on", claim.id)
        except asyncio.CancelledError:
            if self._stopping.is_set():
                await self._hand_back(claim)
            elif not work.cancelled():
                raise
            else:
                log.warning("job on %s stopped: the lease was lost", claim.id)
        except Exception:  # noqa: BLE001 - the lease expires and another worker retries
            log.exception("job on %s crashed; it will be retried when its lease expires", claim.id)
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    @staticmethod
    async def _hand_back(claim: Claim) -> None:
        """Stopping mid-step: release the lease now rather than make the next worker wait it out
        (steps are idempotent, so the step simply runs again there)."""
        try:
            await asyncio.wait_for(claim.release(), 5.0)
            log.warning("stopped mid-step on %s; handed the job back", claim.id)
        except Exception as exc:  # noqa: BLE001 - LeaseLost or an outage: the lease then simply expires
            log.warning("could not hand back %s (%s); its lease will expire", claim.id, type(exc).__name__)

    async def _keep_lease(self, claim: Claim, work: asyncio.Task) -> None:
        interval = max(self.services.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            try:
                held = await claim.renew()
            except Exception:  # noqa: BLE001 - keep trying until the lease would run out
                log.warning("could not renew the lease on %s", claim.id)
                continue
            if not held:
                work.cancel()
                return
