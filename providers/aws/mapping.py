"""EC2's vocabulary for the AWS provider: states, tags, names, tokens.

Pure data and functions, no boto3 calls: how EC2 states map to onebox states,
which AMIs an image alias means and how onebox names what it creates (client
tokens, AMI names, tags). The user data (the cloud-init document that makes the
login user) is ``providers.cloudinit``'s, shared with the other providers.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from typing import Any, Iterator

from providers.base import (
    DEPLOYMENT_TAG,
    IMAGE_ALIASES,
    INSTANCE_ID_TAG,
    MANAGED_BY_TAG,
    OWNER_TAG,
    SNAPSHOT_ID_TAG,
    InstanceState,
    SnapshotState,
)

DEFAULT_IMAGE = "ubuntu-24.04"

# alias -> (owner account, AMI name pattern); the newest available match wins.
IMAGE_FILTERS: dict[str, tuple[str, str]] = {
    "ubuntu-22.04": ("099720109477", "ubuntu/images/hvm-ssd*/ubuntu-jammy-22.04-amd64-server-*"),
    "ubuntu-24.04": ("099720109477", "ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-amd64-server-*"),
    "debian-12": ("136693071363", "debian-12-amd64-*"),
}
assert set(IMAGE_FILTERS) == set(IMAGE_ALIASES), "every portable alias has an AMI filter"

# EC2 instance state -> onebox state.
STATUS_MAP: dict[str, InstanceState] = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "shutting-down": InstanceState.STOPPING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,
    "terminated": InstanceState.TERMINATED,
}

# EC2 image state -> onebox snapshot state ("deregistered" means gone: NotFound).
IMAGE_STATUS_MAP: dict[str, SnapshotState] = {
    "pending": SnapshotState.CREATING,
    "transient": SnapshotState.CREATING,
    "available": SnapshotState.AVAILABLE,
    "failed": SnapshotState.FAILED,
    "invalid": SnapshotState.FAILED,
    "error": SnapshotState.FAILED,
    "disabled": SnapshotState.FAILED,
    "deregistered": SnapshotState.DELETING,
}

STALE_NETWORK_CODES = {"InvalidGroup.NotFound", "InvalidSubnetID.NotFound", "InvalidVpcID.NotFound"}
RESUMABLE_STATES = {"pending", "running", "stopping", "stopped"}
NATIVE_IMAGE_RE = r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$"
SSH_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_AMI_NAME_BAD = re.compile(r"[^A-Za-z0-9()\[\]./'@_ -]")
RESERVED_TAG_KEYS = {MANAGED_BY_TAG, INSTANCE_ID_TAG, SNAPSHOT_ID_TAG, OWNER_TAG, DEPLOYMENT_TAG, "Name"}


def client_token(instance_id: str) -> str:
    """RunInstances' idempotency token for one onebox instance (at most 64 ASCII characters)."""
    token = f"onebox-{instance_id}"
    if len(token) <= 64 and token.isascii() and token.isprintable():
        return token
    return f"onebox-h-{zlib.crc32(instance_id.encode()):08x}-{_sha(instance_id)[:40]}"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def image_name(snapshot_id: str) -> str:
    """A unique, valid AMI name (3-128 characters of a restricted set) for a snapshot id."""
    cleaned = _AMI_NAME_BAD.sub("-", snapshot_id)
    name = f"onebox-{cleaned}"
    if cleaned != snapshot_id or len(name) > 128:  # keep names of different ids different
        name = f"onebox-{cleaned[:80]}-{_sha(snapshot_id)[:16]}"
    return name


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tag_dict(resource: dict[str, Any]) -> dict[str, str]:
    """An EC2 resource's tags as a dict."""
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def tag_filter(key: str, value: str) -> dict[str, Any]:
    return {"Name": f"tag:{key}", "Values": [value]}


def root_volume_gb(image: dict[str, Any]) -> int:
    root = image.get("RootDeviceName")
    for bdm in image.get("BlockDeviceMappings") or []:
        if bdm.get("DeviceName") == root and "Ebs" in bdm:
            return int(bdm["Ebs"].get("VolumeSize") or 0)
    return 0


def image_snapshot_ids(image: dict[str, Any]) -> set[str]:
    return {bdm["Ebs"]["SnapshotId"] for bdm in image.get("BlockDeviceMappings") or []
            if bdm.get("Ebs", {}).get("SnapshotId")}


def state_reason(resource: dict[str, Any]) -> str | None:
    reason = resource.get("StateReason") or {}
    return reason.get("Message") or resource.get("StateTransitionReason") or None


def paginate(client: Any, operation: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Every item under ``key`` of every page of a paginated EC2 call."""
    for page in client.get_paginator(operation).paginate(**params):
        yield from page.get(key) or []
