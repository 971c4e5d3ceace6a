"""Admin routes for lifecycle policies: ceilings and defaults per user, and ``_default`` for everyone."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import PROBLEM_RESPONSES, DeadlineRoute, ServicesDep
from app.auth.deps import AdminUser
from app.audit import Audit
from app.policies.models import PolicyView
from app.policies.service import PolicyService
from app.settings import PolicyLimits

router = APIRouter(route_class=DeadlineRoute, prefix="/v1/admin/policies", tags=["admin"],
                   responses={**PROBLEM_RESPONSES, 403: {"description": "not an admin"}})

User = Annotated[str, Path(min_length=1, max_length=200, description="a user, or _default for everyone")]


@router.get("/{user}", response_model=PolicyView, operation_id="get_policy")
async def get_policy(user: User, admin: AdminUser, services: ServicesDep) -> PolicyView:
    """The user's own policy as stored, and the one that applies (theirs, then `_default`'s, then the settings')."""
    return await PolicyService(services).view(user)


@router.put("/{user}", response_model=PolicyView, operation_id="put_policy")
async def put_policy(user: User, body: PolicyLimits, admin: AdminUser, services: ServicesDep,
                     audit: Audit) -> PolicyView:
    """Replace the user's policy (`_default`: everyone's). Null fields fall through to the next layer. Running
    instances obey a tightened policy on their next check."""
    view = await PolicyService(services).put(user, body)
    await audit.record("policy.put", "policy", user)
    return view
