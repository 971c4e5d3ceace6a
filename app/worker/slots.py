"""Interval slots: how periodic work (the reaper, the scheduler) runs in one process at a time.

Time is cut into slots of ``interval`` seconds; whoever first inserts ``<name>:<slot>`` into ``claims``
(unique ``_id``: the one insert both MongoDB and FerretDB make atomic) does this slot's pass. A pass longer
than the interval keeps the next slot's winner from starting while it still runs (``until``), and a pass
that ends early says so, so the next one need not wait.
"""

from __future__ import annotations

import datetime as dt
import time

from app.clock import as_utc, utcnow
from app.db import is_duplicate_key


async def acquire_slot(claims, name: str, interval: float, owner: str) -> str | None:
    """The claim of the current slot, or None when another process has it (or the last pass still runs)."""
    interval = max(interval, 0.05)
    slot = int(time.time() // interval)
    previous = await claims.find_one({"_id": f"{name}:{slot - 1}"})
    if previous and as_utc(previous["until"]) > utcnow():
        return None  # the last pass is still going
    claim = f"{name}:{slot}"
    try:
        await claims.insert_one({"_id": claim, "owner": owner, "at": utcnow(),
                                 "until": utcnow() + dt.timedelta(seconds=interval)})
    except Exception as exc:
        if is_duplicate_key(exc):
            return None
        raise
    return claim


async def release_slot(claims, claim: str) -> None:
    """The pass is over: the next slot's winner need not wait for this one."""
    await claims.update_one({"_id": claim}, {"$set": {"until": utcnow()}})
