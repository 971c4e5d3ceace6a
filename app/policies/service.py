"""Policies and instances' own lifecycle settings: where they are stored, how they are merged and checked.

An admin's policy for a user (or ``_default``, for everyone) is one document in ``policies``; the settings
(``ONEBOX_POLICY``) are the last layer. An instance's own lifecycle settings (TTL, idle, stopped days) live in
``lifecycle_settings``, a document of their own keyed by the instance id, apart from the instance record:
the API writes them (on create and ``PATCH``) while a job may be holding the record, and a record has one
writer at a time. The scheduler reads both (``app.policies.checks``); the rules themselves are pure
(``app.policies.rules``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from app.clock import as_utc, utcnow
from app.policies.models import PolicyView
from app.policies.rules import LIFECYCLE_FIELDS, Policy, run_started_at, schedule_for, looser_than_policy
from app.problems import Problem
from app.services import Services
from app.settings import PolicyLimits

DEFAULT_POLICY = "_default"
ENDED = ("deleted",)
NOT_RUNNING = ("stopping", "stopped", "failed", "deleting", "deleted")


class PolicyService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.db = services.db

    async def stored(self, user: str) -> PolicyLimits:
        doc = await self.db.policies.find_one({"_id": user})
        return PolicyLimits(**{k: doc.get(k) for k in PolicyLimits.model_fields}) if doc else PolicyLimits()

    async def effective_for(self, users: Iterable[str]) -> dict[str, Policy]:
        """Every user's merged policy, in one read."""
        users = sorted(set(users))
        stored = {doc["_id"]: doc async for doc in self.db.policies.find({"_id": {"$in": [*users, DEFAULT_POLICY]}})}
        fallback = [stored.get(DEFAULT_POLICY), self.services.settings.policy]
        return {user: Policy.merged([stored.get(user) if user != DEFAULT_POLICY else None, *fallback]) for user in users}

    async def effective(self, user: str) -> Policy:
        return (await self.effective_for([user]))[user]

    async def view(self, user: str) -> PolicyView:
        effective = await self.effective(user)
        return PolicyView(user=user, policy=await self.stored(user),
                          effective=PolicyLimits.model_validate(effective.as_dict()))

    async def put(self, user: str, body: PolicyLimits) -> PolicyView:
        """Replace the user's policy (null fields fall through to the next layer)."""
        await self.db.policies.replace_one({"_id": user}, {"_id": user, **body.model_dump(), "updated_at": utcnow()},
                                           upsert=True)
        return await self.view(user)


class LifecycleSettings:
    """Instances' own lifecycle settings (``lifecycle_settings``, one document per instance)."""

    def __init__(self, services: Services) -> None:
        self.collection = services.db.lifecycle_settings

    async def get(self, instance_id: str) -> dict[str, Any]:
        return await self.collection.find_one({"_id": instance_id}) or {}

    async def many(self, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not instance_ids:
            return {}
        return {doc["_id"]: doc async for doc in self.collection.find({"_id": {"$in": instance_ids}})}

    async def put(self, instance_id: str, owner: str, values: dict[str, Any], ttl_set_at: dt.datetime | None) -> dict:
        doc = {"_id": instance_id, "owner": owner, **{k: values.get(k) for k in LIFECYCLE_FIELDS},
               "ttl_set_at": ttl_set_at, "updated_at": utcnow()}
        await self.collection.replace_one({"_id": instance_id}, doc, upsert=True)
        return doc


def refuse_looser(values: dict[str, Any], policy: Policy, ttl_from: dt.datetime, time_scale: float) -> None:
    """422 naming every field ``values`` sets looser than ``policy``, and its ceiling."""
    looser = looser_than_policy(values, policy, ttl_from, time_scale)
    if looser:
        raise Problem(422, "looser_than_policy", "Looser than your policy allows",
                      "; ".join(f"{x.field}: {x.message}" for x in looser),
                      errors=[{"field": x.field, "message": x.message} for x in looser],
                      ceilings={x.field: x.ceiling for x in looser})


async def attach_lifecycle(services: Services, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The instances with their own lifecycle settings and their ``schedule`` (what the rules will do)."""
    live = [d for d in docs if d["status"] not in ENDED]
    own = await LifecycleSettings(services).many([d["_id"] for d in docs])
    policies = await PolicyService(services).effective_for({d["owner"] for d in live}) if live else {}
    scale = services.settings.policy_time_scale
    out = []
    for doc in docs:
        mine = own.get(doc["_id"], {})
        extra = {k: mine.get(k) for k in LIFECYCLE_FIELDS}
        if mine.get("ttl_seconds") is not None and doc["status"] not in NOT_RUNNING:
            # The instance's own TTL, as the deadline it gives the current run (a stopped one has none yet).
            anchor = max(as_utc(mine.get("ttl_set_at") or doc["created_at"]), run_started_at(doc))
            extra["expires_at"] = anchor + dt.timedelta(seconds=mine["ttl_seconds"] * scale)
        if doc["status"] not in ENDED:
            schedule = schedule_for(doc, mine, policies[doc["owner"]], scale)
            extra["schedule"] = {**schedule.__dict__, "from_policy": list(schedule.from_policy)}
        out.append({**doc, **extra})
    return out
