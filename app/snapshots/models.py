"""What a client may send about snapshots, and what it gets back."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.instances.models import InstanceError
from app.validation import NAME_PATTERN


class SnapshotCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "after-setup"}]})

    name: str = Field(pattern=NAME_PATTERN, max_length=63, description="same rules as instance names")


class SnapshotPublic(BaseModel):
    id: str
    instance_id: str
    owner: str
    name: str
    provider: str
    region: str
    status: str
    cloud_id: str | None = None
    error: InstanceError | None = None
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "SnapshotPublic":
        fields = {k: v for k, v in doc.items() if k in cls.model_fields}
        return cls(id=doc["_id"], **fields)


class SnapshotList(BaseModel):
    items: list[SnapshotPublic]
    next_cursor: str | None = None
