"""Compute Engine's vocabulary for the GCP provider: states, images, names, labels, paths.

Pure data and functions, no API calls: how GCE statuses map to onebox states,
which image family an alias means, how onebox names what it creates (VMs,
disks, snapshots, requestIds) and labels it within GCE's label rules, and how
resource paths and self links are read.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Any

from providers import prices
from providers.base import IMAGE_ALIASES, MANAGED_BY_TAG, InstanceState, MachineType, SnapshotState

# GCE instance status -> onebox state. GCE's TERMINATED is a *stopped* VM that still exists.
STATUS_MAP: dict[str, InstanceState] = {
    "PROVISIONING": InstanceState.PENDING,
    "STAGING": InstanceState.PENDING,
    "PENDING": InstanceState.PENDING,
    "REPAIRING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,
    "STOPPING": InstanceState.STOPPING,
    "PENDING_STOP": InstanceState.STOPPING,
    "SUSPENDING": InstanceState.STOPPING,
    "DEPROVISIONING": InstanceState.STOPPING,
    "STOPPED": InstanceState.STOPPED,
    "SUSPENDED": InstanceState.STOPPED,
    "TERMINATED": InstanceState.STOPPED,
}
# States a VM being created never leaves on its own.
DEAD_STATES = {InstanceState.STOPPED, InstanceState.TERMINATED}

SNAPSHOT_STATUS_MAP: dict[str, SnapshotState] = {
    "CREATING": SnapshotState.CREATING,
    "UPLOADING": SnapshotState.CREATING,
    "READY": SnapshotState.AVAILABLE,
    "FAILED": SnapshotState.FAILED,
    "DELETING": SnapshotState.DELETING,
}

# Portable aliases -> (image project, family); resolved with images.getFromFamily.
IMAGE_FAMILIES: dict[str, tuple[str, str]] = {
    "ubuntu-22.04": ("ubuntu-os-cloud", "ubuntu-2204-lts"),
    "ubuntu-24.04": ("ubuntu-os-cloud", "ubuntu-2404-lts-amd64"),
    "debian-12": ("debian-cloud", "debian-12"),
}
assert set(IMAGE_FAMILIES) == set(IMAGE_ALIASES)

_PROJECT = r"(?:[-a-z0-9.]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]"
_GCE_NAME = r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?"
# Native image ids a user may give: projects/<p>/global/images/<name> or …/images/family/<family>.
NATIVE_IMAGE_PATTERN = rf"^projects/{_PROJECT}/global/images/(?:family/)?{_GCE_NAME}$"
NATIVE_IMAGE_RE = re.compile(
    rf"^(?:https://(?:www|compute)\.googleapis\.com/compute/v1/)?"
    rf"projects/(?P<project>{_PROJECT})/global/images/(?:family/(?P<family>{_GCE_NAME})|(?P<name>{_GCE_NAME}))$"
)
_NAME_RE = re.compile(rf"{_GCE_NAME}\Z")
_LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
_LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}\Z")
_SELF_LINK_RE = re.compile(r"^(?:https?://[^/]+/compute/v1/)?(?P<path>projects/.+)$")
INSTANCE_PATH_RE = re.compile(r"^projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)$")
SNAPSHOT_PATH_RE = re.compile(r"^projects/(?P<project>[^/]+)/global/snapshots/(?P<name>[^/]+)$")
DISK_PATH_RE = re.compile(r"^projects/(?P<project>[^/]+)/zones/(?P<zone>[^/]+)/disks/(?P<name>[^/]+)$")
_REQUEST_NS = uuid.UUID("3f1c7d4e-8a59-5b0e-9c61-0b7e2a4f9d13")


# --------------------------------------------------------------------------------------
# naming


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _slug(text: str, n: int) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower()))[:n].strip("-")


def gce_name(prefix: str, ident: str) -> str:
    """A valid GCE resource name for ``ident``, stable and unique per ident."""
    name = f"{prefix}-{ident}"
    if _NAME_RE.match(name):
        return name
    slug = _slug(ident, 40)
    return f"{prefix}-{slug}-{_digest(ident, 10)}" if slug else f"{prefix}-{_digest(ident, 16)}"


def label_value(value: str) -> str:
    """``value`` if GCE accepts it as a label value, else a slug plus a hash (exact for lookups)."""
    if _LABEL_VALUE_RE.match(value):
        return value
    slug = re.sub(r"[^a-z0-9_-]+", "_", value.lower())[:50].strip("_")
    return f"{slug}-{_digest(value, 12)}" if slug else _digest(value, 16)


def _user_labels(labels: dict[str, str] | Any) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in dict(labels or {}).items():
        k = re.sub(r"[^a-z0-9_-]", "_", str(key).lower())[:63]
        if not k or not k[0].isalpha():
            k = ("l" + k)[:63]
        if not _LABEL_KEY_RE.match(k) or k == MANAGED_BY_TAG or k.startswith("onebox-"):
            continue
        out[k] = re.sub(r"[^a-z0-9_-]", "_", str(value).lower())[:63]
    return out


def labels_for(tags: dict[str, str], user: dict[str, str] | None = None) -> dict[str, str]:
    managed = {k: label_value(v) for k, v in tags.items()}
    extra = _user_labels(user) if user else {}
    room = 64 - len(managed)
    return {**dict(list(extra.items())[:room]), **managed}


def request_id(*parts: str) -> str:
    return str(uuid.uuid5(_REQUEST_NS, "\x1f".join(parts)))


def path_of(link: str) -> str:
    """'https://www.googleapis.com/compute/v1/projects/p/…' -> 'projects/p/…'."""
    m = _SELF_LINK_RE.match(link or "")
    return m.group("path") if m else link


def last_segment(link: str) -> str:
    return (link or "").rstrip("/").rsplit("/", 1)[-1]


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def machine_type_of(mt: Any) -> MachineType:
    """One GCE machine type; accelerator-optimized types (a2, g2, a3) name their GPUs."""
    accelerators = list(getattr(mt, "accelerators", None) or [])
    gpu_count = sum(int(a.guest_accelerator_count or 0) for a in accelerators)
    gpu_type = prices.gcp_accelerator_name(accelerators[0].guest_accelerator_type) if accelerators else None
    return MachineType(mt.name, int(mt.guest_cpus), round(mt.memory_mb / 1024, 3), gpu_count=gpu_count,
                       gpu_type=gpu_type, hourly_usd=prices.hourly_usd("gcp", mt.name))



def json_description(text: str | None) -> dict[str, str]:
    try:
        data = json.loads(text or "")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

