"""Jobs and leases: how workers share work through the database.

A job lives inside the document it works on (``instance.job`` or
``snapshot.job``), so the record and its job are written together in one
single-document write, with no transaction. A worker claims a job with one
atomic ``find_one_and_update`` that sets a lease (owner, expiry, a fresh
claim token); it renews the lease while it works. Every later write of that
worker is guarded by the claim token, so a worker that lost its lease (it
stalled, or was presumed dead) can no longer change anything. A worker killed
at any moment simply stops renewing: once the lease expires, another worker
claims the job and resumes at the first step not recorded in
``job.steps_done``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from app.clock import utcnow


class LeaseLost(Exception):
    """Another worker owns this job now; stop without writing anything."""


def new_job(kind: str, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    return {
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

    @property
    def id(self) -> str:
        return self.doc["_id"]

    @property
    def job(self) -> dict[str, Any]:
        return self.doc["job"]

    def _guard(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"_id": self.id, "job.token": self.token, **(extra or {})}

    async def update(self, update: dict[str, Any], *, extra_filter: dict[str, Any] | None = None) -> dict[str, Any]:
        """Apply ``update`` while we still hold the lease; return the new document."""
        doc = await self.queue.collection.find_one_and_update(
            self._guard(extra_filter), update, return_document=ReturnDocument.AFTER
        )
        if doc is None:
            raise LeaseLost(self.id)
        self.doc = doc
        return doc

    async def update_if(self, condition: dict[str, Any], update: dict[str, Any]) -> dict[str, Any] | None:
        """Like ``update``, but only when ``condition`` also holds; None when it does not."""
        doc = await self.queue.collection.find_one_and_update(
            self._guard(condition), update, return_document=ReturnDocument.AFTER
        )
        if doc is not None:
            self.doc = doc
            return doc
        if await self.queue.collection.count_documents(self._guard(), limit=1) == 0:
            raise LeaseLost(self.id)
        return None

    async def renew(self) -> bool:
        result = await self.queue.collection.update_one(
            self._guard(), {"$set": {"job.lease_until": utcnow() + self.queue.lease}}
        )
        return result.matched_count == 1


class JobQueue:
    """The jobs inside one collection's documents."""

    def __init__(self, collection: AsyncCollection, worker_id: str, lease_seconds: float) -> None:
        self.collection = collection
        self.worker_id = worker_id
        self.lease = dt.timedelta(seconds=lease_seconds)

    async def claim(self) -> Claim | None:
        now = utcnow()
        token = uuid.uuid4().hex
        doc = await self.collection.find_one_and_update(
            {
                "job.not_before": {"$lte": now},
                "$or": [{"job.lease_until": None}, {"job.lease_until": {"$lt": now}}],
            },
            {
                "$set": {"job.lease_owner": self.worker_id, "job.lease_until": now + self.lease, "job.token": token},
                "$inc": {"job.claims": 1},
            },
            sort=[("job.not_before", 1)],
            return_document=ReturnDocument.AFTER,
        )
        return Claim(self, doc, token) if doc else None

    @staticmethod
    def release_fields(not_before: dt.datetime) -> dict[str, Any]:
        """Give the job back to the queue, to be claimed again at ``not_before``."""
        return {"job.not_before": not_before, "job.lease_owner": None, "job.lease_until": None, "job.token": None}
