"""Admin-only routes: the audit log and per-user quotas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from app import quotas
from app.api.deps import DeadlineRoute, PROBLEM_RESPONSES, ServicesDep
from app.auth.deps import AdminUser

router = APIRouter(route_class=DeadlineRoute, prefix="/v1/admin", tags=["admin"],
                   responses={**PROBLEM_RESPONSES, 403: {"description": "not an admin"}})


class AuditEntry(BaseModel):
    at: str
    actor: str
    role: str
    action: str
    target_type: str
    target_id: str
    address: str | None = None
    detail: dict[str, str | None] | None = Field(default=None, description="e.g. the rule a policy action followed")


class QuotaUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"max_instances": 20, "max_vcpus": 128}]})

    max_instances: int | None = Field(default=None, ge=0, le=100_000)
    max_vcpus: int | None = Field(default=None, ge=0, le=1_000_000)
    max_snapshots: int | None = Field(default=None, ge=0, le=100_000)


class QuotaView(BaseModel):
    user: str
    limits: dict[str, int]
    usage: dict[str, int]


@router.get("/audit", response_model=list[AuditEntry])
async def audit(admin: AdminUser, services: ServicesDep,
                limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[AuditEntry]:
    """Who created, deleted or snapshotted what, newest first."""
    cursor = services.db.audit.find({}, {"_id": 0}).sort("at", -1).limit(limit)
    return [AuditEntry(**{**d, "at": d["at"].isoformat()}) async for d in cursor]


@router.get("/quotas/{user}", response_model=QuotaView)
async def get_quota(user: str, admin: AdminUser, services: ServicesDep) -> QuotaView:
    return QuotaView(user=user, limits=await quotas.limits_for(services.db, services.settings, user),
                     usage=await quotas.usage(services.db, user))


@router.put("/quotas/{user}", response_model=QuotaView)
async def set_quota(user: str, body: QuotaUpdate, admin: AdminUser, services: ServicesDep) -> QuotaView:
    """Per-user limits stored in the database; they win over settings."""
    await services.db.quotas.update_one({"_id": user}, {"$set": body.model_dump()}, upsert=True)
    return await get_quota(user, admin, services)
