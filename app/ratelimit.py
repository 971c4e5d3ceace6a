"""Per-user request rate limit, shared by every API process through the database.

A fixed one-minute window per user, counted the way quotas are: each request
takes one numbered slot (``<user>:<window>:<n>``, n < limit) with an insert
against the unique ``_id``, the one operation every MongoDB-wire server makes
atomic. However many processes race, no more than ``limit`` requests of one
user pass in one window. Over the limit → 429 with ``Retry-After`` (the
seconds left in the window). Old windows are purged by the workers. Free
slots are tried in a partly random order (``app.db.free_slots``): a burst of
one user's requests would otherwise fight over one slot after another.
"""

from __future__ import annotations

import datetime as dt

from app.clock import utcnow
from app.db import free_slots, is_duplicate_key
from app.problems import Problem

WINDOW_SECONDS = 60


async def check_rate(services, user: str) -> None:
    now = utcnow()
    window = int(now.timestamp()) // WINDOW_SECONDS
    limit = services.settings.rate_limit_per_minute
    slots = services.db.rate_limits
    taken = {d["_id"] async for d in slots.find({"user": user, "window": window}, {"_id": 1})}
    for slot in free_slots((f"{user}:{window}:{n}" for n in range(limit)), taken):
        try:
            await slots.insert_one({"_id": slot, "user": user, "window": window,
                                    "expires_at": now + dt.timedelta(seconds=2 * WINDOW_SECONDS)})
            return
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
    retry_after = (window + 1) * WINDOW_SECONDS - int(now.timestamp())
    raise Problem(429, "rate_limited", "Too many requests",
                  f"at most {limit} requests per minute; try again in {retry_after}s",
                  headers={"Retry-After": str(max(retry_after, 1))})


async def purge_windows(services) -> None:
    await services.db.rate_limits.delete_many({"expires_at": {"$lt": utcnow()}})
