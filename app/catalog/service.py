"""The catalog of every enabled provider, as the create form needs it.

It is read from the same cached provider catalogs request validation uses
(``InstanceService._check_placement``), so the form never offers what the API
would refuse. Provider calls block, so they run in the registry's threads,
all providers at once; one failing (no credentials, API down) is reported in
its entry and the others are still answered.
"""

from __future__ import annotations

import asyncio
import logging

from app.catalog.models import CatalogError, CatalogPublic, MachineTypePublic, ProviderCatalog, RegionPublic
from app.clock import utcnow
from app.costs.prices import PriceBook
from app.costs.repository import CostRepository
from app.services import Services
from providers.base import Catalog, ProviderError

log = logging.getLogger("onebox.catalog")
CATALOG_TIMEOUT_SECONDS = 30.0


def _public(name: str, catalog: Catalog, book: PriceBook) -> ProviderCatalog:
    now = utcnow()
    return ProviderCatalog(
        name=name,
        available=True,
        regions=[
            RegionPublic(name=region.name, zones=list(region.zones), machine_types=[
                MachineTypePublic(name=mt.name, vcpus=mt.vcpus, memory_gb=mt.memory_gb, gpu_count=mt.gpu_count,
                                  gpu_type=mt.gpu_type,
                                  # the price the ledger charges: an admin's override, else the sheet's
                                  hourly_usd=book.hourly_at(name, region.name, mt.name, now))
                for mt in region.machine_types.values()
            ])
            for region in catalog.regions.values()
        ],
        images=list(catalog.images),
        native_images=catalog.native_image_pattern is not None,
        ssh_key_types=list(catalog.ssh_key_types) if catalog.ssh_key_types is not None else None,
        reserved_ssh_users=sorted(catalog.reserved_ssh_users),
    )


async def _one(services: Services, name: str, book: PriceBook) -> ProviderCatalog:
    registry = services.providers
    try:
        catalog = await asyncio.wait_for(registry.catalog(name), CATALOG_TIMEOUT_SECONDS)
    except ProviderError as exc:  # its message is written for users
        return ProviderCatalog(name=name, available=False, error=CatalogError(code=exc.code or "provider_error",
                                                                                message=exc.message))
    except asyncio.TimeoutError:
        return ProviderCatalog(name=name, available=False,
                               error=CatalogError(code="timeout", message=f"{name} did not answer in time"))
    except Exception:  # noqa: BLE001 - misconfiguration or an SDK bug: log it, do not leak it
        log.exception("catalog of %s unavailable", name)
        return ProviderCatalog(name=name, available=False,
                               error=CatalogError(code="unavailable", message=f"{name} is misconfigured or down; "
                                                                              "see the server's log"))
    return _public(name, catalog, book)


async def read_catalog(services: Services) -> CatalogPublic:
    book = await CostRepository(services.db).price_book()
    return CatalogPublic(providers=list(await asyncio.gather(*(_one(services, n, book)
                                                               for n in services.providers.enabled))))
