"""What a client may send about instances, and what it gets back.

``InstanceCreate`` forbids unknown fields, so nobody can set ``owner``,
``status`` or any other server-owned field by adding it to a body.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.costs.models import InstanceCost
from app.placement.plan import MAX_FALLBACK_REGIONS, MAX_ZONES
from app.policies.models import (
    ExpiresAt,
    IdleMinutes,
    LastRequest,
    OnExpiry,
    OnIdle,
    Schedule,
    StoppedDays,
    TtlSeconds,
)
from app.validation import NAME_PATTERN, SSH_USER_PATTERN, check_labels, check_ssh_public_key, check_ssh_user

ProviderName = Literal["aws", "gcp", "azure", "local", "qemu"]
MAX_BOOTSTRAP_BYTES = 64 * 1024

EXAMPLE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGl1Bq2dTiQqvBx9C5Ykz3zHfdv0x8WlEY0wVYbIRkKd alice@laptop"


class BucketMount(BaseModel):
    """An S3-compatible bucket goofys mounts on the VM."""

    model_config = ConfigDict(extra="forbid")

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", description="S3 bucket naming rules")
    mountpoint: str = Field(pattern=r"^/[A-Za-z0-9._/-]{1,200}$", description="an absolute path, without ..")
    endpoint: str | None = Field(default=None, max_length=2048,
                                 description="S3-compatible endpoint URL; internal addresses are refused")

    @field_validator("mountpoint")
    @classmethod
    def _no_parent(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise ValueError("must not contain '..'")
        return value


class InstanceCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "train-01",
                    "provider": "local",
                    "region": "local",
                    "machine_type": "local",
                    "ssh_user": "alice",
                    "ssh_public_key": EXAMPLE_KEY,
                    "bootstrap_script": "#!/bin/sh\necho hello > ~/hello.txt\n",
                    "labels": {"team": "research"},
                },
                {
                    "name": "gpu-box",
                    "provider": "aws",
                    "region": "us-east-1",
                    "machine_type": "g5.xlarge",
                    "image": "ubuntu-24.04",
                    "disk_gb": 100,
                    "ssh_user": "alice",
                    "ssh_public_key": EXAMPLE_KEY,
                },
            ]
        },
    )

    name: str = Field(pattern=NAME_PATTERN, max_length=63,
                      description="1-63 lowercase letters, digits and '-', starting with a letter, not ending with '-'")
    provider: ProviderName
    region: str = Field(min_length=1, max_length=64)
    zone: str | None = Field(default=None, min_length=1, max_length=64)
    zones: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_ZONES,
        description="zones to try in order (in the region or the fallback regions); on a capacity error the next")
    fallback_regions: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_FALLBACK_REGIONS,
        description="regions to try in order after the region's zones, on capacity or quota errors")
    machine_type: str = Field(min_length=1, max_length=64)
    image: str | None = Field(default=None, min_length=1, max_length=256,
                              description="a portable alias (ubuntu-22.04, ubuntu-24.04, debian-12) or the cloud's native image id")
    snapshot_id: str | None = Field(default=None, min_length=1, max_length=64,
                                    description="start from one of your snapshots instead of an image")
    disk_gb: int | None = Field(default=None, ge=8, le=4096, description="root disk size; default 20")
    ssh_user: str = Field(pattern=SSH_USER_PATTERN, description="the login account created on the VM")
    ssh_public_key: str = Field(description="one OpenSSH public key line")
    bootstrap_script: str | None = Field(default=None, max_length=MAX_BOOTSTRAP_BYTES,
                                         description="run once on the VM after configuration, as data: never templated")
    labels: dict[str, str] = Field(default_factory=dict, description="up to 32 key/value labels, copied to the cloud")
    buckets: list[BucketMount] = Field(default_factory=list, max_length=8,
                                       description="buckets to mount with goofys (when the service has goofys)")
    # Lifecycle rules (README "Lifecycle"): also changed later with PATCH /v1/instances/{id}.
    ttl_seconds: TtlSeconds = None
    expires_at: ExpiresAt = None
    on_expiry: OnExpiry = None
    idle_minutes: IdleMinutes = None
    on_idle: OnIdle = None
    delete_after_stopped_days: StoppedDays = None

    @field_validator("ssh_public_key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_ssh_public_key(value)

    @field_validator("ssh_user")
    @classmethod
    def _user(cls, value: str) -> str:
        return check_ssh_user(value)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return check_labels(value)

    @model_validator(mode="after")
    def _image_or_snapshot(self) -> "InstanceCreate":
        if self.image is not None and self.snapshot_id is not None:
            raise ValueError("give either image or snapshot_id, not both")
        return self


class PlacementAttempt(BaseModel):
    region: str
    zone: str | None = None
    outcome: Literal["capacity", "quota"]
    code: str | None = Field(default=None, description="the cloud's error code")


class InstanceError(BaseModel):
    code: str
    message: str
    step: str | None = None
    tried: list[PlacementAttempt] | None = Field(default=None, description="no_capacity: every placement tried")


class GpuHealth(BaseModel):
    index: int
    name: str | None = None
    utilization_percent: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    temperature_c: float | None = None
    power_draw_w: float | None = None


class Health(BaseModel):
    state: Literal["healthy", "stale", "unknown", "stopped"] = Field(
        default="unknown", description="stopped: the VM is stopped and its agent is not expected to report")
    last_seen_at: dt.datetime | None = None
    cpu_percent: float | None = None
    memory_percent: float | None = None
    disk_percent: float | None = None
    gpus: list[GpuHealth] = Field(default_factory=list)


class InstancePublic(BaseModel):
    id: str
    name: str
    owner: str
    provider: ProviderName
    region: str = Field(description="where it is (with failover: where it landed, once created)")
    zone: str | None = None
    zones: list[str] = Field(default_factory=list)
    fallback_regions: list[str] = Field(default_factory=list)
    machine_type: str
    image: str | None = None
    snapshot_id: str | None = None
    disk_gb: int
    status: str
    error: InstanceError | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    ssh_port: int | None = Field(default=None, description="where sshd listens on public_ip (2222 on the local provider)")
    cloud_id: str | None = None
    ssh_user: str
    labels: dict[str, str] = Field(default_factory=dict)
    health: Health = Field(default_factory=Health)
    team: str | None = Field(default=None, description="the owner's team when it was created (budgets)")
    cost: InstanceCost | None = Field(default=None, description="what it has cost, and costs per hour now")
    ttl_seconds: int | None = None
    expires_at: dt.datetime | None = Field(default=None, description="the instance's own deadline (from "
                                                                      "ttl_seconds or as given)")
    on_expiry: Literal["stop", "delete"] | None = None
    idle_minutes: int | None = None
    on_idle: Literal["stop", "delete"] | None = None
    delete_after_stopped_days: int | None = None
    schedule: Schedule | None = Field(default=None, description="what the lifecycle rules will do, the policy "
                                                                "included; null once deleted")
    last_request: LastRequest | None = Field(default=None, description="the last stop, start or reboot, and who "
                                                                       "asked for it")
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "InstancePublic":
        fields = {k: v for k, v in doc.items() if k in cls.model_fields and v is not None}
        return cls(id=doc["_id"], **fields)


class InstanceList(BaseModel):
    items: list[InstancePublic]
    next_cursor: str | None = None


class Event(BaseModel):
    at: dt.datetime
    type: str
    step: str | None = None
    actor: str | None = Field(default=None, description="who acted when onebox did by itself: budget, reaper, …")
    message: str
    data: dict[str, Any] | None = Field(default=None, description="details of some events, e.g. failover.attempt: "
                                                                   "{region, zone, outcome, code, next}")
