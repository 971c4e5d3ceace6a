"""The web dashboard: its static pages, its feature flags and the development sign-in.

The pages are plain files under ``app/web/static`` (HTML, JavaScript modules,
CSS), served as they are: no build step, nothing fetched from elsewhere. Every
response of this router carries a Content-Security-Policy allowing only this
origin.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Body
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from app.api.deps import PROBLEM_RESPONSES, DeadlineRoute, ServicesDep
from app.problems import Problem

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
DEV_TOKEN_HOURS = 8
DEV_USER_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"

router = APIRouter(route_class=DeadlineRoute, tags=["web"])


class Features(BaseModel):
    features: dict[str, bool] = Field(description="every flag and whether it is on (ONEBOX_FEATURES)")
    dev_login: bool = Field(description="whether POST /v1/dev/token is enabled (ONEBOX_DEV_LOGIN=1, embedded "
                                        "database only)")


class DevTokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user": "alice"}]})

    user: str = Field(default="dev", pattern=DEV_USER_PATTERN, description="the local user to sign in as")


class DevToken(BaseModel):
    token: str
    user: str
    expires_in: int = Field(description="seconds")


def dev_login_enabled(services) -> bool:
    """On only when asked for *and* on the embedded default: never on a shared database."""
    return services.settings.dev_login and services.settings.embedded_db


@router.get("/v1/features", response_model=Features, operation_id="get_features")
async def get_features(services: ServicesDep) -> Features:
    """Feature flags for frontends. Public (the sign-in page reads it first); it reveals only on/off flags."""
    return Features(features=services.settings.feature_flags, dev_login=dev_login_enabled(services))


@router.post("/v1/dev/token", response_model=DevToken, operation_id="dev_token",
             responses={**PROBLEM_RESPONSES,
                        404: {"description": "development sign-in is off", "content": {"application/problem+json": {}}}})
async def dev_token(services: ServicesDep, body: Annotated[DevTokenRequest, Body()] = DevTokenRequest()) -> DevToken:
    """Development only: a user token (never admin) for a local user, without any credential.

    Answers 404 unless `ONEBOX_DEV_LOGIN=1` and the database is the embedded default (`ONEBOX_MONGODB_URL` unset):
    a deployment with a real database is shared, and nobody may mint tokens there without a credential.
    """
    if not dev_login_enabled(services):
        raise Problem(404, "not_found", "Not Found")
    user = body.user
    token = services.tokens.mint(user, ttl=dt.timedelta(hours=DEV_TOKEN_HOURS))
    return DevToken(token=token, user=user, expires_in=DEV_TOKEN_HOURS * 3600)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_WEB_PATH = re.compile(r"^/($|static/)")


class SecurityHeaders:
    """CSP and friends on the dashboard's responses (the API's JSON needs none)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not _WEB_PATH.match(scope.get("path", "")):
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
