"""Agent tokens that no longer work: a set every API process keeps, so an agent's post reads nothing.

An agent token is a signed JWT naming its instance (``sub``) with a ``jti``; verifying it needs no database.
What a signature cannot say is that the token was withdrawn: the instance was deleted, failed, or its token
rotated by a new configuration run. Each of those writes the token's ``jti`` hash into ``agent_revocations``
(``_id`` = the hash, so writing it twice is harmless) before the change it stands for is acted upon.

Each process keeps the hashes in memory and reads only what was added since its last read, at most every
``agent_revocation_refresh_seconds``, in the path of the first post after that: a post costs no database read
of its own, and a revocation takes effect in every process within that interval (at once in the process
that made it). A process that has never read the set answers 503 rather than accept an unchecked token.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from app.clock import utcnow
from app.db import is_duplicate_key

# Revocations become visible to other processes' reads in any order within this window (clocks of several
# processes, a write that took a while): every read looks this far back, and the set absorbs repeats.
OVERLAP = dt.timedelta(seconds=30)


async def revoke(db, instance_id: str, jti_hash: str | None, reason: str) -> None:
    """Withdraw one agent token for good (safe to repeat)."""
    if not jti_hash:
        return
    try:
        await db.agent_revocations.insert_one({"_id": jti_hash, "instance_id": instance_id, "reason": reason,
                                               "at": utcnow()})
    except Exception as exc:
        if not is_duplicate_key(exc):
            raise


class RevocationSet:
    """This process's copy of ``agent_revocations``."""

    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self._hashes: set[str] = set()
        self._read_up_to: dt.datetime | None = None  # newest ``at`` seen
        self._fresh_until = 0.0  # monotonic
        self._lock = asyncio.Lock()

    def add(self, jti_hash: str | None) -> None:
        if jti_hash:
            self._hashes.add(jti_hash)

    async def is_revoked(self, db, jti_hash: str) -> bool:
        if time.monotonic() >= self._fresh_until:
            await self._refresh(db)
        return jti_hash in self._hashes

    async def _refresh(self, db) -> None:
        async with self._lock:  # concurrent posts share one read
            if time.monotonic() < self._fresh_until:
                return
            started = time.monotonic()
            query = {} if self._read_up_to is None else {"at": {"$gte": self._read_up_to - OVERLAP}}
            newest = self._read_up_to
            async for doc in db.agent_revocations.find(query, {"at": 1}):
                self._hashes.add(doc["_id"])
                newest = doc["at"] if newest is None or doc["at"] > newest else newest
            self._read_up_to = newest or utcnow() - OVERLAP
            self._fresh_until = started + self.refresh_seconds

    def __len__(self) -> int:
        return len(self._hashes)
