"""Mapping stored records to the provider contract's dataclasses."""

from __future__ import annotations

from typing import Any

from providers.base import InstanceRef, InstanceSpec, SnapshotRef

DEFAULT_DISK_GB = 20


def instance_ref(doc: dict[str, Any]) -> InstanceRef:
    return InstanceRef(doc["_id"], doc["region"], doc.get("zone"), doc.get("cloud_id"))


def instance_spec(doc: dict[str, Any], snapshot: dict[str, Any] | None,
                  admin_ssh_public_key: str | None = None) -> InstanceSpec:
    return InstanceSpec(
        instance_id=doc["_id"],
        owner=doc["owner"],
        name=doc["name"],
        region=doc["region"],
        zone=doc.get("zone"),
        machine_type=doc["machine_type"],
        ssh_user=doc["ssh_user"],
        ssh_public_key=doc["ssh_public_key"],
        disk_gb=doc.get("disk_gb") or DEFAULT_DISK_GB,
        image=doc.get("image"),
        snapshot=snapshot_ref(snapshot) if snapshot else None,
        labels=doc.get("labels") or {},
        admin_ssh_public_key=admin_ssh_public_key,
    )


def snapshot_ref(doc: dict[str, Any]) -> SnapshotRef:
    return SnapshotRef(doc["_id"], doc["region"], doc.get("cloud_id"))
