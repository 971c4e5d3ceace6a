"""A local, strict stand-in for Azure Resource Manager (ARM), served over HTTPS.

The real Azure SDK clients (azure-mgmt-compute, -network, -resource with an
azure-core ``TokenCredential``) talk to it unchanged: give them
``base_url=fake.url``, ``connection_verify=fake.ca_path`` and any credential
(``FakeCredential`` here). ARM bearer-token auth refuses plain HTTP, so the fake
serves TLS with a throw-away CA made by ``trustme``.

What it models, at the real ARM paths (matched case-insensitively, like ARM),
with ``api-version`` required on every call:

* resource groups; virtual networks and subnets; network security groups;
  public IP addresses; network interfaces; virtual machines (with
  ``instanceView``); managed disks; snapshots;
* resource listing by tag (``$filter=tagName eq 'x' and tagValue eq 'y'``) or by
  ``resourceType``, paged through ``nextLink``/``$skiptoken``;
* seeded subscription, locations (eastus, westeurope), VM sizes (both
  ``locations/{loc}/vmSizes`` and ``providers/Microsoft.Compute/skus``) and
  marketplace images for the onebox aliases.

Long-running operations follow ARM: a mutating call answers at once
(network PUT 201/200, VM PUT 201/200, disk/snapshot PUT 202/200, DELETE 202,
DELETE of something absent 204) with an ``Azure-AsyncOperation`` header (and
``Location`` where ARM sends one). The operation reports ``InProgress`` on the
first ``lro_polls`` status polls, then ``Succeeded`` or ``Failed`` with
``error: {code, message}``; it also completes by itself after
``lro_max_seconds`` even if nobody polls, as a real one would (defaults: one
``InProgress`` poll, 2 s). Real ARM often adds ``Retry-After`` to these answers,
which overrides the SDK's ``polling_interval``; the fake sends it only when
``lro_retry_after`` is set, so tests can poll with interval 0.

It refuses what ARM refuses (error body ``{"error": {"code", "message"}}``):
references to things that do not exist (``InvalidResourceReference``), deleting
what is still in use (``NicInUse``, ``PublicIPAddressCannotBeDeleted``,
``InUseNetworkSecurityGroupCannotBeDeleted``, ``InUseSubnetCannotBeDeleted``,
attached disks), bad names and tags, VMs without ``osProfile`` or
``storageProfile`` (except ``createOption: Attach``, which in turn forbids
``osProfile``), unknown VM sizes (``InvalidParameter``), restricted sizes
(``SkuNotAvailable``), core quota (``OperationNotAllowed``), unknown images
(``PlatformImageNotFound``), SSH key paths other than
``/home/<user>/.ssh/authorized_keys``, reserved admin user names, and changing
immutable VM properties (``PropertyChangeNotAllowed``).

Delete options, as modelled (a documented choice):

* ``properties.networkProfile.networkInterfaces[].properties.deleteOption`` and
  ``properties.storageProfile.osDisk.deleteOption`` on the VM decide whether the
  NIC and the OS disk go with the VM (default ``Detach``, as in Azure).
* For a VM that references an *existing* NIC there is no public-IP delete option
  on the VM (``publicIPAddressConfiguration.deleteOption`` only exists for
  VM-created NICs, ``networkInterfaceConfigurations``, which this fake does not
  implement). The public IP resource carries its own ``properties.deleteOption``
  ("what happens to the public IP address when the VM using it is deleted"); the
  fake honours it when the NIC holding the IP is deleted *with* the VM. A NIC
  deleted by itself never takes its public IP along.
* The OS disk a VM makes from an image gets no tags (ARM does not copy VM tags
  to it).

VM power actions (``POST virtualMachines/{vm}/start|deallocate|restart|powerOff``)
are long-running operations (202, ``Azure-AsyncOperation`` and ``Location``):
while one runs the VM is ``Updating`` with power state ``starting``,
``deallocating`` or ``stopping``; then ``running``, ``deallocated`` or
``stopped``. Deallocating releases a ``Dynamic`` public IP's address and a
start gives it a new one (a ``Static`` IP keeps its address). ARM's refusals are
modelled: any action on a VM marked for deletion or still being created
(``OperationNotAllowed``/``Conflict``), restart or powerOff of a deallocated VM;
a newer action preempts one still running (``OperationPreempted``). Faults
(``error``, ``lro_fail``, ``slow``, ``hold``) match these POSTs too (e.g.
``path_contains="/deallocate"``). ``dump()`` shows each VM's boot count as
``_boots``.

VM extensions (``virtualMachines/{vm}/extensions/{name}``) are stored and go
with their VM; ``Microsoft.OSTCExtensions/VMAccessForLinux`` is *run*: its
``protectedSettings`` ``username``/``ssh_key`` add the key for that user to the
VM's OS disk. That "guest state" (user -> authorized keys) starts from the VM's
``osProfile``, is copied into snapshots and into disks copied from them, and is
visible in ``dump()`` as ``_guest`` (never in API answers), so tests can check
who could log in to a VM started from a snapshot.

Faults are injected from tests, in-process (``fake.add_fault(...)``) or over
HTTP (``POST /_fake/faults`` with the same fields as JSON):

* ``action="error"``: answer matching requests with ``status``/``code``/
  ``message`` (``retry_after`` adds a ``Retry-After`` header);
* ``action="lro_fail"``: accept the PUT/DELETE, then end its operation ``Failed``
  with ``code``/``message`` (e.g. ``AllocationFailed``, ``QuotaExceeded``); a VM
  is left in provisioningState ``Failed`` with the error in its instance view;
* ``action="keep_parts"``: a VM delete ignores deleteOption for ``parts``
  (``nic``, ``disk``, ``public_ip``; default ``["nic"]``), leaving them behind;
* ``action="slow"``: the PUT/DELETE's operation stays ``InProgress`` for
  ``polls`` status polls or ``seconds``, whichever comes first;
* ``action="hold"``: carry the request out, but hold its answer back for
  ``seconds`` (a client with a shorter read timeout sees a timeout although the
  call happened).

Matching: ``method`` ("*" for any), ``resource_type`` (e.g.
``Microsoft.Network/networkInterfaces``), ``name``, ``path_contains``,
``contains`` (case-insensitive, anywhere in the path, query, body, or the
resource an operation status poll is about: one instance's calls among many);
``skip`` lets that many matching requests through first; ``times`` is how often
it fires (-1: until cleared or removed, ``DELETE /_fake/faults/<id>``).

Control API (no auth): ``POST /_fake/reset``, ``POST|GET|DELETE /_fake/faults``,
``GET /_fake/resources[?tagName=..&tagValue=..]`` (every resource, untagged
ones and subnets included), ``GET /_fake/requests``, ``POST /_fake/settings``
(``lro_polls``, ``lro_max_seconds``, ``lro_retry_after``, ``page_size``,
``core_quota`` {location: cores}, ``restricted_skus`` [[location, size], ...]).

Run by hand::

    python -m tests.fakes.arm --port 8443 --ca-out /tmp/arm-ca.pem
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import ipaddress
import json
import re
import socket
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

SUBSCRIPTION_ID = "00000000-0000-4000-8000-00000000a2a2"
TENANT_ID = "00000000-0000-4000-8000-00000000f00d"

LOCATIONS = {"eastus": "East US", "westeurope": "West Europe"}
ZONES = ("1", "2", "3")

# name -> (cores, memoryInMB, family, maxDataDiskCount, resourceDiskSizeInMB)
VM_SIZES: dict[str, tuple[int, int, str, int, int]] = {
    "Standard_B1s": (1, 1024, "standardBSFamily", 2, 4096),
    "Standard_B2s": (2, 4096, "standardBSFamily", 4, 8192),
    "Standard_D2s_v5": (2, 8192, "standardDSv5Family", 4, 0),
    "Standard_NC4as_T4_v3": (4, 28672, "standardNCASv3_T4Family", 8, 180224),
}
# GPU sizes: name -> the "GPUs" capability the real SKU list carries
VM_SIZE_GPUS: dict[str, int] = {"Standard_NC4as_T4_v3": 1}

# (publisher, offer, sku) -> versions; every image is a 30 GB Linux gen2 image.
IMAGES: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("Canonical", "0001-com-ubuntu-server-jammy", "22_04-lts-gen2"): ("22.04.202401100", "22.04.202409100"),
    ("Canonical", "ubuntu-24_04-lts", "server"): ("24.04.202406100", "24.04.202409120"),
    ("Debian", "debian-12", "12-gen2"): ("0.20240211.1654", "0.20240901.1857"),
}
IMAGE_DISK_GB = 30

DEFAULT_CORE_QUOTA = 100

# A private header: how long the server holds an answer back (a "hold" fault); never sent.
HOLD_HEADER = "x-arm-fake-hold"

RESERVED_ADMIN_NAMES = frozenset(
    "administrator admin user user1 test user2 test1 user3 admin1 1 123 a actuser adm admin2 aspnet backup "
    "console david guest john owner root server sql support support_388945a0 sys test2 test3 user4 user5".split()
)

VM = "Microsoft.Compute/virtualMachines"
DISK = "Microsoft.Compute/disks"
SNAPSHOT = "Microsoft.Compute/snapshots"
VNET = "Microsoft.Network/virtualNetworks"
SUBNET = "Microsoft.Network/virtualNetworks/subnets"
NSG = "Microsoft.Network/networkSecurityGroups"
PIP = "Microsoft.Network/publicIPAddresses"
NIC = "Microsoft.Network/networkInterfaces"
EXTENSION = "Microsoft.Compute/virtualMachines/extensions"
RG_TYPE = "Microsoft.Resources/resourceGroups"

TOP_TYPES = {t.lower(): t for t in (VM, DISK, SNAPSHOT, VNET, NSG, PIP, NIC)}
# POST .../virtualMachines/{vm}/<action> (lower-cased path segment -> the action's name)
VM_ACTIONS = {"start": "start", "deallocate": "deallocate", "restart": "restart", "poweroff": "powerOff"}
NETWORK_TYPES = {VNET, SUBNET, NSG, PIP, NIC}

_GENERIC_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?$")
_VM_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$")
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$")
_ADMIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,63}$")
_RG_NAME = re.compile(r"^[-\w._()]{1,90}$")
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview|-beta|-alpha)?$")
_TAG_FORBIDDEN = set('<>%&\\?/')
_DISK_SKUS = {"Standard_LRS", "Premium_LRS", "StandardSSD_LRS", "UltraSSD_LRS", "Premium_ZRS", "StandardSSD_ZRS",
              "PremiumV2_LRS"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class ArmError(Exception):
    """An ARM error answer."""

    def __init__(self, status: int, code: str, message: str, *, target: str | None = None,
                 headers: dict[str, str] | None = None, details: list[dict] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.target, self.headers, self.details = target, headers or {}, details

    def body(self) -> dict:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        if self.details:
            err["details"] = self.details
        return {"error": err}


def _invalid(message: str, target: str | None = None, status: int = 400) -> ArmError:
    return ArmError(status, "InvalidParameter", message, target=target)


class FakeCredential:
    """A TokenCredential that hands out a static bearer token (the fake accepts any)."""

    def __init__(self, token: str = "onebox-fake-token") -> None:
        self.token = token
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any):
        from azure.core.credentials import AccessToken

        self.calls += 1
        return AccessToken(self.token, int(time.time()) + 3600)

    def close(self) -> None:  # azure-core calls this on client close
        pass


@dataclass
class Res:
    """One stored resource (top-level or subnet)."""

    id: str
    type: str
    name: str
    rg: str  # lower-case resource group name
    location: str
    tags: dict[str, str] | None
    props: dict[str, Any]
    top: dict[str, Any] = field(default_factory=dict)  # sku, zones, ...
    state: str = "Succeeded"
    etag: str = field(default_factory=lambda: uuid.uuid4().hex)
    created: str = field(default_factory=_now)
    changed: str = field(default_factory=_now)
    op_id: str | None = None
    failure: dict | None = None
    power: str = "running"
    boots: int = 1  # VMs: how often it booted (create, start, restart); dump() shows it as "_boots"
    # Guest state, for OS disks and snapshots: Linux user -> authorized SSH keys. Never rendered by the API;
    # dump() shows it as "_guest" so tests can see which keys a VM's disk would let in.
    guest: dict[str, list[str]] | None = None
    secret: dict | None = None  # write-only settings (extension protectedSettings)

    @property
    def key(self) -> str:
        return self.id.lower()


@dataclass
class Op:
    id: str
    kind: str  # "put" | "delete"
    key: str  # resource key
    location: str
    namespace: str
    started: float
    fail: dict | None = None
    keep: frozenset[str] = frozenset()
    polls: int = 0
    status: str = "InProgress"
    error: dict | None = None
    ended: str | None = None
    min_polls: int | None = None  # None: ArmState.lro_polls
    max_seconds: float | None = None  # None: ArmState.lro_max_seconds
    start_iso: str = field(default_factory=_now)
    action: str | None = None  # kind "action": start | deallocate | restart | powerOff
    power_before: str | None = None  # kind "action": the VM's power state before it, restored if it fails


@dataclass
class Fault:
    action: str = "error"
    method: str = "*"
    resource_type: str | None = None
    name: str | None = None
    path_contains: str | None = None
    status: int = 500
    code: str = "InternalServerError"
    message: str = "An internal error occurred (injected by the ARM fake)."
    retry_after: float | None = None
    parts: tuple[str, ...] = ("nic",)
    polls: int = 1_000_000  # action "slow": status polls answered InProgress
    seconds: float = 2.0  # action "slow": the operation ends by itself after this long
    skip: int = 0
    times: int = 1
    contains: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    hits: int = 0

    def as_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class _Route:
    kind: str
    rg: str | None = None
    type: str | None = None  # canonical resource type
    name: str | None = None
    parent: str | None = None  # vnet name for subnets
    extra: tuple[str, ...] = ()


class ArmState:
    """Everything the fake knows, behind one lock (the server thread and test code share it)."""

    def __init__(self, subscription_id: str = SUBSCRIPTION_ID) -> None:
        self.subscription_id = subscription_id
        self.lock = threading.RLock()
        self.reset()

    # ------------------------------------------------------------------ setup
    def reset(self) -> None:
        with self.lock:
            self.groups: dict[str, dict] = {}
            self.res: dict[str, Res] = {}
            self.ops: dict[str, Op] = {}
            self.faults: list[Fault] = []
            self.requests: list[tuple[str, str, int]] = []
            self.lro_polls = 1
            self.lro_max_seconds = 2.0
            self.lro_retry_after: int | None = None
            self.page_size = 5
            self.core_quota: dict[str, int] = {loc: DEFAULT_CORE_QUOTA for loc in LOCATIONS}
            self.restricted_skus: set[tuple[str, str]] = set()
            self._next_public = 10

    def settings(self, **kw: Any) -> None:
        with self.lock:
            for key in ("lro_polls", "lro_max_seconds", "lro_retry_after", "page_size"):
                if key in kw:
                    setattr(self, key, kw[key])
            if "core_quota" in kw:
                self.core_quota.update({k.lower(): int(v) for k, v in kw["core_quota"].items()})
            if "restricted_skus" in kw:
                self.restricted_skus = {(loc.lower(), size.lower()) for loc, size in kw["restricted_skus"]}

    def add_fault(self, **kw: Any) -> Fault:
        if "parts" in kw:
            kw["parts"] = tuple(kw["parts"])
        fault = Fault(**kw)
        if fault.action not in ("error", "lro_fail", "keep_parts", "slow", "hold"):
            raise ValueError(f"unknown fault action {fault.action!r}")
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def remove_fault(self, fault_id: str) -> None:
        with self.lock:
            self.faults = [f for f in self.faults if f.id != fault_id]

    def set_power_state(self, vm_name: str, power: str, rg: str | None = None) -> None:
        """Test helper: pretend the VM was stopped/deallocated/started outside onebox."""
        with self.lock:
            for r in self.res.values():
                if r.type == VM and r.name.lower() == vm_name.lower() and (rg is None or r.rg == rg.lower()):
                    r.power = power
                    return
            raise KeyError(vm_name)

    # ------------------------------------------------------------- inspection
    def dump(self) -> list[dict]:
        """Every resource as ARM would render it (subnets and untagged ones included)."""
        with self.lock:
            self._advance()
            out = []
            for r in sorted(self.res.values(), key=lambda r: r.key):
                d = self.render(r)
                if r.guest is not None:
                    d["_guest"] = copy.deepcopy(r.guest)
                if r.type == VM:
                    d["_boots"] = r.boots
                out.append(d)
            return out

    def find(self, tag: str | None = None, value: str | None = None, type: str | None = None) -> list[dict]:
        """Resources carrying tag (and value), optionally of one type."""
        out = []
        for d in self.dump():
            tags = {k.lower(): v for k, v in (d.get("tags") or {}).items()}
            if tag is not None and tag.lower() not in tags:
                continue
            if value is not None and tags.get(tag.lower() if tag else "") != value:
                continue
            if type is not None and d["type"].lower() != type.lower():
                continue
            out.append(d)
        return out

    # ------------------------------------------------------------- helpers
    def _rid(self, rg_name: str, type_: str, name: str) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{rg_name}/providers/{type_}/{name}"

    def _get(self, res_id: str | None) -> Res | None:
        if not res_id or not isinstance(res_id, str):
            return None
        return self.res.get(res_id.lower().rstrip("/"))

    def _group(self, rg: str) -> dict:
        group = self.groups.get(rg.lower())
        if group is None:
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        return group

    def _not_found(self, type_: str, name: str, rg: str) -> ArmError:
        return ArmError(404, "ResourceNotFound",
                        f"The Resource '{type_}/{name}' under resource group '{rg}' was not found. "
                        "For more details please go to https://aka.ms/ARMResourceNotFoundFix")

    def _advance(self) -> None:
        """Complete operations whose time is up, polled or not (Azure does not wait for pollers)."""
        now = time.monotonic()
        for op in list(self.ops.values()):
            limit = self.lro_max_seconds if op.max_seconds is None else op.max_seconds
            if op.status == "InProgress" and now - op.started >= limit:
                self._complete(op)

    def _finish_pending(self, key: str) -> None:
        for op in list(self.ops.values()):
            if op.key == key and op.status == "InProgress":
                self._complete(op)

    def _referrers(self, target: Res) -> list[tuple[Res, str]]:
        """(resource, via-id) pairs that reference target (NIC ipconfigs, VMs, subnets)."""
        key = target.key
        out: list[tuple[Res, str]] = []
        for r in self.res.values():
            if r.type == NIC:
                for ipc in r.props.get("ipConfigurations", []):
                    p = ipc.get("properties", {})
                    refs = [(p.get("subnet") or {}).get("id"), (p.get("publicIPAddress") or {}).get("id")]
                    if any(x and x.lower() == key for x in refs):
                        out.append((r, f"{r.id}/ipConfigurations/{ipc['name']}"))
                if ((r.props.get("networkSecurityGroup") or {}).get("id") or "").lower() == key:
                    out.append((r, r.id))
            elif r.type == VM:
                for ref in r.props.get("networkProfile", {}).get("networkInterfaces", []):
                    if ref.get("id", "").lower() == key:
                        out.append((r, r.id))
                disk_id = r.props.get("storageProfile", {}).get("osDisk", {}).get("managedDisk", {}).get("id", "")
                if disk_id.lower() == key:
                    out.append((r, r.id))
            elif r.type == SUBNET:
                if ((r.props.get("networkSecurityGroup") or {}).get("id") or "").lower() == key:
                    out.append((r, r.id))
        return out

    def _attached_vm(self, target: Res) -> Res | None:
        for r, _ in self._referrers(target):
            if r.type == VM:
                return r
        return None

    # ------------------------------------------------------------- rendering
    def render(self, r: Res, expand: str | None = None) -> dict:
        d: dict[str, Any] = {"name": r.name, "id": r.id, "type": r.type}
        if r.type != SUBNET:
            d["location"] = r.location
            if r.tags is not None:
                d["tags"] = dict(r.tags)
        d.update(copy.deepcopy(r.top))
        props = copy.deepcopy(r.props)
        props["provisioningState"] = r.state
        if r.type in NETWORK_TYPES:
            d["etag"] = f'W/"{r.etag}"'
            props.setdefault("resourceGuid", str(uuid.UUID(r.etag)))
        if r.type == VNET:
            props["subnets"] = [self.render(s) for s in self.res.values()
                                if s.type == SUBNET and s.key.startswith(r.key + "/subnets/")]
        elif r.type == SUBNET:
            ipcs = [{"id": via} for ref, via in self._referrers(r) if ref.type == NIC]
            if ipcs:
                props["ipConfigurations"] = ipcs
        elif r.type == NSG:
            refs = self._referrers(r)
            nics = [{"id": x.id} for x, _ in refs if x.type == NIC]
            subnets = [{"id": x.id} for x, _ in refs if x.type == SUBNET]
            if nics:
                props["networkInterfaces"] = nics
            if subnets:
                props["subnets"] = subnets
            props["defaultSecurityRules"] = [
                {"name": n, "id": f"{r.id}/defaultSecurityRules/{n}",
                 "properties": {"priority": p, "direction": dr, "access": a, "protocol": "*",
                                "sourceAddressPrefix": s, "destinationAddressPrefix": dst,
                                "sourcePortRange": "*", "destinationPortRange": "*", "provisioningState": "Succeeded"}}
                for n, p, dr, a, s, dst in (
                    ("AllowVnetInBound", 65000, "Inbound", "Allow", "VirtualNetwork", "VirtualNetwork"),
                    ("AllowAzureLoadBalancerInBound", 65001, "Inbound", "Allow", "AzureLoadBalancer", "*"),
                    ("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
                    ("AllowVnetOutBound", 65000, "Outbound", "Allow", "VirtualNetwork", "VirtualNetwork"),
                    ("AllowInternetOutBound", 65001, "Outbound", "Allow", "*", "Internet"),
                    ("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
                )
            ]
        elif r.type == PIP:
            for ref, via in self._referrers(r):
                if ref.type == NIC:
                    props["ipConfiguration"] = {"id": via}
        elif r.type == NIC:
            vm = self._attached_vm(r)
            if vm is not None:
                props["virtualMachine"] = {"id": vm.id}
                props["macAddress"] = "00-0D-3A-" + "-".join(r.etag[i:i + 2].upper() for i in (0, 2, 4))
            for ipc in props.get("ipConfigurations", []):
                ipc["properties"]["provisioningState"] = r.state
        elif r.type == DISK:
            vm = self._attached_vm(r)
            if vm is not None:
                d["managedBy"] = vm.id
                props["diskState"] = "Attached"
            else:
                props["diskState"] = "Unattached"
        elif r.type == VM:
            osd = props.get("storageProfile", {}).get("osDisk", {})
            disk_id = osd.get("managedDisk", {}).get("id")
            if disk_id:
                # Compute echoes resource ids with the group upper-cased; clients must compare ids case-insensitively.
                osd["managedDisk"]["id"] = re.sub(r"(?i)(/resourceGroups/)([^/]+)",
                                                  lambda m: m.group(1) + m.group(2).upper(), disk_id, count=1)
            if expand and "instanceview" in expand.lower():
                props["instanceView"] = self.instance_view(r)
        d["properties"] = props
        return d

    def instance_view(self, vm: Res) -> dict:
        t = vm.changed
        if vm.state == "Succeeded":
            statuses = [
                {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
                 "time": t},
                {"code": f"PowerState/{vm.power}", "level": "Info",
                 "displayStatus": f"VM {vm.power}"},
            ]
        elif vm.state == "Failed":
            fail = vm.failure or {"code": "InternalError", "message": "Provisioning failed."}
            statuses = [{"code": f"ProvisioningState/failed/{fail['code']}", "level": "Error",
                         "displayStatus": "Provisioning failed", "message": fail["message"], "time": t}]
        else:
            power = {"Deleting": "stopping", "Creating": "starting"}.get(vm.state, vm.power)
            statuses = [
                {"code": f"ProvisioningState/{vm.state.lower()}", "level": "Info",
                 "displayStatus": f"{vm.state} in progress"},
                {"code": f"PowerState/{power}", "level": "Info", "displayStatus": f"VM {power}"},
            ]
        osd = vm.props.get("storageProfile", {}).get("osDisk", {})
        return {
            "computerName": vm.props.get("osProfile", {}).get("computerName"),
            "osName": "ubuntu", "osVersion": "22.04",
            "hyperVGeneration": "V2",
            "disks": [{"name": osd.get("name"), "statuses": statuses[:1]}],
            "statuses": statuses,
        }

    # ------------------------------------------------------------- operations
    def _start_op(self, kind: str, r: Res, fault: Fault | None, keep: frozenset[str] = frozenset()) -> Op:
        op = Op(id=str(uuid.uuid4()), kind=kind, key=r.key, location=r.location,
                namespace=r.type.split("/")[0], started=time.monotonic(), keep=keep)
        if fault is not None and fault.action == "lro_fail":
            op.fail = {"code": fault.code, "message": fault.message}
        if fault is not None and fault.action == "slow":
            op.min_polls, op.max_seconds = fault.polls, fault.seconds
        r.op_id = op.id
        self.ops[op.id] = op
        return op

    def _complete(self, op: Op) -> None:
        if op.status != "InProgress":
            return
        op.ended = _now()
        r = self.res.get(op.key)
        if op.kind == "action":
            self._complete_action(op, r)
            return
        if op.fail is not None:
            op.status, op.error = "Failed", dict(op.fail)
            if r is not None and r.op_id == op.id:
                r.state, r.failure, r.changed = "Failed", dict(op.fail), _now()
                if r.type == VM:
                    self._settle_vm_disk(r, "Succeeded")
            return
        op.status = "Succeeded"
        if r is None or r.op_id != op.id:
            return
        if op.kind == "put":
            r.state, r.failure, r.changed = "Succeeded", None, _now()
            if r.type == VM:  # a new VM runs (Res.power); an update leaves the power state as it was
                self._settle_vm_disk(r, "Succeeded")
            elif r.type == EXTENSION:
                self._run_extension(r)
        else:
            self._remove(r, op.keep)

    def _complete_action(self, op: Op, vm: Res | None) -> None:
        """The end of a start, deallocate, restart or powerOff of a VM."""
        mine = vm is not None and vm.op_id == op.id
        if op.fail is not None:
            op.status, op.error = "Failed", dict(op.fail)
            if mine:  # nothing happened: back to where it was
                vm.state, vm.power, vm.changed = "Succeeded", op.power_before or vm.power, _now()
            return
        op.status = "Succeeded"
        if not mine or op.power_before == {"start": "running", "deallocate": "deallocated"}.get(op.action or ""):
            return  # preempted or deleted meanwhile, or there was nothing to do
        vm.state, vm.changed = "Succeeded", _now()
        vm.power = {"start": "running", "restart": "running", "deallocate": "deallocated",
                    "powerOff": "stopped"}[op.action or ""]
        if op.action in ("start", "restart"):
            vm.boots += 1
        if op.action == "deallocate":
            for pip in self._vm_public_ips(vm):  # a Dynamic public IP is released with the compute
                if pip.props.get("publicIPAllocationMethod") == "Dynamic":
                    pip.props.pop("ipAddress", None)
        elif op.action == "start":
            for pip in self._vm_public_ips(vm):  # and a Dynamic one gets a new address as it starts
                if pip.props.get("publicIPAllocationMethod") == "Dynamic" and not pip.props.get("ipAddress"):
                    pip.props["ipAddress"] = self._new_public_address()

    def _vm_public_ips(self, vm: Res) -> list[Res]:
        out = []
        for ref in vm.props.get("networkProfile", {}).get("networkInterfaces", []):
            nic = self._get(ref.get("id"))
            for ipc in (nic.props.get("ipConfigurations", []) if nic is not None else []):
                pip = self._get((ipc.get("properties", {}).get("publicIPAddress") or {}).get("id"))
                if pip is not None:
                    out.append(pip)
        return out

    def _new_public_address(self) -> str:
        address = f"20.62.{self._next_public // 250}.{self._next_public % 250 + 4}"
        self._next_public += 1
        return address

    def _run_extension(self, ext: Res) -> None:
        """VMAccessForLinux: create the user if needed and authorize ssh_key on the VM's OS disk."""
        p = ext.props
        if (p.get("publisher", "").lower(), p.get("type", "").lower()) != ("microsoft.ostcextensions",
                                                                           "vmaccessforlinux"):
            return
        vm = self._get(ext.id.rsplit("/extensions/", 1)[0])
        disk = self._get(vm.props["storageProfile"]["osDisk"]["managedDisk"]["id"]) if vm is not None else None
        secret = ext.secret or {}
        user, key = secret.get("username"), (secret.get("ssh_key") or "").strip()
        if disk is None or not user:
            return
        guest = disk.guest if disk.guest is not None else {}
        keys = guest.setdefault(user, [])
        if key and key not in keys:
            keys.append(key)
        disk.guest = guest

    def _settle_vm_disk(self, vm: Res, state: str) -> None:
        disk = self._get(vm.props.get("storageProfile", {}).get("osDisk", {}).get("managedDisk", {}).get("id"))
        if disk is not None and disk.state != "Succeeded":
            disk.state = state

    def _remove(self, r: Res, keep: frozenset[str] = frozenset()) -> None:
        self.res.pop(r.key, None)
        if r.type == VNET:
            for k in [k for k in self.res if k.startswith(r.key + "/subnets/")]:
                del self.res[k]
        elif r.type == VM:
            for k in [k for k in self.res if k.startswith(r.key + "/extensions/")]:
                del self.res[k]
            for ref in r.props.get("networkProfile", {}).get("networkInterfaces", []):
                nic = self._get(ref.get("id"))
                if nic is None or "nic" in keep:
                    continue
                if (ref.get("properties") or {}).get("deleteOption", "Detach") == "Delete":
                    self._remove(nic)
                    for ipc in nic.props.get("ipConfigurations", []):
                        pip = self._get((ipc["properties"].get("publicIPAddress") or {}).get("id"))
                        if (pip is not None and "public_ip" not in keep
                                and pip.props.get("deleteOption") == "Delete" and not self._referrers(pip)):
                            self._remove(pip)
            osd = r.props.get("storageProfile", {}).get("osDisk", {})
            disk = self._get(osd.get("managedDisk", {}).get("id"))
            if disk is not None and "disk" not in keep and osd.get("deleteOption", "Detach") == "Delete":
                self._remove(disk)

    # ------------------------------------------------------------- dispatch
    def handle(self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes,
               base: str) -> tuple[int, Any, dict[str, str]]:
        with self.lock:
            try:
                status, payload, hdrs = self._dispatch(method, path, query, headers, body, base)
            except ArmError as e:
                status, payload, hdrs = e.status, e.body(), dict(e.headers)
            if not path.startswith("/_fake"):
                self.requests.append((method, path, status))
                del self.requests[:-5000]
            hdrs.setdefault("x-ms-request-id", str(uuid.uuid4()))
            hdrs.setdefault("x-ms-correlation-request-id", headers.get("x-ms-client-request-id", str(uuid.uuid4())))
            return status, payload, hdrs

    def _control(self, method: str, path: str, query: dict[str, str], body: bytes) -> tuple[int, Any, dict]:
        data = json.loads(body) if body else {}
        if path == "/_fake/reset" and method == "POST":
            self.reset()
            return 200, {"ok": True}, {}
        if path == "/_fake/faults":
            if method == "POST":
                items = data if isinstance(data, list) else [data]
                return 201, [self.add_fault(**item).as_dict() for item in items], {}
            if method == "DELETE":
                self.clear_faults()
                return 200, {"ok": True}, {}
            return 200, [f.as_dict() for f in self.faults], {}
        if path.startswith("/_fake/faults/") and method == "DELETE":
            self.remove_fault(path.rsplit("/", 1)[1])
            return 200, {"ok": True}, {}
        if path == "/_fake/resources" and method == "GET":
            return 200, self.find(query.get("tagName"), query.get("tagValue"), query.get("type")), {}
        if path == "/_fake/requests" and method == "GET":
            return 200, [list(r) for r in self.requests], {}
        if path == "/_fake/settings" and method == "POST":
            self.settings(**data)
            return 200, {"ok": True}, {}
        return 404, {"error": "unknown control endpoint"}, {}

    def _dispatch(self, method, path, query, headers, body, base):
        if path.startswith("/_fake/"):
            return self._control(method, path, query, body)
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
                           headers={"WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                                    f'{TENANT_ID}", error="invalid_token"'})
        api_version = query.get("api-version")
        if not api_version:
            raise ArmError(400, "MissingApiVersionParameter",
                           "The api-version query parameter (?api-version=) is required for all requests.")
        if not _API_VERSION.match(api_version):
            raise ArmError(400, "InvalidApiVersionParameter",
                           f"The api-version '{api_version}' is invalid. The supported versions are '2025-04-01'.")
        self._advance()
        route = self._route(path)
        fault = self._match_fault(method, path, route, self._request_text(path, query, body, route))
        if fault is not None and fault.action == "hold":
            try:
                status, payload, hdrs = getattr(self, f"_h_{route.kind}")(
                    _Ctx(method=method, query=query, body=body, base=base, api_version=api_version, fault=None), route)
            except ArmError as e:  # whatever the answer (a 404 too), it comes late
                e.headers = {**e.headers, HOLD_HEADER: str(fault.seconds)}
                raise
            return status, payload, {**hdrs, HOLD_HEADER: str(fault.seconds)}
        if fault is not None and fault.action == "error":
            hdrs = {}
            if fault.retry_after is not None:
                hdrs["Retry-After"] = str(int(fault.retry_after)) if float(fault.retry_after).is_integer() \
                    else str(fault.retry_after)
            raise ArmError(fault.status, fault.code, fault.message, headers=hdrs)
        ctx = _Ctx(method=method, query=query, body=body, base=base, api_version=api_version, fault=fault)
        handler = getattr(self, f"_h_{route.kind}")
        return handler(ctx, route)

    def _route(self, path: str) -> _Route:
        seg = [s for s in path.split("/") if s]
        low = [s.lower() for s in seg]
        if len(seg) < 2 or low[0] != "subscriptions":
            raise ArmError(404, "NotFound", f"The requested path '{path}' is not handled by Azure Resource Manager.")
        if low[1] != self.subscription_id.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{seg[1]}' could not be found.")
        rest, lrest = seg[2:], low[2:]
        if not rest:
            return _Route("subscription")
        if lrest == ["locations"]:
            return _Route("locations")
        if lrest == ["resources"]:
            return _Route("list_resources")
        if lrest == ["resourcegroups"]:
            return _Route("list_groups")
        if lrest[0] == "resourcegroups" and len(rest) >= 2:
            rg = rest[1]
            if len(rest) == 2:
                return _Route("group", rg=rg)
            if lrest[2:] == ["resources"]:
                return _Route("list_resources", rg=rg)
            if lrest[2] == "providers" and len(rest) >= 6:
                type_key = f"{lrest[3]}/{lrest[4]}"
                if type_key not in TOP_TYPES:
                    raise ArmError(400, "InvalidResourceType",
                                   f"The resource type '{rest[4]}' could not be found in the namespace '{rest[3]}' "
                                   "for api version in use.")
                type_ = TOP_TYPES[type_key]
                name, tail, ltail = rest[5], rest[6:], lrest[6:]
                if not tail:
                    return _Route("resource", rg=rg, type=type_, name=name)
                if type_ == VNET and ltail == ["subnets"]:
                    return _Route("list_subnets", rg=rg, type=SUBNET, parent=name)
                if type_ == VNET and len(tail) == 2 and ltail[0] == "subnets":
                    return _Route("subnet", rg=rg, type=SUBNET, name=tail[1], parent=name)
                if type_ == VM and ltail == ["instanceview"]:
                    return _Route("instance_view", rg=rg, type=VM, name=name)
                if type_ == VM and len(ltail) == 1 and ltail[0] in VM_ACTIONS:
                    return _Route("vm_action", rg=rg, type=VM, name=name, extra=(VM_ACTIONS[ltail[0]],))
                if type_ == VM and len(tail) == 2 and ltail[0] == "extensions":
                    return _Route("extension", rg=rg, type=EXTENSION, name=tail[1], parent=name)
            if lrest[2] == "providers" and len(rest) == 5:
                type_key = f"{lrest[3]}/{lrest[4]}"
                if type_key in TOP_TYPES:
                    return _Route("list_type", rg=rg, type=TOP_TYPES[type_key])
        if lrest[0] == "providers" and len(rest) >= 2:
            ns = lrest[1]
            if ns == "microsoft.compute" and lrest[2:] == ["skus"]:
                return _Route("skus")
            if len(rest) >= 6 and lrest[2] == "locations" and lrest[4] in ("operations", "operationresults"):
                return _Route("operation" if lrest[4] == "operations" else "operation_result", name=rest[5],
                              extra=(rest[3],))
            if ns == "microsoft.compute" and len(rest) == 5 and lrest[2] == "locations" and lrest[4] == "vmsizes":
                return _Route("vm_sizes", extra=(lrest[3],))
            if (ns == "microsoft.compute" and len(rest) >= 13 and lrest[2] == "locations"
                    and lrest[4] == "publishers" and lrest[6:9] == ["artifacttypes", "vmimage", "offers"]
                    and lrest[10] == "skus" and lrest[12] == "versions"):
                return _Route("image_versions", extra=(lrest[3], rest[5], rest[9], rest[11], *rest[13:14]))
        raise ArmError(404, "NotFound", f"No route for '{path}'.")

    def _request_text(self, path: str, query: dict[str, str], body: bytes, route: _Route) -> str:
        """Everything a call mentions, lower-cased, for ``Fault.contains``."""
        if not any(f.contains for f in self.faults):
            return ""
        text = f"{path}?{urlencode(query)}\n{query.get('$filter', '')}\n{body.decode('utf-8', 'replace')}"
        if route.kind in ("operation", "operation_result") and route.name in self.ops:
            text += "\n" + self.ops[route.name].key
        return text.lower()

    def _match_fault(self, method: str, path: str, route: _Route, request: str = "") -> Fault | None:
        for fault in self.faults:
            if fault.times == 0:
                continue
            if fault.contains and fault.contains.lower() not in request:
                continue
            if fault.method != "*" and fault.method.upper() != method:
                continue
            if fault.resource_type and (route.type or "").lower() != fault.resource_type.lower():
                continue
            if fault.name and (route.name or "").lower() != fault.name.lower():
                continue
            if fault.path_contains and fault.path_contains.lower() not in path.lower():
                continue
            if fault.action in ("lro_fail", "slow") and not (
                    (route.kind in ("resource", "subnet", "extension") and method in ("PUT", "PATCH", "DELETE"))
                    or (route.kind == "vm_action" and method == "POST")):
                continue
            if fault.action == "keep_parts" and not (route.type == VM and method == "DELETE"):
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            fault.hits += 1
            if fault.times > 0:
                fault.times -= 1
            return fault
        return None

    # ------------------------------------------------------------- subscription-level
    def _h_subscription(self, ctx, route):
        return 200, {"id": f"/subscriptions/{self.subscription_id}", "subscriptionId": self.subscription_id,
                     "tenantId": TENANT_ID, "displayName": "onebox fake subscription", "state": "Enabled"}, {}

    def _h_locations(self, ctx, route):
        return 200, {"value": [
            {"id": f"/subscriptions/{self.subscription_id}/locations/{n}", "name": n, "displayName": d,
             "regionalDisplayName": f"(US) {d}" if n == "eastus" else f"(Europe) {d}",
             "metadata": {"regionType": "Physical"}}
            for n, d in LOCATIONS.items()]}, {}

    def _h_vm_sizes(self, ctx, route):
        loc = route.extra[0]
        if loc not in LOCATIONS:
            raise ArmError(400, "InvalidParameter",
                           f"The provided location '{loc}' is not available for resource type "
                           "'Microsoft.Compute/locations/vmSizes'.")
        return 200, {"value": [
            {"name": n, "numberOfCores": c, "osDiskSizeInMB": 1047552, "resourceDiskSizeInMB": rd,
             "memoryInMB": m, "maxDataDiskCount": dd}
            for n, (c, m, _f, dd, rd) in VM_SIZES.items()]}, {}

    def _h_skus(self, ctx, route):
        flt = ctx.query.get("$filter")
        want = None
        if flt:
            m = re.fullmatch(r"\s*location\s+eq\s+'([^']*)'\s*", flt, re.I)
            if not m:
                raise ArmError(400, "InvalidFilter", f"The filter '{flt}' is not supported.")
            want = m.group(1).lower()
        out = []
        for loc in LOCATIONS:
            if want is not None and loc != want:
                continue
            for n, (c, m, fam, dd, rd) in VM_SIZES.items():
                restrictions = []
                if (loc, n.lower()) in self.restricted_skus:
                    restrictions.append({"type": "Location", "values": [loc], "restrictionInfo": {"locations": [loc]},
                                         "reasonCode": "NotAvailableForSubscription"})
                out.append({
                    "resourceType": "virtualMachines", "name": n, "tier": "Standard", "size": n.split("_", 1)[1],
                    "family": fam, "locations": [loc],
                    "locationInfo": [{"location": loc, "zones": list(ZONES), "zoneDetails": []}],
                    "capabilities": [{"name": "vCPUs", "value": str(c)}, {"name": "MemoryGB", "value": f"{m / 1024:g}"},
                                     {"name": "MaxDataDiskCount", "value": str(dd)},
                                     {"name": "PremiumIO", "value": "True"},
                                     {"name": "HyperVGenerations", "value": "V1,V2"}]
                                    + ([{"name": "GPUs", "value": str(VM_SIZE_GPUS[n])}] if n in VM_SIZE_GPUS else []),
                    "restrictions": restrictions,
                })
            out.append({"resourceType": "disks", "name": "StandardSSD_LRS", "tier": "Standard", "locations": [loc],
                        "locationInfo": [{"location": loc, "zones": list(ZONES)}], "capabilities": [],
                        "restrictions": []})
        return 200, {"value": out}, {}

    def _h_image_versions(self, ctx, route):
        loc, pub, offer, sku, *ver = route.extra
        if loc not in LOCATIONS:
            raise ArmError(404, "NotFound", f"Location '{loc}' not found.")
        versions = self._image_versions(pub, offer, sku)
        if versions is None:
            raise ArmError(404, "NotFound", "Artifact: VMImage was not found.")
        def one(v):
            return {"location": loc, "name": v, "id": f"/Subscriptions/{self.subscription_id}/Providers/"
                    f"Microsoft.Compute/Locations/{loc}/Publishers/{pub}/ArtifactTypes/VMImage/Offers/{offer}/"
                    f"Skus/{sku}/Versions/{v}",
                    "properties": {"osImage": {"operatingSystem": "Linux", "sizeInGb": IMAGE_DISK_GB},
                                   "hyperVGeneration": "V2", "architecture": "x64"}}
        if ver:
            if ver[0] not in versions:
                raise ArmError(404, "NotFound", "Artifact: VMImage was not found.")
            return 200, one(ver[0]), {}
        return 200, [{"location": loc, "name": v, "id": one(v)["id"]} for v in versions], {}

    def _image_versions(self, pub: str, offer: str, sku: str) -> tuple[str, ...] | None:
        for (p, o, s), versions in IMAGES.items():
            if (p.lower(), o.lower(), s.lower()) == (pub.lower(), offer.lower(), sku.lower()):
                return versions
        return None

    # ------------------------------------------------------------- operations
    def _poll(self, name: str) -> Op:
        """One poll of an operation: it completes after enough of them."""
        op = self.ops.get(name)
        if op is None:
            raise ArmError(404, "NotFound", f"Operation '{name}' was not found.")
        if op.status == "InProgress":
            op.polls += 1
            if op.polls > (self.lro_polls if op.min_polls is None else op.min_polls):
                self._complete(op)
        return op

    def _h_operation(self, ctx, route):
        op = self._poll(route.name)
        body: dict[str, Any] = {"name": op.id, "status": op.status, "startTime": op.start_iso}
        if op.ended:
            body["endTime"] = op.ended
        if op.error:
            body["error"] = op.error
        hdrs = {}
        if op.status == "InProgress" and self.lro_retry_after is not None:
            hdrs["Retry-After"] = str(self.lro_retry_after)
        return 200, body, hdrs

    def _h_operation_result(self, ctx, route):
        op = self._poll(route.name)
        if op.status == "InProgress":
            return 202, None, {"Location": f"{ctx.base}{self._op_path(op, 'operationResults', ctx.api_version)}"}
        if op.status == "Failed":
            raise ArmError(400 if op.error["code"] != "InternalServerError" else 500, op.error["code"],
                           op.error["message"])
        r = self.res.get(op.key)
        if op.kind == "put" and r is not None:
            return 200, self.render(r), {}
        return 204, None, {}

    def _op_path(self, op: Op, what: str, api_version: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/providers/{op.namespace}/locations/{op.location}/"
                f"{what}/{op.id}?api-version={api_version}")

    def _lro_headers(self, op: Op, ctx: _Ctx, location: bool) -> dict[str, str]:
        hdrs = {"Azure-AsyncOperation": f"{ctx.base}{self._op_path(op, 'operations', ctx.api_version)}"}
        if location:
            hdrs["Location"] = f"{ctx.base}{self._op_path(op, 'operationResults', ctx.api_version)}"
        if self.lro_retry_after is not None:
            hdrs["Retry-After"] = str(self.lro_retry_after)
        return hdrs

    # ------------------------------------------------------------- resource groups
    def _render_group(self, g: dict) -> dict:
        return {"id": f"/subscriptions/{self.subscription_id}/resourceGroups/{g['name']}", "name": g["name"],
                "type": RG_TYPE, "location": g["location"], "tags": dict(g["tags"]),
                "properties": {"provisioningState": g["state"]}}

    def _h_list_groups(self, ctx, route):
        return 200, {"value": [self._render_group(g) for g in self.groups.values()]}, {}

    def _h_group(self, ctx, route):
        rg, key = route.rg, route.rg.lower()
        g = self.groups.get(key)
        if ctx.method == "HEAD":
            return (204 if g else 404), None, {}
        if ctx.method == "GET":
            if g is None:
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
            return 200, self._render_group(g), {}
        if ctx.method == "PUT":
            data = ctx.json()
            if not _RG_NAME.match(rg) or rg.endswith("."):
                raise ArmError(400, "InvalidResourceGroupName",
                               f"Resource group name '{rg}' is invalid. It can include alphanumeric, underscore, "
                               "parentheses, hyphen, period (except at end), and Unicode characters.")
            loc = _norm_location(data.get("location"))
            if not loc:
                raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
            if loc not in LOCATIONS:
                raise ArmError(400, "LocationNotAvailableForResourceGroup",
                               f"The provided location '{loc}' is not available for resource group. List of "
                               f"available regions is '{','.join(LOCATIONS)}'.")
            tags = _check_tags(data.get("tags"))
            if g is not None:
                if g["location"] != loc:
                    raise ArmError(409, "InvalidResourceGroupLocation",
                                   f"Invalid resource group location '{loc}'. The Resource group already exists in "
                                   f"location '{g['location']}'.")
                g["tags"] = tags or {}
                return 200, self._render_group(g), {}
            g = {"name": rg, "location": loc, "tags": tags or {}, "state": "Succeeded"}
            self.groups[key] = g
            return 201, self._render_group(g), {}
        if ctx.method == "DELETE":
            if g is None:
                raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
            for r in [r for r in self.res.values() if r.rg == key]:
                self.res.pop(r.key, None)
            del self.groups[key]
            return 202, None, {"Location": f"{ctx.base}/subscriptions/{self.subscription_id}/operationresults/"
                                           f"{uuid.uuid4()}?api-version={ctx.api_version}"}
        raise ArmError(405, "MethodNotAllowed", f"The method '{ctx.method}' is not allowed.")

    # ------------------------------------------------------------- listing
    def _h_list_resources(self, ctx, route):
        if route.rg is not None:
            self._group(route.rg)
        flt = ctx.query.get("$filter")
        pred = _parse_filter(flt)
        items = [r for r in sorted(self.res.values(), key=lambda r: r.created + r.key)
                 if r.type != SUBNET and (route.rg is None or r.rg == route.rg.lower()) and pred(r)]
        expand = (ctx.query.get("$expand") or "").lower()
        top = ctx.query.get("$top")
        size = int(top) if top else self.page_size
        start = 0
        token = ctx.query.get("$skiptoken")
        if token:
            try:
                start = int(base64.urlsafe_b64decode(token.encode()).decode())
            except Exception:
                raise ArmError(400, "InvalidSkipToken", "The skip token is invalid.") from None
        page = items[start:start + size]
        value = []
        for r in page:
            d = {"id": r.id, "name": r.name, "type": r.type, "location": r.location}
            if r.tags is not None:
                d["tags"] = dict(r.tags)
            for k in ("sku", "zones", "kind"):
                if k in r.top:
                    d[k] = copy.deepcopy(r.top[k])
            if r.type == DISK and self._attached_vm(r) is not None:
                d["managedBy"] = self._attached_vm(r).id
            if "createdtime" in expand:
                d["createdTime"] = r.created
            if "changedtime" in expand:
                d["changedTime"] = r.changed
            if "provisioningstate" in expand:
                d["provisioningState"] = r.state
            value.append(d)
        body: dict[str, Any] = {"value": value}
        if start + size < len(items):
            params = {k: v for k, v in ctx.query.items() if k.lower() != "$skiptoken"}
            params["$skiptoken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
            path = (f"/subscriptions/{self.subscription_id}" +
                    (f"/resourcegroups/{route.rg}" if route.rg else "") + "/resources")
            body["nextLink"] = f"{ctx.base}{path}?{urlencode(params, quote_via=quote)}"
        return 200, body, {}

    def _h_list_type(self, ctx, route):
        self._group(route.rg)
        items = [self.render(r) for r in self.res.values() if r.type == route.type and r.rg == route.rg.lower()]
        return 200, {"value": items}, {}

    def _h_list_subnets(self, ctx, route):
        vnet = self._existing(route.rg, VNET, route.parent)
        return 200, {"value": self.render(vnet)["properties"]["subnets"]}, {}

    def _h_instance_view(self, ctx, route):
        vm = self._existing(route.rg, VM, route.name)
        return 200, self.instance_view(vm), {}

    def _h_extension(self, ctx, route):
        vm = self._get(self._rid(self._group(route.rg)["name"], VM, route.parent))
        if vm is None:
            raise ArmError(404, "ParentResourceNotFound",
                           f"Can not perform requested operation on nested resource. Parent resource "
                           f"'{route.parent}' not found.")
        eid = f"{vm.id}/extensions/{route.name}"
        self._finish_pending(eid.lower())
        existing = self._get(eid)
        if ctx.method == "GET":
            if existing is None:
                raise ArmError(404, "NotFound", "The entity was not found in this Azure location.")
            return 200, self.render(existing), {}
        if ctx.method == "DELETE":
            if existing is None:
                return 204, None, {}
            self._finish_pending(existing.key)
            return self._start_delete(ctx, existing)
        if ctx.method != "PUT":
            raise ArmError(405, "MethodNotAllowed", f"The method '{ctx.method}' is not allowed.")
        data = ctx.json()
        props = data.get("properties") or {}
        if not _norm_location(data.get("location")):
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        for field_name in ("publisher", "type", "typeHandlerVersion"):
            if not props.get(field_name):
                raise _invalid(f"Required parameter '{field_name}' is missing (null).", field_name)
        if vm.state != "Succeeded":
            raise ArmError(409, "OperationNotAllowed",
                           f"Operation 'PUT VM extension' is not allowed on VM '{vm.name}' since the VM is in "
                           f"provisioning state '{vm.state}'.")
        if vm.power != "running":
            raise ArmError(409, "OperationNotAllowed",
                           "Cannot modify extensions in the VM when the VM is not running.")
        for other in self.res.values():
            if (other.type == EXTENSION and other.key.startswith(vm.key + "/extensions/") and other.key != eid.lower()
                    and (other.props["publisher"].lower(), other.props["type"].lower())
                    == (props["publisher"].lower(), props["type"].lower())):
                raise ArmError(409, "OperationNotAllowed",
                               "Multiple VMExtensions per handler not supported for OS type 'Linux'. VMExtension "
                               f"'{route.name}' with handler '{props['publisher']}.{props['type']}' added to the VM "
                               f"already has an extension '{other.name}' with the same handler.")
        ext = Res(id=eid, type=EXTENSION, name=route.name, rg=vm.rg, location=vm.location,
                  tags=_check_tags(data.get("tags")),
                  props={k: props[k] for k in ("publisher", "type", "typeHandlerVersion", "autoUpgradeMinorVersion",
                                               "settings", "forceUpdateTag") if k in props},
                  secret=copy.deepcopy(props.get("protectedSettings")) if props.get("protectedSettings") else None)
        if existing is not None:
            ext.created = existing.created
        return self._store_put(ctx, ext, existing)

    def _h_vm_action(self, ctx, route):
        """POST start | deallocate | restart | powerOff: a long-running operation (202, no body).

        Refused as ARM refuses them: on a VM marked for deletion, on one still being created, and
        restart/powerOff of a deallocated VM. A newer action preempts one still running (that one
        ends Failed with OperationPreempted), as Azure does. Starting a running VM or deallocating a
        deallocated one is an operation that changes nothing.
        """
        if ctx.method != "POST":
            raise ArmError(405, "MethodNotAllowed", f"The method '{ctx.method}' is not allowed.")
        vm = self._existing(route.rg, VM, route.name)
        action = route.extra[0]
        if vm.state == "Deleting":
            raise ArmError(409, "OperationNotAllowed",
                           f"Operation '{action}' is not allowed on VM '{vm.name}' since the VM is marked for "
                           "deletion. You can only retry the Delete operation (or wait for an ongoing one to "
                           "complete).")
        running = self.ops.get(vm.op_id) if vm.op_id else None
        if running is not None and running.status == "InProgress":
            if running.kind != "action":
                raise ArmError(409, "Conflict", f"Operation '{action}' is not allowed on VM '{vm.name}' while it "
                                                "is being created or updated; try again later.")
            running.status, running.ended = "Failed", _now()
            running.error = {"code": "OperationPreempted",
                             "message": "Operation execution has been preempted by a more recent operation."}
            vm.power = running.power_before or vm.power
        if action in ("restart", "powerOff") and vm.power in ("deallocated", "deallocating"):
            raise ArmError(409, "OperationNotAllowed",
                           f"Operation '{action}' is not allowed on VM '{vm.name}' since the VM is deallocated or "
                           "marked to be deallocated.")
        if action == "restart" and vm.power != "running":
            raise ArmError(409, "OperationNotAllowed",
                           f"Operation 'restart' is not allowed on VM '{vm.name}' since the VM is not running.")
        before = vm.power
        op = self._start_op("action", vm, ctx.fault if ctx.fault and ctx.fault.action in ("lro_fail", "slow")
                            else None)
        op.action, op.power_before = action, before
        if before != {"start": "running", "deallocate": "deallocated"}.get(action):
            vm.state, vm.changed = "Updating", _now()
            vm.power = {"start": "starting", "restart": "starting", "deallocate": "deallocating",
                        "powerOff": "stopping"}[action]
        return 202, None, self._lro_headers(op, ctx, location=True)

    def _existing(self, rg: str, type_: str, name: str) -> Res:
        group = self._group(rg)
        r = self._get(self._rid(group["name"], type_, name))
        if r is None:
            raise self._not_found(type_, name, rg)
        return r

    # ------------------------------------------------------------- resources
    def _h_subnet(self, ctx, route):
        group = self._group(route.rg)
        vnet = self._get(self._rid(group["name"], VNET, route.parent))
        if vnet is None:
            raise self._not_found(VNET, route.parent, route.rg)
        sid = f"{vnet.id}/subnets/{route.name}"
        existing = self._get(sid)
        if ctx.method == "GET":
            if existing is None:
                raise ArmError(404, "NotFound", f"Resource {sid} not found.")
            return 200, self.render(existing), {}
        if ctx.method == "PUT":
            self._finish_pending(sid.lower())
            new = self._build_subnet(vnet, route.name, ctx.json(), existing)
            return self._store_put(ctx, new, existing)
        if ctx.method == "DELETE":
            if existing is None:
                return 204, None, {}
            self._finish_pending(existing.key)
            self._check_subnet_unused(existing)
            return self._start_delete(ctx, existing)
        raise ArmError(405, "MethodNotAllowed", f"The method '{ctx.method}' is not allowed.")

    def _h_resource(self, ctx, route):
        group = self._group(route.rg)
        rid = self._rid(group["name"], route.type, route.name)
        existing = self._get(rid)
        if ctx.method == "HEAD":
            return (204 if existing is not None else 404), None, {}
        if ctx.method == "GET":
            if existing is None:
                raise self._not_found(route.type, route.name, route.rg)
            return 200, self.render(existing, ctx.query.get("$expand")), {}
        if ctx.method in ("PUT", "PATCH"):
            if existing is not None:
                self._finish_pending(existing.key)
                existing = self._get(rid)
            data = ctx.json()
            if ctx.method == "PATCH":
                if existing is None:
                    raise self._not_found(route.type, route.name, route.rg)
                data = _merge_patch(self.render(existing), data)
            self._check_name(route.type, route.name)
            loc = _norm_location(data.get("location"))
            if not loc:
                raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
            if loc not in LOCATIONS:
                raise ArmError(400, "LocationNotAvailableForResourceType",
                               f"The provided location '{data.get('location')}' is not available for resource type "
                               f"'{route.type}'. List of available regions for the resource type is "
                               f"'{','.join(LOCATIONS)}'.")
            if existing is not None and existing.location != loc:
                raise ArmError(409, "InvalidResourceLocation",
                               f"The resource '{route.name}' already exists in location '{existing.location}' in "
                               f"resource group '{group['name']}'. A resource with the same name cannot be created in "
                               f"location '{loc}'. Please select a new resource name.")
            tags = _check_tags(data.get("tags"))
            props = data.get("properties") or {}
            if not isinstance(props, dict):
                raise ArmError(400, "InvalidRequestContent", "The request content was invalid: 'properties'.")
            base = Res(id=rid, type=route.type, name=route.name, rg=group["name"].lower(), location=loc,
                       tags=tags, props={})
            if existing is not None:
                base.created = existing.created
            builder = {VNET: self._build_vnet, NSG: self._build_nsg, PIP: self._build_pip, NIC: self._build_nic,
                       VM: self._build_vm, DISK: self._build_disk, SNAPSHOT: self._build_snapshot}[route.type]
            new = builder(base, data, props, existing)
            if existing is not None and new.guest is None:
                new.guest = copy.deepcopy(existing.guest)  # an update does not touch what is on the disk
            return self._store_put(ctx, new, existing)
        if ctx.method == "DELETE":
            if existing is None:
                return 204, None, {}
            self._finish_pending(existing.key)
            existing = self._get(rid)
            if existing is None:
                return 204, None, {}
            self._check_deletable(existing)
            keep = frozenset(ctx.fault.parts) if ctx.fault and ctx.fault.action == "keep_parts" else frozenset()
            return self._start_delete(ctx, existing, keep)
        raise ArmError(405, "MethodNotAllowed", f"The method '{ctx.method}' is not allowed.")

    def _store_put(self, ctx, new: Res, existing: Res | None):
        new.state = ("Creating" if existing is None else "Updating") if new.type in (VM,) else "Updating"
        new.changed = _now()
        self.res[new.key] = new
        if new.type == VNET:
            self._sync_subnets(new)
        op = self._start_op("put", new, ctx.fault)
        body = self.render(new)
        if new.type in (DISK, SNAPSHOT):
            status = 202 if existing is None else 200
            return status, body, self._lro_headers(op, ctx, location=True)
        status = 201 if existing is None else 200
        return status, body, self._lro_headers(op, ctx, location=False)

    def _start_delete(self, ctx, r: Res, keep: frozenset[str] = frozenset()):
        r.state = "Deleting"
        r.changed = _now()
        fault = ctx.fault if ctx.fault and ctx.fault.action in ("lro_fail", "slow") else None
        op = self._start_op("delete", r, fault, keep)
        return 202, None, self._lro_headers(op, ctx, location=True)

    # ------------------------------------------------------------- validation
    def _check_name(self, type_: str, name: str) -> None:
        if type_ == VM:
            if not _VM_NAME.match(name):
                raise ArmError(400, "InvalidResourceName",
                               f"The resource name '{name}' is invalid. Virtual machine names can be 1-64 characters "
                               "of letters, numbers, periods and hyphens; they can't start or end with a period or "
                               "hyphen and can't contain underscores or special characters.")
        elif not _GENERIC_NAME.match(name):
            raise ArmError(400, "InvalidResourceName",
                           f"Resource name {name} is invalid. The name can be up to 80 characters long. It must begin "
                           "with a word character, and it must end with a word character or with '_'. The name may "
                           "contain word characters or '.', '-', '_'.")

    def _check_deletable(self, r: Res) -> None:
        if r.type == NIC:
            vm = self._attached_vm(r)
            if vm is not None:
                raise ArmError(400, "NicInUse",
                               f"Network Interface {r.id} is used by existing resource {vm.id}. In order to delete the "
                               "network interface, it must be dissociated from the resource. To learn more, see "
                               "aka.ms/deletenic.")
        elif r.type == PIP:
            for ref, via in self._referrers(r):
                raise ArmError(400, "PublicIPAddressCannotBeDeleted",
                               f"Public IP address {r.id} can not be deleted since it is still allocated to resource "
                               f"{via}. In order to delete the public IP, disassociate/detach the Public IP address "
                               "from the resource.  To learn how to do this, see aka.ms/deletepublicip.")
        elif r.type == NSG:
            users = [ref.id for ref, _ in self._referrers(r)]
            if users:
                raise ArmError(400, "InUseNetworkSecurityGroupCannotBeDeleted",
                               f"Network security group {r.id} cannot be deleted because it is in use by the following "
                               f"resources: {', '.join(users)}. In order to delete the Network security group, remove "
                               "the association with the resource(s). To learn how to do this, see aka.ms/deletensg.")
        elif r.type == VNET:
            for s in [s for s in self.res.values() if s.type == SUBNET and s.key.startswith(r.key + "/subnets/")]:
                self._check_subnet_unused(s)
        elif r.type == DISK:
            vm = self._attached_vm(r)
            if vm is not None:
                raise ArmError(409, "OperationNotAllowed", f"Disk {r.name} is attached to VM {vm.id}.")

    def _check_subnet_unused(self, s: Res) -> None:
        users = [via for ref, via in self._referrers(s) if ref.type == NIC]
        if users:
            raise ArmError(400, "InUseSubnetCannotBeDeleted",
                           f"Subnet {s.name} is in use by {', '.join(users)} and cannot be deleted. In order to "
                           "delete the subnet, delete all the resources within the subnet. See aka.ms/deletesubnet.")

    def _ref(self, owner: Res, target_id: Any, expected_type: str) -> Res:
        target = self._get(target_id) if isinstance(target_id, str) else None
        if target is None or target.type != expected_type or (
                target.type != SUBNET and target.location != owner.location) or (
                target.type == SUBNET and self._get(target.id.rsplit("/subnets/", 1)[0]).location != owner.location):
            raise ArmError(400, "InvalidResourceReference",
                           f"Resource {target_id} referenced by resource {owner.id} was not found. Please make sure "
                           "that the referenced resource exists, and that both resources are in the same region.",
                           details=[{"code": "NotFound", "message": f"Resource {target_id} not found."}])
        return target

    # ------------------------------------------------------------- builders: network
    def _build_vnet(self, r: Res, data: dict, props: dict, existing: Res | None) -> Res:
        prefixes = (props.get("addressSpace") or {}).get("addressPrefixes") or []
        if not prefixes:
            raise ArmError(400, "InvalidRequestFormat",
                           "Cannot parse the request. addressSpace.addressPrefixes must contain at least one prefix.")
        nets = [_cidr(p, "addressSpace.addressPrefixes") for p in prefixes]
        subnets = props.get("subnets") or []  # absent means none: a PUT without subnets removes them, as in ARM
        seen = []
        for s in subnets:
            sp = s.get("properties") or {}
            prefix = sp.get("addressPrefix") or (sp.get("addressPrefixes") or [None])[0]
            if not s.get("name") or not prefix:
                raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request. Subnet name and addressPrefix "
                                                            "are required.")
            net = _cidr(prefix, "subnet.addressPrefix")
            if not any(net.subnet_of(n) for n in nets if n.version == net.version):
                raise ArmError(400, "NetcfgSubnetRangeOutsideVnet",
                               f"Subnet '{s['name']}' is not valid because its IP address range is outside the IP "
                               "address range of virtual network.")
            if any(net.overlaps(o) for o in seen):
                raise ArmError(400, "NetcfgSubnetRangesOverlap", f"Subnet '{s['name']}' overlaps another subnet.")
            seen.append(net)
        r.props = {"addressSpace": {"addressPrefixes": list(prefixes)}, "enableDdosProtection": False,
                   "_subnets": copy.deepcopy(subnets)}
        if existing is not None:
            keep = {s["name"].lower() for s in subnets}
            for s in [s for s in self.res.values() if s.type == SUBNET and s.key.startswith(existing.key + "/subnets/")]:
                if s.name.lower() not in keep:
                    self._check_subnet_unused(s)
        return r

    def _sync_subnets(self, vnet: Res) -> None:
        wanted = vnet.props.pop("_subnets", [])
        names = {s["name"].lower() for s in wanted}
        for k in [k for k, s in self.res.items() if s.type == SUBNET and k.startswith(vnet.key + "/subnets/")]:
            if self.res[k].name.lower() not in names:
                del self.res[k]
        for s in wanted:
            old = self._get(f"{vnet.id}/subnets/{s['name']}")
            sub = self._build_subnet(vnet, s["name"], s, old, check_range=False)
            sub.state = "Succeeded"
            self.res[sub.key] = sub

    def _build_subnet(self, vnet: Res, name: str, data: dict, existing: Res | None, check_range: bool = True) -> Res:
        if not _GENERIC_NAME.match(name):
            self._check_name(SUBNET, name)
        sp = data.get("properties") or {}
        prefix = sp.get("addressPrefix") or (sp.get("addressPrefixes") or [None])[0]
        if not prefix:
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request. Subnet addressPrefix is required.")
        net = _cidr(prefix, "addressPrefix")
        r = Res(id=f"{vnet.id}/subnets/{name}", type=SUBNET, name=name, rg=vnet.rg, location=vnet.location,
                tags=None, props={"addressPrefix": str(net), "privateEndpointNetworkPolicies": "Disabled",
                                  "privateLinkServiceNetworkPolicies": "Enabled"})
        if check_range:
            nets = [ipaddress.ip_network(p, strict=False) for p in vnet.props["addressSpace"]["addressPrefixes"]]
            if not any(net.subnet_of(n) for n in nets if n.version == net.version):
                raise ArmError(400, "NetcfgSubnetRangeOutsideVnet",
                               f"Subnet '{name}' is not valid because its IP address range is outside the IP address "
                               "range of virtual network.")
        nsg_ref = (sp.get("networkSecurityGroup") or {}).get("id")
        if nsg_ref:
            self._ref(vnet, nsg_ref, NSG)
            r.props["networkSecurityGroup"] = {"id": self._get(nsg_ref).id}
        if existing is not None:
            r.created = existing.created
        return r

    def _build_nsg(self, r: Res, data: dict, props: dict, existing: Res | None) -> Res:
        rules = []
        priorities: dict[tuple[str, int], str] = {}
        for rule in props.get("securityRules") or []:
            rp = rule.get("properties") or {}
            name = rule.get("name")
            if not name:
                raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request. Security rule name is missing.")
            prio = rp.get("priority")
            if not isinstance(prio, int) or not 100 <= prio <= 4096:
                raise ArmError(400, "SecurityRuleInvalidPriority",
                               f"Security rule {name} has invalid priority {prio}. Value provided: {prio} Allowed "
                               "range 100-4096.")
            direction = rp.get("direction")
            if direction not in ("Inbound", "Outbound"):
                raise ArmError(400, "SecurityRuleInvalidDirection", f"Security rule {name} has invalid direction.")
            if rp.get("access") not in ("Allow", "Deny"):
                raise ArmError(400, "SecurityRuleInvalidAccess", f"Security rule {name} has invalid access.")
            if rp.get("protocol") not in ("Tcp", "Udp", "Icmp", "Esp", "Ah", "*"):
                raise ArmError(400, "SecurityRuleInvalidProtocol", f"Security rule {name} has invalid protocol.")
            if (direction, prio) in priorities:
                raise ArmError(400, "SecurityRuleConflict",
                               f"Security rule {name} conflicts with rule {priorities[(direction, prio)]}. Rules "
                               "cannot have the same Priority and Direction.")
            priorities[(direction, prio)] = name
            for key in ("sourceAddressPrefix", "destinationAddressPrefix"):
                value = rp.get(key)
                if value and value not in ("*", "Internet", "VirtualNetwork", "AzureLoadBalancer"):
                    _cidr(value, f"securityRules.{key}", code="SecurityRuleInvalidAddressPrefix")
            clean = {k: v for k, v in rp.items() if k != "provisioningState"}
            clean["provisioningState"] = "Succeeded"
            rules.append({"name": name, "id": f"{r.id}/securityRules/{name}",
                          "type": "Microsoft.Network/networkSecurityGroups/securityRules", "properties": clean})
        r.props = {"securityRules": rules}
        return r

    def _build_pip(self, r: Res, data: dict, props: dict, existing: Res | None) -> Res:
        sku = (data.get("sku") or {}).get("name", "Basic")
        if sku not in ("Basic", "Standard", "StandardV2"):
            raise ArmError(400, "InvalidRequestFormat", f"Cannot parse the request. Invalid sku '{sku}'.")
        method = props.get("publicIPAllocationMethod") or ("Static" if sku != "Basic" else "Dynamic")
        if sku != "Basic" and method != "Static":
            raise ArmError(400, "StandardSkuPublicIPAddressesMustBeStatic",
                           f"Standard sku publicIp {r.id} must have AllocationMethod set to Static.")
        delete_option = props.get("deleteOption")
        if delete_option not in (None, "Delete", "Detach"):
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request. Invalid deleteOption.")
        if existing is not None and (existing.top.get("sku") or {}).get("name") != sku:
            raise ArmError(400, "InvalidRequestFormat",
                           "Changing the SKU of a public IP address is not supported.")
        r.top = {"sku": {"name": sku, "tier": (data.get("sku") or {}).get("tier", "Regional")}}
        if data.get("zones"):
            r.top["zones"] = _check_zones(data["zones"])
        address = existing.props.get("ipAddress") if existing else None
        if address is None:
            address = self._new_public_address()
        r.props = {"publicIPAllocationMethod": method, "publicIPAddressVersion": props.get("publicIPAddressVersion",
                                                                                           "IPv4"),
                   "idleTimeoutInMinutes": props.get("idleTimeoutInMinutes", 4), "ipTags": [], "ipAddress": address}
        if delete_option:
            r.props["deleteOption"] = delete_option
        return r

    def _build_nic(self, r: Res, data: dict, props: dict, existing: Res | None) -> Res:
        ipcs = props.get("ipConfigurations") or []
        if not ipcs:
            raise ArmError(400, "InvalidRequestFormat", "Cannot parse the request. A network interface needs at least "
                                                        "one IP configuration.")
        out = []
        for i, ipc in enumerate(ipcs):
            p = ipc.get("properties") or {}
            name = ipc.get("name") or f"ipconfig{i + 1}"
            subnet_id = (p.get("subnet") or {}).get("id")
            if not subnet_id:
                raise ArmError(400, "InvalidRequestFormat",
                               f"Cannot parse the request. IP configuration {r.id}/ipConfigurations/{name} must "
                               "reference a subnet.")
            subnet = self._ref(r, subnet_id, SUBNET)
            cfg: dict[str, Any] = {"subnet": {"id": subnet.id}, "primary": i == 0,
                                   "privateIPAllocationMethod": p.get("privateIPAllocationMethod", "Dynamic"),
                                   "privateIPAddressVersion": "IPv4"}
            pip_id = (p.get("publicIPAddress") or {}).get("id")
            if pip_id:
                pip = self._ref(r, pip_id, PIP)
                for ref, via in self._referrers(pip):
                    if ref.key != r.key:
                        raise ArmError(400, "PublicIPAddressInUse",
                                       f"Resource {r.id}/ipConfigurations/{name} is referencing public IP address "
                                       f"{pip.id} that is already allocated to resource {via}.")
                cfg["publicIPAddress"] = {"id": pip.id}
            old_ip = None
            if existing is not None:
                for old in existing.props.get("ipConfigurations", []):
                    if old["name"] == name and old["properties"]["subnet"]["id"].lower() == subnet.key:
                        old_ip = old["properties"].get("privateIPAddress")
            cfg["privateIPAddress"] = old_ip or self._allocate_private(subnet, r)
            out.append({"name": name, "id": f"{r.id}/ipConfigurations/{name}",
                        "type": "Microsoft.Network/networkInterfaces/ipConfigurations", "properties": cfg})
        r.props = {"ipConfigurations": out, "enableAcceleratedNetworking": bool(props.get(
            "enableAcceleratedNetworking", False)), "enableIPForwarding": False, "nicType": "Standard",
                   "dnsSettings": {"dnsServers": [], "appliedDnsServers": []}}
        nsg_id = (props.get("networkSecurityGroup") or {}).get("id")
        if nsg_id:
            r.props["networkSecurityGroup"] = {"id": self._ref(r, nsg_id, NSG).id}
        return r

    def _allocate_private(self, subnet: Res, owner: Res) -> str:
        net = ipaddress.ip_network(subnet.props["addressPrefix"])
        used = set()
        for ref, _ in self._referrers(subnet):
            if ref.type == NIC and ref.key != owner.key:
                for ipc in ref.props.get("ipConfigurations", []):
                    used.add(ipc["properties"].get("privateIPAddress"))
        for i, host in enumerate(net.hosts()):
            if i >= 3 and str(host) not in used:  # Azure keeps .1-.3 for itself; the first NIC gets .4
                return str(host)
        raise ArmError(400, "SubnetIsFull", f"Subnet {subnet.name} with address prefix {net} does not have enough "
                                            "capacity for 1 IP addresses.")

    # ------------------------------------------------------------- builders: compute
    def _build_disk(self, r: Res, data: dict, props: dict, existing: Res | None) -> Res:
        sku = (data.get("sku") or {}).get("name", "Standard_LRS")
        if sku not in _DISK_SKUS:
            raise _invalid(f"The value '{sku}' of parameter 'sku.name' is not allowed. Allowed values are "
                           f"'{', '.join(sorted(_DISK_SKUS))}'.", "sku.name")
        r.top = {"sku": {"name": sku, "tier": "Premium" if sku.startswith("Premium") else "Standard"}}
        if data.get("zones"):
            r.top["zones"] = _check_zones(data["zones"])
        size = props.get("diskSizeGB")
        if existing is not None:
            r.props = copy.deepcopy(existing.props)
            r.top = {**existing.top, "sku": r.top["sku"]}
            if size is not None:
                if size < existing.props["diskSizeGB"]:
                    raise ArmError(409, "BadRequest",
                                   f"Disk size reduction is not supported. Current size is "
                                   f"{existing.props['diskSizeGB']} GB, requested size is {size} GB.")
                r.props["diskSizeGB"] = size
            return r
        creation = props.get("creationData") or {}
        option = (creation.get("createOption") or "").lower()
        src_info: dict[str, Any] = {}
        if option == "empty":
            if not isinstance(size, int) or size < 1:
                raise _invalid("Required parameter 'diskSizeGB' is missing (null).", "diskSizeGB")
        elif option == "copy":
            src = self._source(r, creation.get("sourceResourceId"))
            src_size = src.props["diskSizeGB"]
            if size is None:
                size = src_size
            elif size < src_size:
                raise _invalid(f"Disk size {size} GB is smaller than the size of the source {src.name}: "
                               f"{src_size} GB.", "diskSizeGB")
            src_info = {"sourceResourceId": src.id, "sourceUniqueId": src.props.get("uniqueId")}
            r.guest = copy.deepcopy(src.guest)
            for k in ("osType", "hyperVGeneration"):
                if src.props.get(k):
                    props = {**props, k: props.get(k) or src.props[k]}
        elif not option:
            raise _invalid("Required parameter 'creationData.createOption' is missing (null).",
                           "creationData.createOption")
        else:
            raise _invalid(f"The fake does not implement createOption '{creation.get('createOption')}' for disks.",
                           "creationData.createOption")
        r.props = {"creationData": {"createOption": creation["createOption"], **src_info}, "diskSizeGB": size,
                   "diskSizeBytes": size * 1024 ** 3, "uniqueId": str(uuid.uuid4()), "timeCreated": _now(),
                   "encryption": {"type": "EncryptionAtRestWithPlatformKey"}, "networkAccessPolicy": "AllowAll",
                   "publicNetworkAccess": "Enabled", "tier": "E4" if sku.startswith("StandardSSD") else "S4"}
        for k in ("osType", "hyperVGeneration"):
            if props.get(k):
                r.props[k] = props[k]
        return r

    def _build_snapshot(self, r: Res, data: dict, props: dict, existing: Res | None) -> Res:
        sku = (data.get("sku") or {}).get("name", "Standard_LRS")
        if sku not in ("Standard_LRS", "Premium_LRS", "Standard_ZRS"):
            raise _invalid(f"The value '{sku}' of parameter 'sku.name' is not allowed.", "sku.name")
        if existing is not None:
            r.props, r.top = copy.deepcopy(existing.props), copy.deepcopy(existing.top)
            return r
        creation = props.get("creationData") or {}
        if (creation.get("createOption") or "").lower() != "copy":
            raise _invalid("The fake only implements createOption 'Copy' for snapshots.", "creationData.createOption")
        src = self._source(r, creation.get("sourceResourceId"))
        r.top = {"sku": {"name": sku, "tier": "Standard"}}
        r.props = {"creationData": {"createOption": "Copy", "sourceResourceId": src.id,
                                    "sourceUniqueId": src.props.get("uniqueId")},
                   "diskSizeGB": src.props["diskSizeGB"], "diskSizeBytes": src.props["diskSizeGB"] * 1024 ** 3,
                   "incremental": bool(props.get("incremental", False)), "uniqueId": str(uuid.uuid4()),
                   "timeCreated": _now(), "diskState": "Unattached",
                   "encryption": {"type": "EncryptionAtRestWithPlatformKey"}}
        for k in ("osType", "hyperVGeneration"):
            if src.props.get(k):
                r.props[k] = src.props[k]
        r.guest = copy.deepcopy(src.guest)
        return r

    def _source(self, owner: Res, src_id: Any) -> Res:
        src = self._get(src_id) if isinstance(src_id, str) else None
        if src is None or src.type not in (DISK, SNAPSHOT):
            m = re.search(r"(?i)/resourceGroups/([^/]+)/providers/([^/]+/[^/]+)/([^/]+)$", str(src_id or ""))
            if m:
                raise ArmError(404, "ResourceNotFound",
                               f"The Resource '{m.group(2)}/{m.group(3)}' under resource group '{m.group(1)}' was "
                               "not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
            raise _invalid("The value of parameter creationData.sourceResourceId is invalid.",
                           "creationData.sourceResourceId")
        if src.location != owner.location:
            raise _invalid(f"The source {src.id} is in location '{src.location}', not '{owner.location}'.",
                           "creationData.sourceResourceId")
        return src

    def _build_vm(self, r: Res, data: dict, props: dict, existing: Res | None) -> Res:
        hw = props.get("hardwareProfile") or (existing.props["hardwareProfile"] if existing else {})
        size_req = hw.get("vmSize")
        if not size_req:
            raise _invalid("Required parameter 'hardwareProfile.vmSize' is missing (null).", "hardwareProfile.vmSize")
        size = next((n for n in VM_SIZES if n.lower() == str(size_req).lower()), None)
        if size is None:
            raise _invalid(f"The value {size_req} provided for the VM size is not valid. The valid sizes in the "
                           f"current region are: {', '.join(VM_SIZES)}. Find out more on the available VM sizes in "
                           "each region at https://aka.ms/azure-regions.", "vmSize")
        zones = _check_zones(data["zones"]) if data.get("zones") else None
        if (r.location, size.lower()) in self.restricted_skus:
            raise ArmError(409, "SkuNotAvailable",
                           f"The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: "
                           f"{size}' is currently not available in location '{r.location}'. Please try another size "
                           "or deploy to a different location or different zone. See "
                           "https://aka.ms/azureskunotavailable for details.")
        if existing is not None:
            return self._update_vm(r, data, props, existing, size, zones)
        cores = VM_SIZES[size][0]
        used = sum(VM_SIZES[v.props["hardwareProfile"]["vmSize"]][0] for v in self.res.values()
                   if v.type == VM and v.location == r.location)
        limit = self.core_quota.get(r.location, DEFAULT_CORE_QUOTA)
        if used + cores > limit:
            raise ArmError(409, "OperationNotAllowed",
                           "Operation could not be completed as it results in exceeding approved Total Regional Cores "
                           f"quota. Additional details - Deployment Model: Resource Manager, Location: {r.location}, "
                           f"Current Limit: {limit}, Current Usage: {used}, Additional Required: {cores}, (Minimum) "
                           f"New Limit Required: {used + cores}. Submit a request for Quota increase at "
                           "https://aka.ms/ProdportalCRP/#blade/Microsoft_Azure_Capacity/UsageAndQuota.ReactView.")
        sp = props.get("storageProfile")
        if not sp:
            raise _invalid("Required parameter 'storageProfile' is missing (null).", "storageProfile")
        osd = dict(sp.get("osDisk") or {})
        option = (osd.get("createOption") or ("FromImage" if sp.get("imageReference") else "")).lower()
        os_profile = props.get("osProfile")
        net = self._vm_network(r, props)
        stored_sp: dict[str, Any]
        if option == "fromimage":
            image = sp.get("imageReference") or {}
            if image.get("id") or image.get("sharedGalleryImageId") or image.get("communityGalleryImageId"):
                raise _invalid("The fake serves marketplace images only (publisher/offer/sku/version).",
                               "imageReference")
            missing = [k for k in ("publisher", "offer", "sku", "version") if not image.get(k)]
            if missing:
                raise _invalid(f"Required parameter 'imageReference.{missing[0]}' is missing (null).",
                               f"imageReference.{missing[0]}")
            urn = f"{image['publisher']}:{image['offer']}:{image['sku']}:{image['version']}"
            versions = self._image_versions(image["publisher"], image["offer"], image["sku"])
            if versions is None or (image["version"].lower() != "latest" and image["version"] not in versions):
                raise ArmError(404, "PlatformImageNotFound",
                               f"The platform image '{urn}' is not available. Verify that all fields in the storage "
                               "profile are correct. For more details about storage profile information, please refer "
                               "to https://aka.ms/storageprofile", target="imageReference")
            exact = versions[-1] if image["version"].lower() == "latest" else image["version"]
            if os_profile is None:
                raise _invalid("Required parameter 'osProfile' is missing (null).", "osProfile")
            stored_os = self._check_os_profile(os_profile)
            disk_gb = osd.get("diskSizeGB")
            if disk_gb is not None and disk_gb < IMAGE_DISK_GB:
                raise ArmError(400, "InvalidParameter",
                               f"The specified disk size {disk_gb} GB is smaller than the size of the corresponding "
                               f"disk in the VM image: {IMAGE_DISK_GB} GB. This is not allowed. Please choose equal "
                               "or greater size or do not specify an explicit size.", target="osDisk.diskSizeGB")
            account = (osd.get("managedDisk") or {}).get("storageAccountType", "Premium_LRS")
            if account not in _DISK_SKUS:
                raise _invalid(f"The value '{account}' of parameter 'storageAccountType' is not allowed.",
                               "osDisk.managedDisk.storageAccountType")
            disk_name = osd.get("name") or f"{r.name}_OsDisk_1_{uuid.uuid4().hex}"
            self._check_name(DISK, disk_name)
            disk_id = self._rid(self.groups[r.rg]["name"], DISK, disk_name)
            if self._get(disk_id) is not None:
                holder = self._attached_vm(self._get(disk_id))
                raise ArmError(409, "ConflictingUserInput",
                               f"A disk with name {disk_name} already exists in Resource Group "
                               f"{self.groups[r.rg]['name'].upper()}" +
                               (f" and is attached to VM {holder.id}" if holder else "") +
                               ". 'Name' is an optional property for a disk and a unique name will be generated if "
                               "not provided.", target="/subscriptions/.../disks/" + disk_name)
            disk = Res(id=disk_id, type=DISK, name=disk_name, rg=r.rg, location=r.location, tags=None,
                       props={"osType": "Linux", "hyperVGeneration": "V2", "diskSizeGB": disk_gb or IMAGE_DISK_GB,
                              "diskSizeBytes": (disk_gb or IMAGE_DISK_GB) * 1024 ** 3,
                              "creationData": {"createOption": "FromImage", "imageReference": {
                                  "id": f"/Subscriptions/{self.subscription_id}/Providers/Microsoft.Compute/Locations/"
                                        f"{r.location}/Publishers/{image['publisher']}/ArtifactTypes/VMImage/Offers/"
                                        f"{image['offer']}/Skus/{image['sku']}/Versions/{exact}"}},
                              "uniqueId": str(uuid.uuid4()), "timeCreated": _now(),
                              "encryption": {"type": "EncryptionAtRestWithPlatformKey"}},
                       top={"sku": {"name": account, "tier": "Premium" if account.startswith("Premium") else
                                    "Standard"}}, state="Updating",
                       guest={stored_os["adminUsername"]: [k["keyData"].strip() for k in
                                                           stored_os["linuxConfiguration"]["ssh"]["publicKeys"]]})
            if zones:
                disk.top["zones"] = zones
            stored_sp = {"imageReference": {"publisher": image["publisher"], "offer": image["offer"],
                                            "sku": image["sku"], "version": image["version"], "exactVersion": exact},
                         "osDisk": {"osType": "Linux", "name": disk_name, "createOption": "FromImage",
                                    "caching": osd.get("caching", "ReadWrite"),
                                    "managedDisk": {"storageAccountType": account, "id": disk_id},
                                    "deleteOption": osd.get("deleteOption", "Detach"),
                                    "diskSizeGB": disk_gb or IMAGE_DISK_GB},
                         "dataDisks": [], "diskControllerType": "SCSI"}
        elif option == "attach":
            if os_profile is not None:
                raise _invalid("Parameter 'osProfile' is not allowed.", "osProfile")
            if not osd.get("osType"):
                raise _invalid("Required parameter 'osDisk.osType' is missing (null).", "osDisk.osType")
            disk_ref = (osd.get("managedDisk") or {}).get("id")
            if not disk_ref:
                raise _invalid("Required parameter 'osDisk.managedDisk.id' is missing (null).",
                               "osDisk.managedDisk.id")
            disk = self._get(disk_ref)
            if disk is None or disk.type != DISK:
                m = re.search(r"(?i)/resourceGroups/([^/]+)/providers/[^/]+/[^/]+/([^/]+)$", disk_ref)
                raise ArmError(404, "NotFound",
                               f"The Resource 'Microsoft.Compute/disks/{m.group(2) if m else disk_ref}' under resource "
                               f"group '{m.group(1) if m else '?'}' was not found.")
            holder = self._attached_vm(disk)
            if holder is not None:
                raise ArmError(409, "ConflictingUserInput",
                               f"Disk {disk.name} is already attached to VM {holder.id}.")
            if disk.location != r.location:
                raise _invalid(f"Disk {disk.id} is in location '{disk.location}', not '{r.location}'.",
                               "osDisk.managedDisk.id")
            stored_os = None
            stored_sp = {"osDisk": {"osType": osd["osType"], "name": disk.name, "createOption": "Attach",
                                    "caching": osd.get("caching", "ReadWrite"),
                                    "managedDisk": {"storageAccountType": disk.top["sku"]["name"], "id": disk.id},
                                    "deleteOption": osd.get("deleteOption", "Detach"),
                                    "diskSizeGB": disk.props["diskSizeGB"]},
                         "dataDisks": [], "diskControllerType": "SCSI"}
            disk = None
        elif option == "empty":
            raise _invalid("The value 'Empty' of parameter 'osDisk.createOption' is not allowed for an OS disk.",
                           "osDisk.createOption")
        else:
            raise _invalid("Required parameter 'osDisk.createOption' is missing (null).", "osDisk.createOption")
        if stored_sp["osDisk"]["deleteOption"] not in ("Delete", "Detach"):
            raise _invalid("The value of parameter osDisk.deleteOption is invalid.", "osDisk.deleteOption")
        r.props = {"hardwareProfile": {"vmSize": size}, "storageProfile": stored_sp, "networkProfile": net,
                   "vmId": str(uuid.uuid4()), "timeCreated": _now(),
                   "diagnosticsProfile": props.get("diagnosticsProfile") or {"bootDiagnostics": {"enabled": False}}}
        if stored_os is not None:
            r.props["osProfile"] = stored_os
        if zones:
            r.top = {"zones": zones}
        if disk is not None:
            self.res[disk.key] = disk
        return r

    def _update_vm(self, r: Res, data: dict, props: dict, existing: Res, size: str, zones) -> Res:
        old = existing.props

        def immutable(path: str, new, cur) -> None:
            if new is not None and cur is not None and str(new).lower() != str(cur).lower():
                raise ArmError(409, "PropertyChangeNotAllowed", f"Changing property '{path}' is not allowed.",
                               target=path)

        osp = props.get("osProfile")
        if osp is not None:
            if "osProfile" not in old:
                raise _invalid("Parameter 'osProfile' is not allowed.", "osProfile")
            immutable("osProfile.computerName", osp.get("computerName"), old["osProfile"].get("computerName"))
            immutable("osProfile.adminUsername", osp.get("adminUsername"), old["osProfile"].get("adminUsername"))
        sp = props.get("storageProfile") or {}
        image, cur_image = sp.get("imageReference") or {}, old["storageProfile"].get("imageReference") or {}
        for k in ("publisher", "offer", "sku"):
            immutable(f"imageReference.{k}", image.get(k), cur_image.get(k))
        osd = sp.get("osDisk") or {}
        immutable("osDisk.name", osd.get("name"), old["storageProfile"]["osDisk"].get("name"))
        immutable("osDisk.createOption", osd.get("createOption"), old["storageProfile"]["osDisk"].get("createOption"))
        if zones is not None and existing.top.get("zones") and zones != existing.top["zones"]:
            raise ArmError(409, "PropertyChangeNotAllowed", "Changing property 'zones' is not allowed.",
                           target="zones")
        r.props = copy.deepcopy(old)
        r.top = copy.deepcopy(existing.top)
        r.power = existing.power
        r.props["hardwareProfile"] = {"vmSize": size}
        if osd.get("deleteOption") in ("Delete", "Detach"):
            r.props["storageProfile"]["osDisk"]["deleteOption"] = osd["deleteOption"]
        if props.get("networkProfile"):
            r.props["networkProfile"] = self._vm_network(r, props, existing)
        return r

    def _vm_network(self, r: Res, props: dict, existing: Res | None = None) -> dict:
        netp = props.get("networkProfile") or {}
        if netp.get("networkInterfaceConfigurations"):
            raise _invalid("The fake does not implement networkInterfaceConfigurations (VM-created NICs); reference "
                           "existing NICs in networkProfile.networkInterfaces.",
                           "networkProfile.networkInterfaceConfigurations")
        refs = netp.get("networkInterfaces") or []
        if not refs:
            raise _invalid("Required parameter 'networkProfile' is missing (null).", "networkProfile")
        out = []
        for ref in refs:
            nic = self._get(ref.get("id"))
            if nic is None or nic.type != NIC:
                raise ArmError(400, "NotFound", f"Resource {ref.get('id')} not found.",
                               target="networkProfile.networkInterfaces")
            holder = self._attached_vm(nic)
            if holder is not None and holder.key != r.key:
                raise ArmError(400, "NicReservedForAnotherVm",
                               f"Nic(s) in request is reserved for another Virtual Machine. {nic.id} is attached to "
                               f"{holder.id}.")
            if nic.location != r.location:
                raise _invalid(f"The network interface {nic.id} is in location '{nic.location}', not "
                               f"'{r.location}'.", "networkProfile.networkInterfaces")
            p = dict(ref.get("properties") or {})
            option = p.get("deleteOption", "Detach")
            if option not in ("Delete", "Detach"):
                raise _invalid("The value of parameter networkInterfaces.deleteOption is invalid.",
                               "networkProfile.networkInterfaces.deleteOption")
            p["deleteOption"] = option
            if len(refs) == 1:
                p.setdefault("primary", True)
            out.append({"id": nic.id, "properties": p})
        if len(out) > 1 and sum(bool(x["properties"].get("primary")) for x in out) != 1:
            raise _invalid("Virtual machine must have exactly one primary network interface.",
                           "networkProfile.networkInterfaces")
        return {"networkInterfaces": out}

    def _check_os_profile(self, osp: dict) -> dict:
        name = osp.get("computerName")
        if not name:
            raise _invalid("Required parameter 'osProfile.computerName' is missing (null).", "osProfile.computerName")
        if not _HOST_NAME.match(name):
            raise _invalid("Linux host name cannot exceed 64 characters in length or contain the following "
                           "characters: ` ~ ! @ # $ % ^ & * ( ) = + _ [ ] { } \\ | ; : ' \" , < > / ?.",
                           "osProfile.computerName")
        user = osp.get("adminUsername")
        if not user:
            raise _invalid("Required parameter 'adminUsername' is missing (null).", "adminUsername")
        if user.lower() in RESERVED_ADMIN_NAMES:
            raise _invalid("The Admin Username specified is not allowed.", "adminUsername")
        if not _ADMIN_NAME.match(user) or user.endswith("."):
            raise _invalid("Linux admin user name cannot exceed 64 characters in length, end with a period(.), or "
                           "contain the following characters: \\ / \" [ ] : | < > + = ; , ? * @.", "adminUsername")
        linux = osp.get("linuxConfiguration") or {}
        no_password = bool(linux.get("disablePasswordAuthentication"))
        keys = ((linux.get("ssh") or {}).get("publicKeys")) or []
        if no_password and not keys:
            raise _invalid("Authentication using either SSH or by user name and password must be enabled in Linux "
                           "profile.", "linuxConfiguration")
        if not no_password and not osp.get("adminPassword"):
            raise _invalid("Required parameter 'adminPassword' is missing (null).", "adminPassword")
        for key in keys:
            want = f"/home/{user}/.ssh/authorized_keys"
            if key.get("path") != want:
                raise _invalid("Destination path for SSH public keys is currently limited to its default value "
                               f"{want} due to a known issue in Linux provisioning agent.",
                               "linuxConfiguration.ssh.publicKeys.path")
            data = (key.get("keyData") or "").strip()
            if not re.match(r"^(ssh-rsa|ssh-ed25519) [A-Za-z0-9+/=]{16,}( .*)?$", data):
                raise _invalid("The value of parameter linuxConfiguration.ssh.publicKeys.keyData is invalid.",
                               "linuxConfiguration.ssh.publicKeys.keyData")
        return {"computerName": name, "adminUsername": user,
                "linuxConfiguration": {"disablePasswordAuthentication": no_password,
                                       "ssh": {"publicKeys": [{"path": k["path"], "keyData": k["keyData"]}
                                                              for k in keys]},
                                       "provisionVMAgent": True,
                                       "patchSettings": {"patchMode": "ImageDefault", "assessmentMode": "ImageDefault"}},
                "secrets": [], "allowExtensionOperations": True, "requireGuestProvisionSignal": True}


@dataclass
class _Ctx:
    method: str
    query: dict[str, str]
    body: bytes
    base: str
    api_version: str
    fault: Fault | None

    def json(self) -> dict:
        if not self.body:
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                                                         "deserialized: 'empty body'.")
        try:
            data = json.loads(self.body)
        except ValueError as e:
            raise ArmError(400, "InvalidRequestContent",
                           f"The request content was invalid and could not be deserialized: '{e}'.") from None
        if not isinstance(data, dict):
            raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
        return data


def _norm_location(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    return value.replace(" ", "").lower()


def _check_tags(tags: Any) -> dict[str, str] | None:
    if tags is None:
        return None
    if not isinstance(tags, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid: 'tags' must be an object.")
    if len(tags) > 50:
        raise ArmError(400, "InvalidTemplate",
                       "The number of tags exceeds the maximum of 50.")
    for k, v in tags.items():
        if not k or any(c in _TAG_FORBIDDEN or ord(c) < 32 for c in k):
            raise ArmError(400, "InvalidTagNameCharacters",
                           f"The tag names '{k}' have reserved characters '<,>,%,&,\\,?,/' or control characters.")
        if len(k) > 512:
            raise ArmError(400, "InvalidTagNameLength", f"The tag name '{k[:20]}...' exceeds 512 characters.")
        if not isinstance(v, str) or len(v) > 256:
            raise ArmError(400, "InvalidTagValueLength", f"The value of tag '{k}' must be a string of at most 256 "
                                                         "characters.")
    return dict(tags)


def _check_zones(zones: Any) -> list[str]:
    if not isinstance(zones, list) or len(zones) != 1 or str(zones[0]) not in ZONES:
        raise _invalid(f"The zones {zones} are not valid; give exactly one of {', '.join(ZONES)}.", "zones")
    return [str(zones[0])]


def _cidr(value: Any, what: str, code: str = "InvalidAddressPrefixFormat") -> ipaddress.IPv4Network:
    try:
        return ipaddress.ip_network(str(value), strict=True)
    except ValueError:
        raise ArmError(400, code, f"Address prefix {value} of {what} is not in a valid format.") from None


def _parse_filter(flt: str | None):
    if not flt:
        return lambda r: True
    m = re.fullmatch(r"\s*tagName\s+eq\s+'((?:[^']|'')*)'(?:\s+and\s+tagValue\s+eq\s+'((?:[^']|'')*)')?\s*", flt,
                     re.I)
    if m:
        name = m.group(1).replace("''", "'").lower()
        value = m.group(2).replace("''", "'") if m.group(2) is not None else None

        def by_tag(r: Res) -> bool:
            tags = {k.lower(): v for k, v in (r.tags or {}).items()}
            return name in tags and (value is None or tags[name] == value)

        return by_tag
    m = re.fullmatch(r"\s*resourceType\s+eq\s+'([^']*)'\s*", flt, re.I)
    if m:
        want = m.group(1).lower()
        return lambda r: r.type.lower() == want
    raise ArmError(400, "InvalidFilter",
                   f"Invalid $filter '{flt}' specified in the query string.")


def _merge_patch(current: dict, patch: dict) -> dict:
    out = copy.deepcopy(current)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "tags":
            out[k] = _merge_patch(out[k], v)
        else:
            out[k] = v
    return out


# ---------------------------------------------------------------------- server
def _make_app(state: ArmState):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        query = dict(parse_qsl(request.url.query, keep_blank_values=True))
        headers = {k.lower(): v for k, v in request.headers.items()}
        base = f"{request.url.scheme}://{request.url.netloc}"
        status, payload, hdrs = state.handle(request.method, request.url.path, query, headers, body, base)
        hold = float(hdrs.pop(HOLD_HEADER, 0) or 0)
        if hold:
            await asyncio.sleep(hold)  # done, but answered late: the client may have given up
        if payload is None or request.method == "HEAD":
            return Response(status_code=status, headers=hdrs)
        return Response(json.dumps(payload), status_code=status, headers=hdrs,
                        media_type="application/json; charset=utf-8")

    methods = ["GET", "PUT", "PATCH", "POST", "DELETE", "HEAD"]
    return Starlette(routes=[Route("/{path:path}", endpoint, methods=methods)])


class ArmFake:
    """The ARM fake: state plus an HTTPS server (uvicorn in a thread)."""

    def __init__(self, subscription_id: str = SUBSCRIPTION_ID) -> None:
        self.state = ArmState(subscription_id)
        self.subscription_id = subscription_id
        self._server = None
        self._thread: threading.Thread | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.url = ""
        self.ca_path = ""

    def start(self, host: str = "127.0.0.1", port: int = 0, ca_out: str | None = None) -> "ArmFake":
        import trustme
        import uvicorn

        self._tmp = tempfile.TemporaryDirectory(prefix="arm-fake-")
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", "::1")
        cert_path = Path(self._tmp.name) / "server.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(cert_path))
        self.ca_path = ca_out or str(Path(self._tmp.name) / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        port = sock.getsockname()[1]
        config = uvicorn.Config(_make_app(self.state), ssl_certfile=str(cert_path), log_level="warning",
                                access_log=False, lifespan="off", timeout_keep_alive=30)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="arm-fake")
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ARM fake did not start")
            time.sleep(0.02)
        self.url = f"https://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            # Idle keep-alive TLS connections from SDK clients would hold a graceful shutdown for long.
            self._server.should_exit = True
            self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._tmp is not None:
            self._tmp.cleanup()
        self._server = self._thread = self._tmp = None

    def __enter__(self) -> "ArmFake":
        return self.start() if not self.url else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # Convenience passthroughs for in-process tests.
    def reset(self) -> None:
        self.state.reset()

    def add_fault(self, **kw: Any) -> Fault:
        return self.state.add_fault(**kw)

    def clear_faults(self) -> None:
        self.state.clear_faults()

    def remove_fault(self, fault_id: str) -> None:
        self.state.remove_fault(fault_id)

    def settings(self, **kw: Any) -> None:
        self.state.settings(**kw)

    def dump(self) -> list[dict]:
        return self.state.dump()

    def find(self, tag: str | None = None, value: str | None = None, type: str | None = None) -> list[dict]:
        return self.state.find(tag, value, type)

    @property
    def requests(self) -> list[tuple[str, str, int]]:
        with self.state.lock:
            return list(self.state.requests)

    def credential(self) -> FakeCredential:
        return FakeCredential()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the onebox ARM fake (HTTPS).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument("--ca-out", default=None, help="write the CA certificate (PEM) here")
    parser.add_argument("--subscription", default=SUBSCRIPTION_ID)
    args = parser.parse_args(argv)
    fake = ArmFake(args.subscription).start(args.host, args.port, args.ca_out)
    print(f"ARM fake listening on {fake.url}", flush=True)
    print(f"  subscription: {fake.subscription_id}", flush=True)
    print(f"  CA bundle:    {fake.ca_path}", flush=True)
    print("  control:      POST /_fake/reset, POST|GET|DELETE /_fake/faults, GET /_fake/resources", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
