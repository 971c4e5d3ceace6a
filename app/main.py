"""The FastAPI application: routes, problem handlers, limits, and (optionally) a worker.

``onebox serve`` runs this app with an in-process worker; ``onebox worker``
runs workers alone against the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app.api import admin, agent, catalog, health, instances, policies, qa, snapshots, web
from app.problems import Problem, install, problem_response
from app.services import Services
from app.settings import Settings, get_settings
from app.worker.runner import Worker

log = logging.getLogger("onebox")


class BodySizeLimit:
    """Refuse bodies over ``limit`` bytes with 413, whether or not Content-Length says so."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = Problem(413, "payload_too_large", "Request body too large", f"the limit is {self.limit} bytes")
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await problem_response(too_large)(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await problem_response(too_large)(scope, receive, send)


class SlowRequestLog:
    """A warning for every request slower than ``threshold`` seconds, from arrival to the end of its
    response: how an operator sees a struggling database or a blocked event loop."""

    def __init__(self, app, threshold: float) -> None:
        self.app, self.threshold = app, threshold

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = None

        async def watching_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching_send)
        finally:
            took = time.monotonic() - started
            if took > self.threshold and not scope["path"].endswith("/stream"):
                log.warning("slow request: %s %s → %s in %.2fs", scope["method"], scope["path"], status, took)


class _TooLarge(Exception):
    pass


async def _ensure_indexes_forever(services: Services) -> None:
    while True:
        try:
            await services.db.ensure_indexes()
            return
        except Exception as exc:  # noqa: BLE001 - the database may come up later
            log.warning("could not create indexes yet (%s); retrying", type(exc).__name__)
            await asyncio.sleep(2)


async def _refresh_jwks(services: Services, stop: asyncio.Event) -> None:
    """Keep the identity provider's keys fresh, off the request path (each fetch has a timeout)."""
    jwks = services.tokens.jwks
    while not stop.is_set():
        await asyncio.to_thread(jwks.refresh)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), services.settings.jwks_refresh_seconds)


def create_app(settings: Settings | None = None, services: Services | None = None, *,
               run_worker: bool = False) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = services or Services.build(settings)
        app.state.services = svc
        indexes = asyncio.create_task(_ensure_indexes_forever(svc))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(indexes), settings.db_timeout_seconds + 2)
        stop = asyncio.Event()
        catalogs = asyncio.create_task(svc.providers.warm_catalogs())
        worker_task = asyncio.create_task(Worker(svc).run(stop)) if run_worker else None
        jwks_task = asyncio.create_task(_refresh_jwks(svc, stop)) if svc.tokens.jwks is not None else None
        try:
            yield
        finally:
            stop.set()
            indexes.cancel()
            catalogs.cancel()
            if worker_task is not None:
                await worker_task
            if jwks_task is not None:
                await jwks_task
            if services is None:
                await svc.close()

    app = FastAPI(
        title="onebox",
        version="0.1.0",
        summary="One VM on AWS, GCP, Azure or this machine, through one REST API.",
        description=(
            "Every `/v1` route needs `Authorization: Bearer <JWT>` (mint one with `onebox token --user NAME`). "
            "Errors are RFC 9457 `application/problem+json` with a stable `code` and, for bad input, "
            "`errors` naming each field."
        ),
        lifespan=lifespan,
    )
    if services is not None:
        app.state.services = services
    install(app)
    app.include_router(health.router)
    app.include_router(instances.router)
    app.include_router(snapshots.router)
    app.include_router(agent.router)
    app.include_router(admin.router)
    app.include_router(policies.router)
    app.include_router(catalog.router)
    app.include_router(qa.router)
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=web.STATIC_DIR), name="static")
    app.add_middleware(BodySizeLimit, limit=settings.max_body_bytes)
    app.add_middleware(SlowRequestLog, threshold=settings.slow_request_seconds)
    app.add_middleware(web.SecurityHeaders)
    if settings.cors_origins:
        # Exact origins only (a wildcard is refused by settings): tokens travel in the Authorization header,
        # so no cookies are needed and credentials stay off.
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
                           expose_headers=["Location", "Retry-After"], max_age=600)
    return app
