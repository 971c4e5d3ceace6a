"""Liveness and readiness, for load balancers and orchestrators (no token needed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import DeadlineRoute, ServicesDep

router = APIRouter(route_class=DeadlineRoute, tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process lives."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "the database does not answer"}})
async def readyz(services: ServicesDep):
    """200 when the database answers, 503 otherwise."""
    if await services.db.ping(timeout=2.0):
        return {"status": "ready"}
    return JSONResponse({"status": "database unavailable"}, status_code=503)
