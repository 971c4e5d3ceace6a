"""HTTP route for the catalog: what each enabled provider offers (the create form's dropdowns)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import PROBLEM_RESPONSES, DeadlineRoute, ServicesDep
from app.auth.deps import CurrentUser
from app.catalog.models import CatalogPublic
from app.catalog.service import read_catalog

router = APIRouter(route_class=DeadlineRoute, tags=["catalog"], responses=PROBLEM_RESPONSES)


@router.get("/v1/catalog", response_model=CatalogPublic, operation_id="get_catalog")
async def get_catalog(user: CurrentUser, services: ServicesDep) -> CatalogPublic:
    """Providers, regions and zones, machine types (vCPUs, memory, GPUs, indicative price) and image aliases.

    The same data validates `POST /v1/instances`. A provider whose catalog cannot be read is listed with
    `available: false` and an `error`; the others are answered anyway.
    """
    return await read_catalog(services)
