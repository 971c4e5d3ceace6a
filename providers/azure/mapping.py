"""Azure Resource Manager's vocabulary for the Azure provider: states, images, names, resource ids.

Pure data and functions, no ARM calls: how a VM's instance-view statuses map
to onebox states, which marketplace image an alias means, how onebox names the
resources of one instance, which user names and key types Azure refuses, and
how ARM resource ids are read.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from providers.base import IMAGE_ALIASES, InstanceSpec, InstanceState, InvalidRequest, SnapshotState

SHARED_TAG = "onebox-shared"

# Marketplace URNs (publisher:offer:sku:version) for the portable aliases.
IMAGE_URNS: dict[str, str] = {
    "ubuntu-22.04": "Canonical:0001-com-ubuntu-server-jammy:22_04-lts-gen2:latest",
    "ubuntu-24.04": "Canonical:ubuntu-24_04-lts:server:latest",
    "debian-12": "Debian:debian-12:12-gen2:latest",
}
NATIVE_IMAGE_PATTERN = r"^[A-Za-z0-9][\w.-]*:[\w.-]+:[\w.-]+:[\w.-]+$"
MIN_OS_DISK_GB = 30  # the marketplace Linux images' OS disk; Azure refuses smaller
AZURE_SSH_KEY_TYPES = ("ssh-rsa", "ssh-ed25519")  # osProfile refuses ECDSA keys
# Admin user names Azure refuses for Linux VMs ("The Admin Username specified is not allowed").
AZURE_RESERVED_USERS = frozenset(
    "administrator admin user user1 test user2 test1 user3 admin1 1 123 a actuser adm admin2 aspnet backup "
    "console david guest john owner root server sql support support_388945a0 sys test2 test3 user4 user5".split()
)

VM_TYPE = "microsoft.compute/virtualmachines"
DISK_TYPE = "microsoft.compute/disks"
SNAPSHOT_TYPE = "microsoft.compute/snapshots"
NIC_TYPE = "microsoft.network/networkinterfaces"
PIP_TYPE = "microsoft.network/publicipaddresses"
NSG_TYPE = "microsoft.network/networksecuritygroups"
VNET_TYPE = "microsoft.network/virtualnetworks"
ACCESS_EXTENSION = "onebox-access"  # VMAccessForLinux, to authorize keys on VMs started from a snapshot

KINDS = {VM_TYPE: "instance", DISK_TYPE: "disk", SNAPSHOT_TYPE: "snapshot", NIC_TYPE: "nic",
          PIP_TYPE: "public-ip", NSG_TYPE: "security-group", VNET_TYPE: "network"}
DELETE_ORDER = {VM_TYPE: 0, NIC_TYPE: 1, PIP_TYPE: 2, NSG_TYPE: 2, DISK_TYPE: 3, SNAPSHOT_TYPE: 4}

# Instance-view status codes (lower-cased) -> InstanceState. A failed or deleting
# provisioning state wins over the power state; otherwise the power state decides.
STATUS_MAP: dict[str, InstanceState] = {
    "powerstate/starting": InstanceState.PENDING,
    "powerstate/running": InstanceState.RUNNING,
    "powerstate/stopping": InstanceState.STOPPING,
    "powerstate/stopped": InstanceState.STOPPED,
    "powerstate/deallocating": InstanceState.STOPPING,
    "powerstate/deallocated": InstanceState.STOPPED,
    "powerstate/unknown": InstanceState.UNKNOWN,
    "provisioningstate/creating": InstanceState.PENDING,
    "provisioningstate/updating": InstanceState.PENDING,
    "provisioningstate/succeeded": InstanceState.PENDING,  # provisioned, no power state reported yet
    "provisioningstate/deleting": InstanceState.STOPPING,
    "provisioningstate/failed": InstanceState.UNKNOWN,
}

SNAPSHOT_STATUS_MAP: dict[str, SnapshotState] = {
    "succeeded": SnapshotState.AVAILABLE,
    "creating": SnapshotState.CREATING,
    "updating": SnapshotState.CREATING,
    "failed": SnapshotState.FAILED,
    "canceled": SnapshotState.FAILED,
    "deleting": SnapshotState.DELETING,
}


@dataclass(frozen=True)
class Names:
    vm: str
    nic: str
    ip: str
    nsg: str
    osdisk: str


def resource_names(instance_id: str) -> Names:
    """Deterministic ARM names for one instance (valid for every resource type used)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", instance_id.lower()).strip("-")
    if not slug or slug != instance_id or len(slug) > 40:
        digest = hashlib.sha256(instance_id.encode()).hexdigest()[:10]
        slug = f"{slug[:29].strip('-')}-{digest}" if slug else digest
    base = f"onebox-{slug}"
    return Names(vm=base, nic=f"{base}-nic", ip=f"{base}-ip", nsg=f"{base}-nsg", osdisk=f"{base}-osdisk")


