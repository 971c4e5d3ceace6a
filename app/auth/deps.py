"""Who may call: typed FastAPI dependencies every route states in its signature."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.tokens import AgentPrincipal, InvalidToken, Principal
from app.problems import Problem
from app.ratelimit import check_rate

_bearer = HTTPBearer(auto_error=False, description="a user JWT: `onebox token --user NAME`")


def _unauthorized(detail: str) -> Problem:
    return Problem(401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"})


async def current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("a Bearer token is required")
    services = request.app.state.services
    try:
        principal = services.tokens.verify_user(credentials.credentials)
    except InvalidToken:
        # The reason is not told on purpose: it would help an attacker tune a forgery.
        raise _unauthorized("the token is invalid or expired") from None
    await check_rate(services, principal.subject)
    return principal


CurrentUser = Annotated[Principal, Depends(current_user)]


async def admin_user(user: CurrentUser) -> Principal:
    if not user.is_admin:
        raise Problem(403, "forbidden", "Forbidden", "this route is for admins")
    return user


AdminUser = Annotated[Principal, Depends(admin_user)]


async def current_agent(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> AgentPrincipal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("an agent Bearer token is required")
    try:
        return request.app.state.services.tokens.verify_agent(credentials.credentials)
    except InvalidToken:
        raise _unauthorized("the agent token is invalid or expired") from None


CurrentAgent = Annotated[AgentPrincipal, Depends(current_agent)]
