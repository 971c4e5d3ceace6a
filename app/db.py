"""The database: pymongo's async client, collections and indexes.

onebox keeps to what MongoDB 7+ and the embedded server (``app.embedded_db``) both
support: single-document updates, unique and compound indexes,
``$set``/``$inc``/``$push``/``$addToSet`` and upserts. No transactions, change
streams, TTL indexes, aggregation or ``$lookup``. A job lives inside the document
it works on, so inserting the instance queues its job in the same single write.
Where two writers could meet, onebox relies on the one thing every server makes
atomic, an insert against a unique index (claims, delete requests, idempotency
keys); see ``app.worker.jobs``.

Every query is shaped for an index, so it costs the same on MongoDB and on the
embedded server, whose planner (``tools/mongo-server``) walks compound indexes
the same way: a lookup by key goes through ``_id`` (``find_one({"_id": x},
{"_id": 1})``, never ``count_documents``); a list is an equality prefix of an
index plus a range and a sort on its next key, with a limit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from typing import Awaitable, Callable, Iterable, Iterator, TypeVar

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import ConnectionFailure, DuplicateKeyError, ExecutionTimeout, OperationFailure

from app.settings import Settings

log = logging.getLogger("onebox.db")

DUPLICATE_KEY = 11000  # match errors by code, never by message
# The database is unreachable or too slow right now (AutoReconnect, NetworkTimeout and
# ServerSelectionTimeoutError are ConnectionFailures): worth waiting for, never a reason to fail a job.
DATABASE_DOWN = (ConnectionFailure, ExecutionTimeout)
T = TypeVar("T")


def is_duplicate_key(exc: Exception) -> bool:
    return isinstance(exc, DuplicateKeyError) or getattr(exc, "code", None) == DUPLICATE_KEY


# Server answers that mean "not now" rather than "wrong request": an internal error or an interrupted
# operation (code 1, as some servers answer when they give up at maxTimeMS), shutting down, stepping
# down, out of time.
SERVER_UNAVAILABLE_CODES = frozenset({1, 50, 91, 189, 262, 11600, 11602})


def is_database_down(exc: BaseException) -> bool:
    return (isinstance(exc, DATABASE_DOWN) or bool(getattr(exc, "timeout", False))
            or (isinstance(exc, OperationFailure) and exc.code in SERVER_UNAVAILABLE_CODES))


async def retry_while_down(op: Callable[[], Awaitable[T]], *, deadline: float, what: str) -> T:
    """Run ``op`` until it gets through, waiting out a database outage until ``deadline``
    (``time.monotonic()``); past it, the last error is raised. ``op`` must be safe to repeat:
    an outage can swallow the answer to a write that was applied."""
    delay = 0.25
    while True:
        try:
            return await op()
        except Exception as exc:
            if not is_database_down(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unavailable (%s) during %s; retrying in %.1fs", type(exc).__name__, what, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 4.0)


SLOT_SPREAD = 32


def free_slots(slots: Iterable[str], taken: set[str]) -> Iterator[str]:
    """The slots not in ``taken``, in order, except the first ``SLOT_SPREAD`` of them, shuffled.

    Numbered slots (quotas, rate limits) are taken with unique inserts. Requests that arrive
    together and all try the first free slot, then the next, lose to each other k² times for a
    burst of k; in a random order they rarely meet. Every free slot is still tried, so a request
    fails only when every slot is taken.
    """
    free = (slot for slot in slots if slot not in taken)
    head = list(itertools.islice(free, SLOT_SPREAD))
    random.shuffle(head)
    return itertools.chain(head, free)


def connect(settings: Settings) -> AsyncMongoClient:
    timeout_ms = int(settings.db_timeout_seconds * 1000)
    return AsyncMongoClient(
        settings.effective_mongodb_url,
        tz_aware=True,
        serverSelectionTimeoutMS=min(timeout_ms, 3000),
        connectTimeoutMS=min(timeout_ms, 2000),
        timeoutMS=timeout_ms,
        appname="onebox",
    )


class Database:
    """The collections onebox uses, on one database."""

    def __init__(self, client: AsyncMongoClient, name: str) -> None:
        self.client = client
        self.db: AsyncDatabase = client[name]
        self.instances = self.db["instances"]
        self.snapshots = self.db["snapshots"]
        self.events = self.db["events"]
        self.idempotency = self.db["idempotency"]
        self.claims = self.db["claims"]
        self.delete_requests = self.db["delete_requests"]
        self.action_requests = self.db["action_requests"]  # stop, start, reboot (app.lifecycle.action_requests)
        self.lifecycle_settings = self.db["lifecycle_settings"]  # TTL, idle, … per instance (app.policies)
        self.policies = self.db["policies"]  # admins' ceilings and defaults per user (app.policies)
        self.notices = self.db["notices"]  # warnings sent once (TTL), by unique id (app.policies.checks)
        self.metrics = self.db["metrics"]  # buckets of samples and each instance's latest (app.metrics.repository)
        self.agent_revocations = self.db["agent_revocations"]
        self.agent_pauses = self.db["agent_pauses"]  # tokens of stopped instances (app.metrics.pauses)
        self.quotas = self.db["quotas"]
        self.quota_slots = self.db["quota_slots"]
        self.rate_limits = self.db["rate_limits"]
        self.audit = self.db["audit"]
        # QA runs (app/qa): runs with their jobs, results kept for baselines and comparisons, admin baselines,
        # one lock per instance under test, cancel requests.
        self.qa_runs = self.db["qa_runs"]
        self.qa_results = self.db["qa_results"]
        self.qa_baselines = self.db["qa_baselines"]
        self.qa_locks = self.db["qa_locks"]
        self.qa_cancel_requests = self.db["qa_cancel_requests"]

    async def ensure_indexes(self) -> None:
        await self.instances.create_index([("owner", ASCENDING), ("_id", DESCENDING)])
        await self.instances.create_index([("job.not_before", ASCENDING)])
        await self.instances.create_index([("status", ASCENDING), ("provider", ASCENDING)])  # reaper, scheduler
        await self.snapshots.create_index([("owner", ASCENDING), ("_id", DESCENDING)])
        await self.snapshots.create_index([("job.not_before", ASCENDING)])
        await self.delete_requests.create_index([("job.not_before", ASCENDING)])
        await self.action_requests.create_index([("job.not_before", ASCENDING)])
        await self.notices.create_index([("at", ASCENDING)])
        await self.events.create_index([("instance_id", ASCENDING), ("at", ASCENDING)])
        await self.metrics.create_index([("instance_id", ASCENDING), ("start", ASCENDING)])
        await self.metrics.create_index([("start", ASCENDING)])
        await self.metrics.create_index([("at", ASCENDING)])
        await self.agent_revocations.create_index([("at", ASCENDING)])
        await self.agent_pauses.create_index([("at", ASCENDING)])
        await self.quota_slots.create_index([("owner", ASCENDING), ("kind", ASCENDING)])
        await self.quota_slots.create_index([("holder", ASCENDING)])
        await self.audit.create_index([("at", DESCENDING)])
        await self.rate_limits.create_index([("user", ASCENDING), ("window", ASCENDING)])
        await self.rate_limits.create_index([("expires_at", ASCENDING)])
        await self.idempotency.create_index([("owner", ASCENDING), ("key", ASCENDING)], unique=True)
        await self.qa_runs.create_index([("owner", ASCENDING), ("_id", DESCENDING)])
        await self.qa_runs.create_index([("job.not_before", ASCENDING)])
        await self.qa_results.create_index([("suite", ASCENDING), ("check", ASCENDING), ("provider", ASCENDING),
                                            ("machine_type", ASCENDING), ("at", DESCENDING)])
        await self.qa_results.create_index([("run_id", ASCENDING)])
        await self.qa_locks.create_index([("run_id", ASCENDING)])

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self.client.admin.command("ping"), timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    async def close(self) -> None:
        await self.client.close()
