"""Per-user request rate limit, shared by every API process through the database.

A fixed one-minute window per user: one counter document per (user, minute),
incremented with an upsert. Over the limit → 429 with ``Retry-After`` (the
seconds left in the window). On FerretDB v1 an increment is a read and a
write, so under heavy concurrency a few increments may be lost: the limit is
then enforced approximately (never stricter than configured); on MongoDB it
is exact. Old windows are purged with the metrics retention task.
"""

from __future__ import annotations

import datetime as dt

from pymongo import ReturnDocument

from app.clock import utcnow
from app.problems import Problem

WINDOW_SECONDS = 60


async def check_rate(services, user: str) -> None:
    now = utcnow()
    window = int(now.timestamp()) // WINDOW_SECONDS
    doc = await services.db.rate_limits.find_one_and_update(
        {"_id": f"{user}:{window}"},
        {"$inc": {"count": 1}, "$setOnInsert": {"user": user, "expires_at": now + dt.timedelta(minutes=2)}},
        upsert=True, return_document=ReturnDocument.AFTER,
    )
    limit = services.settings.rate_limit_per_minute
    if doc["count"] > limit:
        retry_after = (window + 1) * WINDOW_SECONDS - int(now.timestamp())
        raise Problem(429, "rate_limited", "Too many requests",
                      f"at most {limit} requests per minute; try again in {retry_after}s",
                      headers={"Retry-After": str(max(retry_after, 1))})


async def purge_windows(services) -> None:
    await services.db.rate_limits.delete_many({"expires_at": {"$lt": utcnow()}})