def snapshot_name(snapshot_id: str) -> str:
    slug = re.sub(r"[^a-z0-9-]+", "-", snapshot_id.lower()).strip("-")
    if not slug or slug != snapshot_id or len(slug) > 60:
        digest = hashlib.sha256(snapshot_id.encode()).hexdigest()[:10]
        slug = f"{slug[:40].strip('-')}-{digest}" if slug else digest
    return f"onebox-snap-{slug}"


def computer_name(spec: InstanceSpec, fallback: str) -> str:
    host = re.sub(r"[^a-z0-9-]+", "-", spec.name.lower()).strip("-")[:63].strip("-")
    return host or fallback


def login_keys(spec: InstanceSpec) -> list[str]:
    """The user's key, then onebox's own (configuration management logs in with it), both for ssh_user."""
    keys = [spec.ssh_public_key.strip()]
    if spec.admin_ssh_public_key and spec.admin_ssh_public_key.strip() not in keys:
        keys.append(spec.admin_ssh_public_key.strip())
    return keys


def check_login(spec: InstanceSpec) -> None:
    """Refuse, before anything is created, the user names and key types Azure would refuse."""
    if spec.ssh_user.lower() in AZURE_RESERVED_USERS:
        raise InvalidRequest(f"Azure does not allow {spec.ssh_user!r} as the VM's user name; choose another.")
    for key in login_keys(spec):
        key_type = (key.split() or [""])[0]
        if key_type not in AZURE_SSH_KEY_TYPES:
            raise InvalidRequest(f"Azure accepts only {' and '.join(AZURE_SSH_KEY_TYPES)} SSH keys, "
                                 f"not {key_type!r}.")


def image_reference(image: str) -> dict[str, str]:
    urn = IMAGE_URNS.get(image, image)
    if not re.match(NATIVE_IMAGE_PATTERN, urn):
        raise InvalidRequest(f"Image {image!r} is neither one of {', '.join(IMAGE_ALIASES)} nor an Azure "
                             "marketplace URN publisher:offer:sku:version.")
    publisher, offer, sku, version = urn.split(":")
    return {"publisher": publisher, "offer": offer, "sku": sku, "version": version}


def plain(value: Any) -> str:
    """An SDK enum or string as a plain string ('' for None)."""
    if value is None:
        return ""
    return str(getattr(value, "value", value))


def restriction_values(restriction: Any) -> list[str]:
    """A SKU restriction's locations/zones. New SDK models are mappings, so the field is ``values_property``."""
    values = getattr(restriction, "values_property", None)
    if values is None:
        values = getattr(restriction, "values", None)
    return list(values) if isinstance(values, (list, tuple)) else []


def parse_id(resource_id: str) -> tuple[str, str, str]:
    """(resource group, lower-cased type, name) of a top-level ARM resource id."""
    m = re.match(r"(?i)^/subscriptions/[^/]+/resourceGroups/([^/]+)/providers/([^/]+/[^/]+)/([^/]+)$",
                 resource_id.rstrip("/"))
    if not m:
        raise InvalidRequest(f"{resource_id!r} is not an Azure resource id.")
    return m.group(1), m.group(2).lower(), m.group(3)

