"""Agent tokens of stopped instances: refused while the VM is stopped, good again once it is started.

A stopped instance keeps its agent token — the agent comes back with the VM and configuration is not run
again — so a stop cannot revoke it (``app.metrics.revocations`` is for good). While the instance is
stopped no post is taken with it all the same. ``agent_pauses`` is a log: the stop job appends
``{jti, paused: true, at}`` once the VM is stopped, the start job ``{jti, paused: false, at}`` before it
starts the VM (its agent's first posts are then welcome), and a stop or start that fails for good appends
what the VM was left as. A token is paused when its newest entry says so.

As with revocations, every API process keeps its own copy and reads only the entries added since its last
read, at most every ``agent_revocation_refresh_seconds``, in the path of the first post after that; a post
costs no read of its own. Entries are keyed by the job that wrote them, so a step run again after a crash
writes nothing twice.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from app.clock import as_utc, utcnow
from app.db import is_duplicate_key

OVERLAP = dt.timedelta(seconds=30)  # entries of other processes may become visible a little out of order


async def record(db, instance_id: str, jti_hash: str | None, paused: bool, key: str) -> dict | None:
    """Append one entry (safe to repeat: ``key`` names the job and the moment)."""
    if not jti_hash:
        return None
    entry = {"_id": f"{jti_hash}:{key}", "jti": jti_hash, "instance_id": instance_id, "paused": paused,
             "at": utcnow()}
    try:
        await db.agent_pauses.insert_one(entry)
    except Exception as exc:
        if not is_duplicate_key(exc):
            raise
    return entry


class PauseSet:
    """This process's view of ``agent_pauses``: the newest entry of each token."""

    def __init__(self, refresh_seconds: float) -> None:
        self.refresh_seconds = refresh_seconds
        self._newest: dict[str, tuple[dt.datetime, bool]] = {}
        self._read_up_to: dt.datetime | None = None
        self._fresh_until = 0.0  # monotonic
        self._lock = asyncio.Lock()

    def note(self, entry: dict | None) -> None:
        """Take an entry into account (one read from the log, or one this process just wrote)."""
        if not entry:
            return
        at = as_utc(entry["at"])
        known = self._newest.get(entry["jti"])
        if known is None or at >= known[0]:
            self._newest[entry["jti"]] = (at, entry["paused"])

    async def is_paused(self, db, jti_hash: str) -> bool:
        if time.monotonic() >= self._fresh_until:
            await self._refresh(db)
        newest = self._newest.get(jti_hash)
        return newest is not None and newest[1]

    async def _refresh(self, db) -> None:
        async with self._lock:  # concurrent posts share one read
            if time.monotonic() < self._fresh_until:
                return
            started = time.monotonic()
            query = {} if self._read_up_to is None else {"at": {"$gte": self._read_up_to - OVERLAP}}
            newest = self._read_up_to
            async for entry in db.agent_pauses.find(query, {"jti": 1, "paused": 1, "at": 1}):
                self.note(entry)
                at = as_utc(entry["at"])
                newest = at if newest is None or at > newest else newest
            self._read_up_to = newest or utcnow() - OVERLAP
            self._fresh_until = started + self.refresh_seconds
