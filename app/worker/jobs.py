"""Jobs and leases: how workers share work through the database.

A job lives inside the document it works on (``instance.job`` or
``snapshot.job``), so the record and its job are written together in one
single-document write, with no transaction. Claiming must be exclusive on
every backend, including servers that run ``find_one_and_update`` as a read
and a later whole-document write (so that two workers could both "win" it).
The one operation every MongoDB-wire server makes atomic is an insert
against a unique index; so a worker claims generation ``n+1`` of a job by inserting
``<job id>:<n+1>`` into the ``claims`` collection. Only the winner of that
insert writes the lease (owner, expiry, a fresh claim token) into the
document; it renews the lease while it works.

The same reasoning gives the rule every writer keeps: a document has one
writer at a time. While a job is active only its holder writes the document
(its writes are serialized by a lock per claim); requests from outside (a
delete, say) are recorded in documents of their own and picked up by the
holder or by a job of their own. Every later write of that
worker is guarded by the claim token, so a worker that lost its lease (it
stalled, or was presumed dead) can no longer change anything. A worker killed
at any moment simply stops renewing: once the lease expires, another worker
claims the job and resumes at the first step not recorded in
``job.steps_done``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from app.clock import as_utc, utcnow
from app.db import is_duplicate_key, retry_while_down


class LeaseLost(Exception):
    """Another worker owns this job now; stop without writing anything."""


def new_job(kind: str, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    return {
        "id": uuid.uuid4().hex,
        "kind": kind,
        "steps_done": [],
        "attempts": 0,  # failed tries of the current step
        "failure": None,  # set once a step failed for good: cleanup comes next
        "not_before": now,
        "queued_at": now,
        "lease_owner": None,
        "lease_until": None,
        "token": None,
        "claims": 0,
    }


@dataclass
class Claim:
    """One worker's hold on one job."""

    queue: "JobQueue"
    doc: dict[str, Any]
    token: str

    def __post_init__(self) -> None:
        self._lock = asyncio.Lock()  # the renewer and the steps write one at a time
        # Until when (monotonic) the lease surely holds: while the database is down, writes are
        # retried up to here; past it another worker may have taken over, so we stop.
        self.lease_deadline = time.monotonic() + self.queue.lease.total_seconds()

    @property
    def id(self) -> str:
        return self.doc["_id"]

    @property
    def job(self) -> dict[str, Any]:
        return self.doc["job"]

    def _guard(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"_id": self.id, "job.token": self.token, **(extra or {})}

    async def _write(self, filter_: dict[str, Any], update: dict[str, Any]) -> dict[str, Any] | None:
        async def once():
            async with self._lock:
                return await self.queue.collection.find_one_and_update(
                    filter_, update, return_document=ReturnDocument.AFTER)
        return await retry_while_down(once, deadline=self.lease_deadline, what=f"a write to {self.id}")

    async def update(self, update: dict[str, Any], *, extra_filter: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply ``update`` while we still hold the lease; return the new document.

        Updates must be safe to apply twice (``$set``, ``$addToSet``): a write retried
        after an outage may already have been applied."""
        doc = await self._write(self._guard(extra_filter), update)
        if doc is None:
            raise LeaseLost(self.id)
        self.doc = doc
        return doc

    async def update_if(self, condition: dict[str, Any], update: dict[str, Any]) -> dict[str, Any] | None:
        """Like ``update``, but only when ``condition`` also holds; None when it does not."""
        doc = await self._write(self._guard(condition), update)
        if doc is not None:
            self.doc = doc
            return doc
        held = await retry_while_down(lambda: self.queue.collection.find_one(self._guard(), {"_id": 1}),
                                      deadline=self.lease_deadline, what=f"a read of {self.id}")
        if held is None:
            raise LeaseLost(self.id)
        return None

    async def renew(self) -> bool:
        started = time.monotonic()
        async with self._lock:
            result = await self.queue.collection.update_one(
                self._guard(), {"$set": {"job.lease_until": utcnow() + self.queue.lease}}
            )
        if result.matched_count == 1:
            self.lease_deadline = started + self.queue.lease.total_seconds()
            return True
        return False

    async def release(self) -> None:
        """Give the job back at once (worker stopping): another worker may claim it right away."""
        await self.update({"$set": JobQueue.release_fields(utcnow())})


class JobQueue:
    """The jobs inside one collection's documents."""

    def __init__(self, collection: AsyncCollection, claims: AsyncCollection, worker_id: str,
                 lease_seconds: float) -> None:
        self.collection = collection
        self.claims = claims
        self.worker_id = worker_id
        self.lease = dt.timedelta(seconds=lease_seconds)

    async def claim(self, candidates: int = 8) -> Claim | None:
        now = utcnow()
        claimable = {
            "job.not_before": {"$lte": now},
            "$or": [{"job.lease_until": None}, {"job.lease_until": {"$lt": now}}],
        }
        found = self.collection.find(claimable, {"job.id": 1, "job.claims": 1, "job.not_before": 1})
        for candidate in [doc async for doc in found.sort("job.not_before", 1).limit(candidates)]:
            claim = await self._take(candidate, now)
            if claim is not None:
                return claim
        return None

    async def _take(self, candidate: dict[str, Any], now: dt.datetime) -> Claim | None:
        """Claim one candidate the query found claimable, if it still is."""
        job = candidate["job"]
        # Only a job claimable for longer than a lease can hide an abandoned claim: a live claimant
        # writes its lease within moments. (Spares a read on every lost race.)
        suspect = as_utc(job["not_before"]) < now - self.lease
        generation = await self._win_generation(job["id"], job["claims"] + 1, now, suspect)
        if generation is None:
            return None  # another worker won it
        token = uuid.uuid4().hex
        # The candidate was read a while ago (a loaded machine can make that long): the lease is written only
        # if nobody holds one now, so a live lease is never taken over whatever the claims collection says.
        at = utcnow()
        doc = await self.collection.find_one_and_update(
            {"_id": candidate["_id"], "job.id": job["id"], "job.claims": {"$lt": generation},
             "$or": [{"job.lease_until": None}, {"job.lease_until": {"$lt": at}}]},
            {"$set": {"job.lease_owner": self.worker_id, "job.lease_until": at + self.lease,
                      "job.token": token, "job.claims": generation}},
            return_document=ReturnDocument.AFTER,
        )
        return Claim(self, doc, token) if doc is not None else None

    async def _win_generation(self, job_id: str, generation: int, now: dt.datetime, suspect: bool) -> int | None:
        """Insert the claim of ``generation`` (or a later one); None when another worker holds it.

        A worker that died between winning a claim and writing its lease leaves a claim behind that
        the document never saw. Once such a claim is older than a lease, the next generation is
        tried instead, so the job is never stranded; the lease write then asks that the document
        has seen no later generation (``job.claims < generation``) and that no lease is live."""
        while True:
            try:
                await self.claims.insert_one({"_id": f"{job_id}:{generation}", "owner": self.worker_id, "at": now})
                return generation
            except Exception as exc:
                if not is_duplicate_key(exc):
                    raise
            if not suspect:
                return None
            taken = await self.claims.find_one({"_id": f"{job_id}:{generation}"})
            if taken is None or as_utc(taken["at"]) > now - self.lease:
                return None  # a live claim: its worker is writing its lease right now
            generation += 1

    @staticmethod
    def release_fields(not_before: dt.datetime) -> dict[str, Any]:
        """Give the job back to the queue, to be claimed again at ``not_before``."""
        return {"job.not_before": not_before, "job.lease_owner": None, "job.lease_until": None, "job.token": None}
