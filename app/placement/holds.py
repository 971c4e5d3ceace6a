"""Capacity holds: zones that just ran out of capacity, avoided by other launches for a while.

One document per (provider, region, zone, machine type) in ``capacity_holds``, written by the
worker that met the capacity error (an upsert of its expiry: two workers meeting the same
shortage at once simply write about the same time) and read by every worker planning a launch,
so the hold is shared by all worker processes. Capacity is short for a machine type in a zone,
not for the whole zone, so another machine type is not held back. Expired holds are ignored;
they are few (one per zone and type ever short) and are overwritten by the next shortage.
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable

from pymongo.asynchronous.collection import AsyncCollection

from app.clock import utcnow
from app.placement.plan import Choice


def hold_id(provider: str, machine_type: str, choice: Choice) -> str:
    return f"{provider}/{choice.region}/{choice.zone}/{machine_type}"


class CapacityHolds:
    def __init__(self, collection: AsyncCollection) -> None:
        self.collection = collection

    async def held(self, provider: str, machine_type: str, plan: Iterable[Choice]) -> set[Choice]:
        """The choices of ``plan`` that are on hold now."""
        by_id = {hold_id(provider, machine_type, c): c for c in plan if c.zone}
        if not by_id:
            return set()
        found = self.collection.find({"_id": {"$in": sorted(by_id)}, "until": {"$gt": utcnow()}}, {"_id": 1})
        return {by_id[doc["_id"]] async for doc in found}

    async def hold(self, provider: str, machine_type: str, choice: Choice, seconds: float, *,
                   code: str | None, instance_id: str) -> None:
        if not choice.zone or seconds <= 0:
            return
        now = utcnow()
        await self.collection.update_one(
            {"_id": hold_id(provider, machine_type, choice)},
            {"$set": {"provider": provider, "region": choice.region, "zone": choice.zone,
                      "machine_type": machine_type, "code": code, "since": now,
                      "until": now + dt.timedelta(seconds=seconds), "by_instance": instance_id}},
            upsert=True)
