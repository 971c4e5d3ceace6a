"""Agent metrics: accept what an instance's own agent posts, summarize health, serve the series.

An agent token works only for its own instance, and only until it is withdrawn (the instance deleted or
failed, or its token rotated): a post is checked against the signature and this process's copy of the
revoked tokens (``app.metrics.revocations``), with no database read of its own. While its instance is
stopped the token is paused, not withdrawn (``app.metrics.pauses``). Samples are stored per
instance in ten-minute buckets plus a "latest" document (``app.metrics.repository``), so a re-sent batch is
not stored twice, a list page's health summaries are one query, and a series is a short index range;
concurrent posts are written together (group commit, ``app.metrics.writer``). Retention is enforced by
``purge_old_metrics``, run periodically by workers, since TTL indexes are not portable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from app.auth.tokens import AgentPrincipal
from app.clock import as_utc, utcnow
from app.metrics import repository
from app.metrics.models import AgentMetrics
from app.metrics.writer import BatchWriteFailed
from app.observability.metrics import AGENT_SAMPLES
from app.problems import Problem
from app.services import Services

STALE_AFTER_INTERVALS = 3


def _revoked() -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", "the agent token is no longer valid",
                   headers={"WWW-Authenticate": "Bearer"})


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


def _unavailable() -> Problem:
    return Problem(503, "database_unavailable", "Database unavailable", "the samples were not stored; send them again",
                   headers={"Retry-After": "5"})


class MetricsService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.db = services.db

    async def _authorize(self, agent: AgentPrincipal, instance_id: str) -> None:
        if instance_id != agent.instance_id:
            raise Problem(403, "forbidden", "Forbidden", "this agent token belongs to another instance")
        if await self.services.agent_revocations.is_revoked(self.db, agent.jti_hash):
            raise _revoked()
        if await self.services.agent_pauses.is_paused(self.db, agent.jti_hash):
            raise _revoked()  # the instance is stopped (app.metrics.pauses): good again once it is started

    async def ingest(self, agent: AgentPrincipal, body: AgentMetrics) -> tuple[int, int]:
        # One budget for the whole post, as for any request (app.api.deps.DeadlineRoute): the token checks'
        # refresh and the wait for the batch share it, so a post answers 503 in time while the database is away.
        budget = self.services.settings.db_timeout_seconds
        deadline = time.monotonic() + budget
        try:
            async with asyncio.timeout(budget):
                await self._authorize(agent, body.instance_id)
        except TimeoutError:
            raise _unavailable() from None
        now = utcnow()
        horizon = now + dt.timedelta(seconds=self.services.settings.metrics_max_future_seconds)
        oldest = now - dt.timedelta(days=self.services.settings.metrics_retention_days)
        samples = []
        for index, sample in enumerate(body.samples):
            at = as_utc(sample.at)
            if at > horizon:
                raise Problem(422, "invalid_request", "Invalid request", f"samples.{index}.at: is in the future",
                              errors=[{"field": f"samples.{index}.at", "message": "is in the future"}])
            if at < oldest:
                continue  # older than we keep anyway
            samples.append({**sample.model_dump(exclude_none=True), "at": at})
        duplicates = 0
        if samples:
            try:
                duplicates = await self.services.metrics_writer.write(
                    repository.sample_ops(body.instance_id, samples), max_wait=max(0.0, deadline - time.monotonic()))
            except BatchWriteFailed:
                raise _unavailable() from None
        AGENT_SAMPLES.inc(len(samples) - duplicates)
        return len(samples) - duplicates, duplicates

    async def health_for(self, instance_ids: list[str]) -> dict[str, dict]:
        interval = self.services.settings.agent_interval_seconds
        found = await repository.latest(self.db.metrics, instance_ids)
        return {i: health_summary(found.get(i) and {**found[i], "last_seen_at": found[i]["at"]}, interval)
                for i in instance_ids}

    async def series(self, instance_id: str, since: dt.datetime | None, until: dt.datetime | None,
                     limit: int) -> list[dict[str, Any]]:
        """The instance's samples between ``since`` (default an hour before ``until``) and ``until`` (default
        now), oldest first: what the dashboard charts and the idle checks read."""
        until = as_utc(until) if until else utcnow() + dt.timedelta(minutes=5)
        try:
            since = as_utc(since) if since else until - dt.timedelta(hours=1)
        except OverflowError:  # an hour before the year 1
            since = dt.datetime.min.replace(tzinfo=dt.timezone.utc)
        if since > until:
            return []
        return await repository.series(self.db.metrics, instance_id, since, until, limit)


async def purge_old_metrics(services: Services) -> int:
    cutoff = utcnow() - dt.timedelta(days=services.settings.metrics_retention_days)
    return await repository.purge(services.db.metrics, cutoff)
