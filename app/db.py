"""The database: pymongo's async client, collections and indexes.

onebox keeps to what MongoDB 7+ and FerretDB v1 both support: single-document
atomic updates (``find_one_and_update``), unique and compound indexes,
``$set``/``$inc``/``$push`` and upserts. No transactions, change streams, TTL
indexes or ``$lookup``. That is why a job lives inside the document it works
on: inserting the instance queues its job in the same single write.
"""

from __future__ import annotations

import asyncio
import logging

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from app.settings import Settings

log = logging.getLogger("onebox.db")

DUPLICATE_KEY = 11000  # match errors by code, never by message


def is_duplicate_key(exc: Exception) -> bool:
    return isinstance(exc, DuplicateKeyError) or getattr(exc, "code", None) == DUPLICATE_KEY


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

    async def ensure_indexes(self) -> None:
        await self.instances.create_index([("owner", ASCENDING), ("_id", DESCENDING)])
        await self.instances.create_index([("job.not_before", ASCENDING)])
        await self.snapshots.create_index([("owner", ASCENDING), ("_id", DESCENDING)])
        await self.snapshots.create_index([("job.not_before", ASCENDING)])
        await self.events.create_index([("instance_id", ASCENDING), ("at", ASCENDING)])
        await self.idempotency.create_index([("owner", ASCENDING), ("key", ASCENDING)], unique=True)

    async def ping(self, timeout: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self.client.admin.command("ping"), timeout)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return False

    async def close(self) -> None:
        await self.client.close()
