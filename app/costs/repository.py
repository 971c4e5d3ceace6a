"""Reading what the ledger needs from the database, and the costs feature's own collections.

The ledger is computed from the instance and snapshot records themselves (their ``transitions``);
this module only reads them, never writes them (a record has one writer: its job). The feature's
own documents — price overrides, budgets, reservations, alerts, team assignments, webhook
deliveries — are each written by inserts or by one writer at a time, as described where they are
used.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.clock import utcnow
from app.costs.ledger import Record
from app.costs.prices import Override, PriceBook
from app.db import Database

ENDED = ("deleted", "failed")  # nothing of the record exists in the cloud any more
LEDGER_FIELDS = {"owner": 1, "team": 1, "name": 1, "provider": 1, "region": 1, "machine_type": 1, "disk_gb": 1,
                 "status": 1, "created_at": 1, "updated_at": 1, "transitions": 1, "instance_id": 1}


def scope_filter(scope: str | None, name: str | None) -> dict[str, Any]:
    """Records counted against a budget: a user's own (``owner``), or a team's (the team the owner was in
    when the instance was created, kept on the record)."""
    if scope == "user":
        return {"owner": name}
    if scope == "team":
        return {"team": name}
    return {}


class CostRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- records -------------------------------------------------------------------------------------
    async def records(self, match: dict[str, Any], start: dt.datetime, end: dt.datetime) -> list[Record]:
        """Every instance and snapshot of ``match`` that may have cost something in ``[start, end)``: made
        before ``end``, and live or ended after ``start`` (an ended record's ``updated_at`` is when it ended)."""
        query = {**match, "created_at": {"$lt": end},
                 "$or": [{"status": {"$nin": list(ENDED)}}, {"updated_at": {"$gte": start}}]}
        instances = [d async for d in self.db.instances.find(query, LEDGER_FIELDS)]
        snapshots = [d async for d in self.db.snapshots.find(query, LEDGER_FIELDS)]
        sizes = {d["_id"]: d.get("disk_gb") for d in instances}
        missing = sorted({s["instance_id"] for s in snapshots if s.get("disk_gb") is None} - set(sizes))
        if missing:  # snapshots made before they recorded their size: their instance's disk
            async for doc in self.db.instances.find({"_id": {"$in": missing}}, {"disk_gb": 1}):
                sizes[doc["_id"]] = doc.get("disk_gb")
        return ([Record.from_doc(d, "instance") for d in instances]
                + [Record.from_doc(d, "snapshot", d.get("disk_gb") or sizes.get(d["instance_id"]) or 0)
                   for d in snapshots])

    async def instance_records(self, docs: list[dict[str, Any]]) -> list[Record]:
        return [Record.from_doc(d, "instance") for d in docs]

    # --- prices --------------------------------------------------------------------------------------
    async def price_book(self) -> PriceBook:
        return PriceBook([Override(d["provider"], d["region"], d["machine_type"], d.get("hourly_usd"),
                                   d["effective_from"], d.get("set_by"))
                          async for d in self.db.price_overrides.find({}).sort([("effective_from", 1), ("_id", 1)])])

    async def add_override(self, override: Override) -> None:
        """Appended, never edited: the ledger charges each hour at the price then in force."""
        await self.db.price_overrides.insert_one({
            "provider": override.provider, "region": override.region, "machine_type": override.machine_type,
            "hourly_usd": override.hourly_usd, "effective_from": override.effective_from, "set_by": override.set_by})

    # --- budgets and teams -------------------------------------------------------------------------
    async def budget(self, scope: str, name: str) -> dict[str, Any] | None:
        return await self.db.budgets.find_one({"_id": f"{scope}:{name}"})

    async def budgets_for(self, user: str, team: str | None) -> list[dict[str, Any]]:
        ids = [f"user:{user}"] + ([f"team:{team}"] if team else [])
        found = {d["_id"]: d async for d in self.db.budgets.find({"_id": {"$in": ids}})}
        return [found[i] for i in ids if i in found]

    async def all_budgets(self) -> list[dict[str, Any]]:
        return [d async for d in self.db.budgets.find({}).sort("_id", 1)]

    async def put_budget(self, scope: str, name: str, values: dict[str, Any], by: str) -> dict[str, Any]:
        doc = {"scope": scope, "name": name, **values, "updated_at": utcnow(), "updated_by": by}
        await self.db.budgets.update_one({"_id": f"{scope}:{name}"}, {"$set": doc}, upsert=True)
        return {"_id": f"{scope}:{name}", **doc}

    async def delete_budget(self, scope: str, name: str) -> bool:
        return (await self.db.budgets.delete_one({"_id": f"{scope}:{name}"})).deleted_count == 1

    async def assigned_team(self, user: str) -> str | None:
        doc = await self.db.team_members.find_one({"_id": user})
        return doc["team"] if doc else None

    async def assign_team(self, user: str, team: str, by: str) -> None:
        await self.db.team_members.update_one({"_id": user}, {"$set": {"team": team, "set_by": by, "at": utcnow()}},
                                              upsert=True)

    async def unassign_team(self, user: str, team: str) -> bool:
        return (await self.db.team_members.delete_one({"_id": user, "team": team})).deleted_count == 1

    async def team_members(self, team: str) -> list[str]:
        return sorted([d["_id"] async for d in self.db.team_members.find({"team": team}, {"_id": 1})])
