"""Agent metrics: accept what an instance's own agent posts, summarize health, serve the series.

An agent token works only for its own instance, only while that instance is
live, and only until it is rotated (its jti hash is stored on the instance).
Samples go to the ``metrics`` collection keyed by (instance, time), so a batch
re-sent after a lost reply is not stored twice; concurrent posts are written
together (group commit, ``app.metrics.writer``). An instance's health summary
is its latest sample, read through the same (instance, time) index: a post
costs no write of its own beyond its share of a batch, which is what bounds
ingestion on the embedded database. Retention is enforced by
``purge_old_metrics``, run periodically by workers, since TTL indexes are not
portable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from app.auth.tokens import AgentPrincipal
from app.clock import as_utc, utcnow
from app.metrics.models import AgentMetrics
from app.metrics.writer import BatchWriteFailed
from app.observability.metrics import AGENT_SAMPLES
from app.problems import Problem
from app.services import Services

STALE_AFTER_INTERVALS = 3
LIVE_FOR_AGENTS = frozenset({"configuring", "running"})


def _revoked() -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", "the agent token is no longer valid",
                   headers={"WWW-Authenticate": "Bearer"})


class AgentAuthCache:
    """A short-lived cache of (instance → jti hash, live?) so each post costs no extra reads."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, str | None, bool]] = {}

    def get(self, instance_id: str):
        entry = self._entries.get(instance_id)
        if entry and time.monotonic() - entry[0] < self.ttl:
            return entry[1], entry[2]
        return None

    def forget(self, instance_id: str) -> None:
        self._entries.pop(instance_id, None)

    def put(self, instance_id: str, jti_hash: str | None, live: bool) -> None:
        if len(self._entries) > 200_000:
            self._entries.clear()
        self._entries[instance_id] = (time.monotonic(), jti_hash, live)


def health_summary(doc: dict[str, Any] | None, interval_seconds: int, now: dt.datetime | None = None) -> dict:
    """The ``health`` of an instance from its last sample: healthy, stale (3 intervals missed) or unknown."""
    if not doc or not doc.get("last_seen_at"):
        return {"state": "unknown"}
    now = now or utcnow()
    last = as_utc(doc["last_seen_at"])
    stale = (now - last).total_seconds() > STALE_AFTER_INTERVALS * interval_seconds
    return {
        "state": "stale" if stale else "healthy",
        "last_seen_at": last,
        "cpu_percent": doc.get("cpu_percent"),
        "memory_percent": doc.get("memory_percent"),
        "disk_percent": doc.get("disk_percent"),
        "gpus": doc.get("gpus") or [],
    }


class MetricsService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.db = services.db
        self.cache: AgentAuthCache = services.agent_auth_cache

    async def _authorize(self, agent: AgentPrincipal, instance_id: str) -> None:
        if instance_id != agent.instance_id:
            raise Problem(403, "forbidden", "Forbidden", "this agent token belongs to another instance")
        cached = self.cache.get(instance_id)
        if cached is None:
            instance = await self.db.instances.find_one({"_id": instance_id}, {"status": 1, "agent_jti_hash": 1})
            live = bool(instance and instance["status"] in LIVE_FOR_AGENTS)
            if live and await self.db.delete_requests.count_documents({"_id": instance_id}, limit=1):
                live = False
            cached = (instance or {}).get("agent_jti_hash"), live
            self.cache.put(instance_id, *cached)
        jti_hash, live = cached
        if not live or jti_hash != agent.jti_hash:
            raise _revoked()

    async def ingest(self, agent: AgentPrincipal, body: AgentMetrics) -> tuple[int, int]:
        await self._authorize(agent, body.instance_id)
        now = utcnow()
        horizon = now + dt.timedelta(seconds=self.services.settings.metrics_max_future_seconds)
        oldest = now - dt.timedelta(days=self.services.settings.metrics_retention_days)
        docs = []
        for index, sample in enumerate(body.samples):
            at = as_utc(sample.at)
            if at > horizon:
                raise Problem(422, "invalid_request", "Invalid request", f"samples.{index}.at: is in the future",
                              errors=[{"field": f"samples.{index}.at", "message": "is in the future"}])
            if at < oldest:
                continue  # older than we keep anyway
            docs.append({"instance_id": body.instance_id, **sample.model_dump(), "at": at})
        duplicates = 0
        if docs:
            try:
                duplicates = await self.services.metrics_writer.write(docs)
            except BatchWriteFailed:
                raise Problem(503, "database_unavailable", "Database unavailable",
                              "the samples were not stored; send them again", headers={"Retry-After": "5"}) from None
        AGENT_SAMPLES.inc(len(docs) - duplicates)
        return len(docs) - duplicates, duplicates

    async def health_for(self, instance_ids: list[str]) -> dict[str, dict]:
        interval = self.services.settings.agent_interval_seconds

        async def latest(instance_id: str) -> dict | None:
            return await self.db.metrics.find_one({"instance_id": instance_id}, sort=[("at", -1)])

        found = await asyncio.gather(*(latest(i) for i in instance_ids))
        return {i: health_summary(doc and {**doc, "last_seen_at": doc["at"]}, interval)
                for i, doc in zip(instance_ids, found)}

    async def series(self, instance_id: str, since: dt.datetime | None, until: dt.datetime | None,
                     limit: int) -> list[dict]:
        until = as_utc(until) if until else utcnow() + dt.timedelta(minutes=5)
        since = as_utc(since) if since else until - dt.timedelta(hours=1)
        query = {"instance_id": instance_id, "at": {"$gte": since, "$lte": until}}
        cursor = self.db.metrics.find(query, {"_id": 0, "instance_id": 0}).sort("at", 1).limit(limit)
        return [d async for d in cursor]


async def purge_old_metrics(services: Services) -> int:
    cutoff = utcnow() - dt.timedelta(days=services.settings.metrics_retention_days)
    result = await services.db.metrics.delete_many({"at": {"$lt": cutoff}})
    return result.deleted_count
