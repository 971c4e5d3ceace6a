"""HTTP route for Prometheus: ``GET /metrics`` in the text exposition format."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.api.deps import DeadlineRoute, ServicesDep
from app.observability.service import Scraper, render

router = APIRouter(route_class=DeadlineRoute, tags=["monitoring"])


@router.get("/metrics", response_class=Response, operation_id="prometheus_metrics",
            responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}},
                       401: {"description": "ONEBOX_PROMETHEUS_TOKEN is set and the bearer token is not it",
                             "content": {"application/problem+json": {}}}})
async def prometheus_metrics(scraper: Scraper, services: ServicesDep) -> Response:
    """Counters and histograms of every onebox process sharing this host's metrics directory, and the
    instances by provider and status (see the README's Monitoring section for each metric)."""
    body, content_type = await render(services)
    return Response(body, media_type=content_type)
