"""What ``GET /v1/catalog`` answers: every enabled provider's offer, in one document."""

from __future__ import annotations

from pydantic import BaseModel, Field


class MachineTypePublic(BaseModel):
    name: str
    vcpus: int
    memory_gb: float
    gpu_count: int = 0
    gpu_type: str | None = None
    hourly_usd: float | None = Field(default=None, description="on-demand Linux list price, USD per hour (or an "
                                                                 "admin's price for this region); null when unknown")


class RegionPublic(BaseModel):
    name: str
    zones: list[str]
    machine_types: list[MachineTypePublic]


class CatalogError(BaseModel):
    code: str
    message: str


class ProviderCatalog(BaseModel):
    name: str
    available: bool = Field(description="false when the provider's catalog could not be read; `error` says why")
    error: CatalogError | None = None
    regions: list[RegionPublic] = Field(default_factory=list)
    images: list[str] = Field(default_factory=list, description="portable image aliases")
    native_images: bool = Field(default=False, description="whether the cloud's own image ids are accepted too")
    ssh_key_types: list[str] | None = Field(default=None, description="key types accepted; null = any onebox accepts")
    reserved_ssh_users: list[str] = Field(default_factory=list)


class CatalogPublic(BaseModel):
    providers: list[ProviderCatalog]
