"""Route dependencies: the services of this process, typed for signatures; and the route class
every router uses."""

from __future__ import annotations

from typing import Annotated

import pymongo
from fastapi import Depends, Request
from fastapi.routing import APIRoute

from app.costs.service import CostService
from app.instances.service import InstanceService
from app.services import Services
from app.snapshots.service import SnapshotService


async def get_services(request: Request) -> Services:  # async: no threadpool hop per request
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


class DeadlineRoute(APIRoute):
    """One database budget per request: all the calls a route and its dependencies make share
    ``db_timeout_seconds`` (pymongo's ``timeout()``), so while the database is away a request
    answers 503 within that time however many calls it would have made. A streamed body
    (Server-Sent Events) runs after the route returns, outside the budget."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def within_budget(request: Request):
            with pymongo.timeout(request.app.state.services.settings.db_timeout_seconds):
                return await handler(request)

        return within_budget


async def instance_service(services: ServicesDep) -> InstanceService:
    return InstanceService(services)


async def snapshot_service(services: ServicesDep) -> SnapshotService:
    return SnapshotService(services)


async def cost_service(services: ServicesDep) -> CostService:
    return CostService(services)


Instances = Annotated[InstanceService, Depends(instance_service)]
Costs = Annotated[CostService, Depends(cost_service)]
Snapshots = Annotated[SnapshotService, Depends(snapshot_service)]

PROBLEM_RESPONSES = {
    400: {"description": "the body is not valid JSON", "content": {"application/problem+json": {}}},
    429: {"description": "over the per-user rate limit; see Retry-After", "content": {"application/problem+json": {}}},
    401: {"description": "missing or invalid token", "content": {"application/problem+json": {}}},
    404: {"description": "not found (or not yours)", "content": {"application/problem+json": {}}},
    422: {"description": "invalid input; `errors` names each field", "content": {"application/problem+json": {}}},
    503: {"description": "database unavailable", "content": {"application/problem+json": {}}},
}
