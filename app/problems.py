"""RFC 9457 problem responses, made in one place.

Code anywhere raises ``Problem`` (or lets a typed error escape); the handlers
registered by ``install`` turn it into ``application/problem+json`` with a
stable machine-readable ``code`` and, for bad input, ``errors`` naming each
offending field.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.db import is_database_down

log = logging.getLogger("onebox.api")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://onebox.dev/problems/"


class Problem(Exception):
    """An error a client should see, with its HTTP status and stable code."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status, self.code, self.title, self.detail = status, code, title, detail
        self.errors = errors
        self.headers = headers
        self.extra = extra


def field_problem(field: str, message: str, *, status: int = 422, code: str = "invalid_field") -> Problem:
    """Bad input naming one field."""
    return Problem(status, code, "Invalid request", f"{field}: {message}", errors=[{"field": field, "message": message}])


def not_found(kind: str, ident: str) -> Problem:
    return Problem(404, "not_found", f"{kind.capitalize()} not found", f"no {kind} {ident}")


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + problem.code,
        "title": problem.title,
        "status": problem.status,
        "code": problem.code,
    }
    if problem.detail:
        body["detail"] = problem.detail
    if request is not None:
        body["instance"] = request.url.path
    if problem.errors:
        body["errors"] = problem.errors
    body.update(problem.extra)
    return JSONResponse(body, status_code=problem.status, media_type=PROBLEM_MEDIA_TYPE, headers=problem.headers)


def _loc_to_field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _validation_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        message = err.get("msg", "invalid")
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if err.get("type") == "extra_forbidden":
            message = "unknown field; it cannot be set by a client"
        out.append({"field": _loc_to_field(tuple(err.get("loc", ()))), "message": message})
    return out


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the published API serves at ``path`` (from the OpenAPI document)."""
    table = getattr(app.state, "_allow_table", None)
    if table is None:
        table = []
        for template, operations in app.openapi()["paths"].items():
            pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
            table.append((re.compile(pattern), sorted(m.upper() for m in operations)))
        app.state._allow_table = table
    for pattern, methods in table:
        if pattern.match(path):
            return methods
    return []


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem):
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = _validation_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem_response(Problem(422, "invalid_request", "Invalid request", detail, errors=errors), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large",
                 400: "bad_request"}
        code = codes.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path served by several routes
            # (GET and DELETE /v1/instances/{id}) must list them all.
            headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return problem_response(Problem(exc.status_code, code, str(exc.detail), headers=headers), request)

    @app.exception_handler(PyMongoError)
    async def _database(request: Request, exc: PyMongoError):
        if is_database_down(exc):
            log.warning("database unavailable: %s", type(exc).__name__)
            return problem_response(
                Problem(503, "database_unavailable", "Database unavailable", "try again shortly",
                        headers={"Retry-After": "5"}),
                request,
            )
        log.exception("database error")
        return problem_response(Problem(500, "internal_error", "Internal error"), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(Problem(500, "internal_error", "Internal error"), request)
