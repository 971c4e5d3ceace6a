"""Per-user quotas: live instances, their vCPUs, and snapshots.

A quota is a set of numbered slots per user and kind (``alice:instances:0``
… ``alice:instances:<limit-1>``). Taking one is an insert against the unique
``_id``, the one operation every MongoDB-wire server makes atomic, so however
many requests race, no more slots than the limit can ever be held: 20
parallel creates at a limit of 5 give exactly 5. A request that cannot get
every slot it needs gives back the ones it got; free slots are tried in a
partly random order (``app.db.free_slots``) so that a burst of creates does
not queue on one slot after another. Slots are released when the
instance (or snapshot) ends: ``failed`` or ``deleted``.

Limits come from settings (a default and per-user overrides), and from the
``quotas`` collection, which wins (set by admins through the API).
"""

from __future__ import annotations

from typing import Any

from app.clock import utcnow
from app.db import Database, free_slots, is_duplicate_key
from app.problems import Problem
from app.settings import Settings

KINDS = ("max_instances", "max_vcpus", "max_snapshots")


async def limits_for(db: Database, settings: Settings, user: str) -> dict[str, int]:
    limits = {"max_instances": settings.quota_max_instances, "max_vcpus": settings.quota_max_vcpus,
              "max_snapshots": settings.quota_max_snapshots}
    override = settings.quota_overrides.get(user)
    if override:
        limits.update({k: v for k, v in override.model_dump().items() if v is not None})
    stored = await db.quotas.find_one({"_id": user})
    if stored:
        limits.update({k: stored[k] for k in KINDS if stored.get(k) is not None})
    return limits


async def _take(db: Database, user: str, kind: str, count: int, limit: int, holder: str) -> list[str]:
    """Take ``count`` free slots of ``kind`` for ``holder``; all or none. Slots the holder already has count
    (a request retried after a lost answer must not take its instance's slots twice)."""
    if count <= 0:
        return []
    taken = [d async for d in db.quota_slots.find({"owner": user, "kind": kind}, {"_id": 1, "holder": 1})]
    taken_ids = {d["_id"] for d in taken}
    held = [d["_id"] for d in taken if d.get("holder") == holder]
    if len(held) >= count:
        return held
    count -= len(held)
    mine: list[str] = []
    for slot in free_slots((f"{user}:{kind}:{n}" for n in range(limit)), taken_ids):
        try:
            await db.quota_slots.insert_one({"_id": slot, "owner": user, "kind": kind, "holder": holder,
                                             "at": utcnow()})
        except Exception as exc:
            if not is_duplicate_key(exc):
                await release(db, holder)
                raise
            continue  # someone took it a moment ago
        mine.append(slot)
        if len(mine) == count:
            return mine
    if mine:
        await db.quota_slots.delete_many({"_id": {"$in": mine}})
    raise Problem(403, "quota_exceeded", "Quota exceeded",
                  f"{kind}: the limit is {limit} for {user}", limit=kind, limit_value=limit,
                  errors=[{"field": kind, "message": f"the limit is {limit}"}])


async def acquire(db: Database, settings: Settings, user: str, holder: str,
                  needs: dict[str, int]) -> None:
    """Take every slot ``needs`` asks for ({"max_instances": 1, "max_vcpus": 4}), or raise 403."""
    limits = await limits_for(db, settings, user)
    try:
        for kind, count in needs.items():
            await _take(db, user, kind, count, limits[kind], holder)
    except Exception:
        await release(db, holder)
        raise


async def release(db: Database, holder: str) -> None:
    await db.quota_slots.delete_many({"holder": holder})


async def usage(db: Database, user: str) -> dict[str, Any]:
    counts = {k: 0 for k in KINDS}
    async for slot in db.quota_slots.find({"owner": user}, {"kind": 1}):
        counts[slot["kind"]] += 1
    return counts
