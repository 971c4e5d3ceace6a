"""HTTP routes for agents on instances, and for users reading metrics."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import DeadlineRoute, Instances, PROBLEM_RESPONSES, ServicesDep
from app.auth.deps import CurrentAgent, CurrentUser
from app.metrics.models import AgentMetrics, MetricPoint, MetricsAccepted, MetricSeries
from app.metrics.service import MetricsService
from app.problems import field_problem

router = APIRouter(route_class=DeadlineRoute, tags=["metrics"], responses=PROBLEM_RESPONSES)

RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"


def parse_time(field: str, value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise field_problem(field, "is not a valid RFC 3339 time") from None


@router.post("/v1/agent/metrics", status_code=202, response_model=MetricsAccepted,
             responses={403: {"description": "the token belongs to another instance"},
                        413: {"description": "body over the size limit"}})
async def post_metrics(body: AgentMetrics, agent: CurrentAgent, services: ServicesDep) -> MetricsAccepted:
    """An instance's agent reports samples (agent token only: a user token is refused)."""
    accepted, duplicates = await MetricsService(services).ingest(agent, body)
    return MetricsAccepted(accepted=accepted, duplicates=duplicates)


@router.get("/v1/instances/{instance_id}/metrics", response_model=MetricSeries)
async def get_metrics(
    instance_id: str,
    user: CurrentUser,
    instances: Instances,
    services: ServicesDep,
    since: Annotated[str | None, Query(pattern=RFC3339, description="RFC 3339 time, e.g. 2026-11-22T01:00:00Z",
                                       json_schema_extra={"format": "date-time"})] = None,
    until: Annotated[str | None, Query(pattern=RFC3339, description="RFC 3339 time",
                                       json_schema_extra={"format": "date-time"})] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> MetricSeries:
    """The instance's samples between `since` (default: an hour before `until`) and `until` (default: now)."""
    await instances.get(user, instance_id)
    points = await MetricsService(services).series(instance_id, parse_time("since", since),
                                                   parse_time("until", until), limit)
    return MetricSeries(items=[MetricPoint.model_validate(p) for p in points])
