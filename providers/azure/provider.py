"""``AzureProvider``: one onebox instance is one Linux VM and the few ARM resources it needs.

Built on azure-mgmt-compute, azure-mgmt-network, azure-mgmt-resource and
azure-identity (all imported lazily, so onebox runs without them when Azure is
not configured). Every call goes to Azure Resource Manager; ``AzureConfig.base_url``
points the clients somewhere else (the local ARM fake in ``tests/fakes/arm.py``)
and ``ca_bundle`` makes them trust that endpoint's CA.

What one instance is made of, all in the configured resource group, all named
from the instance id (``onebox-<id>``, ``-nic``, ``-ip``, ``-nsg``, ``-osdisk``)
and tagged ``managed-by=onebox``, ``onebox-instance-id``, ``onebox-owner``:

* a network security group allowing SSH (TCP 22) from ``ssh_cidr``;
* a Standard, static public IP (its own ``deleteOption: Delete``);
* a NIC in the shared subnet with that IP and NSG;
* the VM: Linux, password login disabled, the user's key and onebox's own
  (``admin_ssh_public_key``) in ``/home/<user>/.ssh/authorized_keys`` (Azure
  takes ssh-rsa and ssh-ed25519 keys only, and reserves some user names: both
  refused before anything is created), a managed OS disk of ``disk_gb`` (at
  least 30 GB, the marketplace images' size; the OS disk is tagged once the VM
  exists, as ARM does not copy VM tags to it), ``deleteOption: Delete`` on NIC
  and OS disk. Started from a snapshot, the OS disk is first copied from the
  snapshot (``createOption: Copy``) and attached (``createOption: Attach``, which
  Azure allows only without ``osProfile``); once it is provisioned the
  VMAccessForLinux extension creates ``ssh_user`` if needed and authorizes the
  user's key and onebox's ``admin_ssh_public_key``.

Shared, created once per region and never deleted by onebox: the resource group
(tagged ``managed-by=onebox``) and a virtual network ``<vnet_name>-<region>``
with one subnet (tagged ``managed-by=onebox``, ``onebox-shared=true``).
``list_managed`` leaves the shared network out: it carries no instance or
snapshot id, and is never garbage.

Creation resumes: each step reads its resource by name first and only PUTs what
is missing or unfinished (ARM PUTs are idempotent anyway). A VM found by name or
by tag means the create already happened. Long-running operations use the SDK's
``begin_*`` pollers with ``polling_interval``; ``create_instance`` waits for the
VM's operation (at most ``wait_timeout``; past that it returns the VM as
PENDING and ``wait_running`` follows it) so provisioning failures such as
``AllocationFailed`` surface as typed errors at once.

Deletion does not trust ``deleteOption``: after the VM is gone it deletes what is
left of the NIC, public IP, NSG and disks, and returns only when neither a lookup
by name nor the resource list filtered by ``onebox-instance-id`` finds anything
(snapshots excepted: they outlive their instance).

Errors: one mapping, ``map_error``, from ``azure.core`` exceptions (including
failed LROs, whose error arrives in the operation status) to the typed errors of
``providers.base``. azure-core retries 429/5xx itself ``retry_total`` times
(honouring ``Retry-After``) before we see them.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from providers import prices
from providers.azure.config import AzureConfig
from providers.azure.errors import map_code, map_error
from providers.azure.mapping import (
    ACCESS_EXTENSION,
    AZURE_RESERVED_USERS,
    AZURE_SSH_KEY_TYPES,
    DELETE_ORDER,
    DISK_TYPE,
    KINDS,
    MIN_OS_DISK_GB,
    NATIVE_IMAGE_PATTERN,
    NIC_TYPE,
    NSG_TYPE,
    PIP_TYPE,
    SHARED_TAG,
    SNAPSHOT_STATUS_MAP,
    SNAPSHOT_TYPE,
    STATUS_MAP,
    VM_TYPE,
    Names,
    check_login,
    computer_name,
    image_reference,
    login_keys,
    parse_id,
    plain,
    resource_names,
    restriction_values,
    snapshot_name,
)
from providers.base import (
    IMAGE_ALIASES,
    INSTANCE_ID_TAG,
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
    OWNER_TAG,
    SNAPSHOT_ID_TAG,
    Catalog,
    InstanceInfo,
    InstanceRef,
    InstanceSpec,
    InstanceState,
    InvalidRequest,
    MachineType,
    ManagedResource,
    NotFound,
    ProviderError,
    Region,
    SnapshotInfo,
    SnapshotRef,
    SnapshotSpec,
    SnapshotState,
    managed_tags,
)


log = logging.getLogger(__name__)


class StaticTokenCredential:
    """A TokenCredential handing out one fixed token: for the local ARM fake, never for Azure."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)

    def close(self) -> None:
        pass



class AzureProvider:
    """The ``Provider`` for Azure."""

    name = "azure"

    def __init__(self, config: AzureConfig, credential: Any = None) -> None:
        if not config.locations:
            raise ValueError("AzureConfig.locations must name at least one region")
        self.config = config
        self._credential = credential
        self._lock = threading.Lock()
        self._clients: tuple[Any, Any, Any] | None = None
        self._catalog: tuple[float, Catalog] | None = None

    # ------------------------------------------------------------ clients
    def _sdk(self) -> tuple[Any, Any, Any]:
        """(compute, network, resource) clients, built once."""
        with self._lock:
            if self._clients is None:
                from azure.mgmt.compute import ComputeManagementClient
                from azure.mgmt.network import NetworkManagementClient

                try:
                    from azure.mgmt.resource.resources import ResourceManagementClient
                except ImportError:  # azure-mgmt-resource < 24
                    from azure.mgmt.resource import ResourceManagementClient  # type: ignore[no-redef]

                if self._credential is None and self.config.static_token:
                    self._credential = StaticTokenCredential(self.config.static_token)
                if self._credential is None:
                    from azure.identity import DefaultAzureCredential

                    self._credential = DefaultAzureCredential()
                cfg = self.config
                kwargs: dict[str, Any] = {
                    "credential_scopes": [cfg.credential_scope],
                    "polling_interval": cfg.polling_interval,
                    "retry_total": cfg.retry_total,
                    "retry_backoff_factor": cfg.retry_backoff_factor,
                    "retry_backoff_max": cfg.retry_backoff_max,
                    "connection_timeout": cfg.request_timeout,
                    "read_timeout": cfg.request_timeout,
                }
                if cfg.base_url:
                    kwargs["base_url"] = cfg.base_url.rstrip("/")
                if cfg.ca_bundle:
                    kwargs["connection_verify"] = cfg.ca_bundle
                sub = cfg.subscription_id
                self._clients = (
                    ComputeManagementClient(self._credential, sub, **kwargs),
                    NetworkManagementClient(self._credential, sub, **kwargs),
                    ResourceManagementClient(self._credential, sub, **kwargs),
                )
            return self._clients

    @property
    def _compute(self) -> Any:
        return self._sdk()[0]

    @property
    def _network(self) -> Any:
        return self._sdk()[1]

    @property
    def _resources(self) -> Any:
        return self._sdk()[2]

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, None
        for client in clients or ():
            try:
                client.close()
            except Exception:  # pragma: no cover - best effort
                pass

    # ------------------------------------------------------------ plumbing
    @contextmanager
    def _azure(self, action: str) -> Iterator[None]:
        """Map any Azure SDK error raised inside to a ProviderError about `action`."""
        from azure.core.exceptions import AzureError

        try:
            yield
        except ProviderError:
            raise
        except AzureError as exc:
            raise map_error(exc, action) from exc

    def _wait(self, poller: Any, action: str, *, may_time_out: bool = False, timeout: float | None = None) -> Any:
        """The LRO's result. Still running after ``timeout`` (default wait_timeout): None if may_time_out,
        else a retryable error."""
        timeout = self.config.wait_timeout if timeout is None else timeout
        with self._azure(action):
            result = poller.result(timeout=timeout)
            if not poller.done():
                if may_time_out:
                    return None
                raise ProviderError(f"Azure did not finish to {action} within {timeout:.0f}s.",
                                    retryable=True, code="timeout")
            return result

    def _maybe(self, fn: Callable[[], Any], action: str) -> Any:
        """fn()'s result, or None when ARM says the resource (or its group) does not exist."""
        from azure.core.exceptions import ResourceNotFoundError

        with self._azure(action):
            try:
                return fn()
            except ResourceNotFoundError:
                return None

    def _ensure(self, get: Callable[[], Any], begin: Callable[[], Any], action: str) -> Any:
        """The resource if it exists and finished provisioning; otherwise (re-)PUT it and wait."""
        existing = self._maybe(get, action)
        if existing is not None and plain(existing.provisioning_state).lower() == "succeeded":
            return existing
        with self._azure(action):
            poller = begin()
        return self._wait(poller, action)

    def _region(self, region: str) -> str:
        loc = region.replace(" ", "").lower()
        if loc not in [x.lower() for x in self.config.locations]:
            raise InvalidRequest(f"Region {region!r} is not offered; choose one of {', '.join(self.config.locations)}.")
        return loc

    @property
    def _rg(self) -> str:
        return self.config.resource_group

    # ------------------------------------------------------------ catalog
    def catalog(self) -> Catalog:
        with self._lock:
            cached = self._catalog
        if cached is not None and time.monotonic() - cached[0] < self.config.catalog_ttl:
            return cached[1]
        regions: dict[str, Region] = {}
        allowed = {m.lower() for m in self.config.machine_types} if self.config.machine_types else None
        for loc in (x.lower() for x in self.config.locations):
            with self._azure(f"list the VM sizes of {loc}"):
                skus = list(self._compute.resource_skus.list(filter=f"location eq '{loc}'"))
            types: dict[str, MachineType] = {}
            zones: set[str] = set()
            for sku in skus:
                if plain(sku.resource_type).lower() != "virtualmachines" or not sku.name:
                    continue
                if allowed is not None and sku.name.lower() not in allowed:
                    continue
                if any(plain(r.type).lower() == "location" and loc in [v.lower() for v in restriction_values(r)]
                       for r in (sku.restrictions or [])):
                    continue  # NotAvailableForSubscription here
                caps = {plain(c.name): plain(c.value) for c in (sku.capabilities or [])}
                try:
                    vcpus = int(caps.get("vCPUs", "0"))
                    memory = float(caps.get("MemoryGB", "0"))
                except ValueError:
                    continue
                try:
                    gpu_count = int(caps.get("GPUs", "0"))
                except ValueError:
                    gpu_count = 0
                types[sku.name] = MachineType(sku.name, vcpus, memory, gpu_count=gpu_count,
                                              gpu_type=prices.azure_gpu_type(sku.name, gpu_count),
                                              hourly_usd=prices.hourly_usd("azure", sku.name))
                for info in sku.location_info or []:
                    if plain(info.location).lower() == loc:
                        zones.update(info.zones or [])
            if types:
                regions[loc] = Region(loc, tuple(sorted(zones)), dict(sorted(types.items())))
        catalog = Catalog(regions=regions, images=IMAGE_ALIASES, native_image_pattern=NATIVE_IMAGE_PATTERN,
                          ssh_key_types=AZURE_SSH_KEY_TYPES, reserved_ssh_users=AZURE_RESERVED_USERS)
        with self._lock:
            self._catalog = (time.monotonic(), catalog)
        return catalog

    # ------------------------------------------------------------ shared infrastructure
    # Neither the group nor the subnet is cached between calls: both are one cheap read, and a cached id
    # would turn an out-of-band deletion into permanent InvalidResourceReference errors.
    def _ensure_group(self) -> None:
        rg = self._rg
        with self._azure(f"create the resource group {rg}"):
            if not self._resources.resource_groups.check_existence(rg):
                self._resources.resource_groups.create_or_update(
                    rg, {"location": self.config.locations[0].lower(), "tags": {MANAGED_BY_TAG: MANAGED_BY_VALUE}})

    def _ensure_subnet(self, region: str) -> str:
        cfg, net = self.config, self._network
        vnet_name = f"{cfg.vnet_name}-{region}"
        action = f"create the virtual network {vnet_name}"
        subnet = self._maybe(lambda: net.subnets.get(self._rg, vnet_name, cfg.subnet_name), action)
        if subnet is None or plain(subnet.provisioning_state).lower() != "succeeded":
            vnet = self._maybe(lambda: net.virtual_networks.get(self._rg, vnet_name), action)
            if vnet is None:
                body = {
                    "location": region,
                    "tags": {MANAGED_BY_TAG: MANAGED_BY_VALUE, SHARED_TAG: "true"},
                    "properties": {
                        "addressSpace": {"addressPrefixes": [cfg.vnet_address_space]},
                        "subnets": [{"name": cfg.subnet_name, "properties": {"addressPrefix": cfg.subnet_prefix}}],
                    },
                }
                with self._azure(action):
                    poller = net.virtual_networks.begin_create_or_update(self._rg, vnet_name, body)
                self._wait(poller, action)
            else:
                with self._azure(action):
                    poller = net.subnets.begin_create_or_update(
                        self._rg, vnet_name, cfg.subnet_name, {"properties": {"addressPrefix": cfg.subnet_prefix}})
                self._wait(poller, action)
            subnet = self._maybe(lambda: net.subnets.get(self._rg, vnet_name, cfg.subnet_name), action)
            if subnet is None:
                raise ProviderError(f"Azure could not {action}: the subnet is missing after creation.",
                                    retryable=True)
        return subnet.id

    # ------------------------------------------------------------ lookups
    def _tagged(self, tag: str, value: str) -> list[Any]:
        """Resources in the group carrying tag=value (every page)."""
        flt = f"tagName eq '{tag}' and tagValue eq '{value.replace(chr(39), chr(39) * 2)}'"
        return self._maybe(
            lambda: list(self._resources.resources.list_by_resource_group(self._rg, filter=flt,
                                                                          expand="provisioningState")),
            "list onebox's resources") or []

    def _get_vm(self, name: str, rg: str | None = None, expand: str | None = None) -> Any:
        kwargs = {"expand": expand} if expand else {}
        return self._maybe(lambda: self._compute.virtual_machines.get(rg or self._rg, name, **kwargs),
                           f"read the virtual machine {name}")

    def _find_vm(self, ref: InstanceRef, expand: str | None = None) -> Any:
        """The instance's VM: by recorded id, by deterministic name, then by tag; None if there is none."""
        if ref.cloud_id:
            try:
                rg, _, name = parse_id(ref.cloud_id)
            except InvalidRequest:
                rg = name = None
            if name:
                vm = self._get_vm(name, rg, expand)
                if vm is not None:
                    return vm
        vm = self._get_vm(resource_names(ref.instance_id).vm, expand=expand)
        if vm is not None:
            return vm
        for res in self._tagged(INSTANCE_ID_TAG, ref.instance_id):
            if plain(res.type).lower() == VM_TYPE:
                rg, _, name = parse_id(res.id)
                return self._get_vm(name, rg, expand)
        return None

    # ------------------------------------------------------------ instances
    def create_instance(self, spec: InstanceSpec) -> InstanceInfo:
        region = self._region(spec.region)
        names = resource_names(spec.instance_id)
        ref = InstanceRef(spec.instance_id, region, spec.zone)
        vm = self._find_vm(ref)
        if vm is not None:  # created before (maybe by a worker that died): resume, never duplicate
            vm = self._get_vm(vm.name, parse_id(vm.id)[0], "instanceView") or vm
            info = self._describe(vm, spec.instance_id, raise_failed=True)
            self._tag_vm_disk(vm)
            if spec.snapshot is not None:
                if plain(vm.provisioning_state).lower() != "succeeded":
                    raise ProviderError(f"Instance {spec.instance_id} is still being provisioned; its keys are "
                                        "authorized once it is.", retryable=True)
                self._authorize_keys(vm, spec)
            return info

        check_login(spec)
        image = None if spec.snapshot is not None else image_reference(spec.image or self.config.default_image)
        tags = self._tags(spec)
        zones = [spec.zone] if spec.zone else None
        self._ensure_group()
        subnet_id = self._ensure_subnet(region)
        net, compute, rg = self._network, self._compute, self._rg

        nsg_body = {
            "location": region, "tags": tags,
            "properties": {"securityRules": [{
                "name": "allow-ssh",
                "properties": {"priority": 1000, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
                               "sourceAddressPrefix": self.config.ssh_cidr, "sourcePortRange": "*",
                               "destinationAddressPrefix": "*", "destinationPortRange": "22",
                               "description": "SSH for onebox"},
            }]},
        }
        nsg = self._ensure(lambda: net.network_security_groups.get(rg, names.nsg),
                           lambda: net.network_security_groups.begin_create_or_update(rg, names.nsg, nsg_body),
                           "create the network security group")

        ip_body: dict[str, Any] = {
            "location": region, "tags": tags, "sku": {"name": "Standard", "tier": "Regional"},
            "properties": {"publicIPAllocationMethod": "Static", "publicIPAddressVersion": "IPv4",
                           "deleteOption": "Delete"},
        }
        if zones:
            ip_body["zones"] = zones
        pip = self._ensure(lambda: net.public_ip_addresses.get(rg, names.ip),
                           lambda: net.public_ip_addresses.begin_create_or_update(rg, names.ip, ip_body),
                           "create the public IP address")

        nic_body = {
            "location": region, "tags": tags,
            "properties": {
                "ipConfigurations": [{"name": "ipconfig1", "properties": {
                    "subnet": {"id": subnet_id}, "privateIPAllocationMethod": "Dynamic",
                    "publicIPAddress": {"id": pip.id}, "primary": True}}],
                "networkSecurityGroup": {"id": nsg.id},
            },
        }
        nic = self._ensure(lambda: net.network_interfaces.get(rg, names.nic),
                           lambda: net.network_interfaces.begin_create_or_update(rg, names.nic, nic_body),
                           "create the network interface")

        disk_gb = max(spec.disk_gb, MIN_OS_DISK_GB)
        if spec.snapshot is not None:
            storage = self._os_disk_from_snapshot(spec, region, names, tags, zones, disk_gb)
            os_profile = None
        else:
            # An unattached OS disk under our name is a leftover of an earlier attempt whose VM went away
            # (Azure would refuse to create a second one with ConflictingUserInput): remove it first.
            stale = self._maybe(lambda: compute.disks.get(rg, names.osdisk), "read the OS disk")
            if stale is not None and not stale.managed_by:
                self._delete_id(stale.id)
            storage = {
                "imageReference": image,
                "osDisk": {"name": names.osdisk, "createOption": "FromImage", "caching": "ReadWrite",
                           "diskSizeGB": disk_gb, "managedDisk": {"storageAccountType": self.config.os_disk_type},
                           "deleteOption": "Delete"},
            }
            user = spec.ssh_user
            os_profile = {
                "computerName": computer_name(spec, names.vm),
                "adminUsername": user,
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {"publicKeys": [{"path": f"/home/{user}/.ssh/authorized_keys", "keyData": key}
                                           for key in login_keys(spec)]},
                    "provisionVMAgent": True,
                },
            }
        vm_body: dict[str, Any] = {
            "location": region, "tags": tags,
            "properties": {
                "hardwareProfile": {"vmSize": spec.machine_type},
                "storageProfile": storage,
                "networkProfile": {"networkInterfaces": [
                    {"id": nic.id, "properties": {"primary": True, "deleteOption": "Delete"}}]},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
            },
        }
        if os_profile is not None:
            vm_body["properties"]["osProfile"] = os_profile
        if zones:
            vm_body["zones"] = zones
        with self._azure("create the virtual machine"):
            poller = compute.virtual_machines.begin_create_or_update(rg, names.vm, vm_body)
        # From a snapshot the keys are authorized after provisioning (below), so that VM must be waited for;
        # from an image, wait_running can follow a VM that is still provisioning.
        if self._wait(poller, "create the virtual machine", may_time_out=spec.snapshot is None) is None:
            log.info("VM %s still provisioning after %ss; wait_running follows it", names.vm,
                     self.config.wait_timeout)
        vm = self._get_vm(names.vm, expand="instanceView")
        if vm is None:
            raise ProviderError("Azure accepted the virtual machine but does not show it yet.", retryable=True)
        info = self._describe(vm, spec.instance_id, raise_failed=True)
        self._tag_vm_disk(vm)
        if spec.snapshot is not None:
            self._authorize_keys(vm, spec)
        return info

    def _authorize_keys(self, vm: Any, spec: InstanceSpec) -> None:
        """Authorize the spec's keys for ssh_user on a VM whose OS disk came from a snapshot.

        Azure refuses osProfile when the OS disk is attached, so the disk only knows the users and keys of
        the snapshotted instance. The VMAccessForLinux extension (Azure's documented way to reset SSH access)
        creates ssh_user if needed and adds each key; one run per key, as it takes one key at a time. The
        extension's forceUpdateTag records the last key applied, so a resumed create skips what was done.
        """
        rg = parse_id(vm.id)[0]
        keys = login_keys(spec)
        tags = [hashlib.sha256(f"{spec.ssh_user}\n{key}".encode()).hexdigest()[:16] for key in keys]
        action = "authorize SSH keys on the virtual machine"
        current = self._maybe(lambda: self._compute.virtual_machine_extensions.get(rg, vm.name, ACCESS_EXTENSION),
                              action)
        done = 0
        if current is not None and plain(current.provisioning_state).lower() == "succeeded":
            applied = plain(current.force_update_tag)
            done = tags.index(applied) + 1 if applied in tags else 0
        for key, tag in list(zip(keys, tags))[done:]:
            body = {
                "location": plain(vm.location).lower(),
                "properties": {
                    "publisher": "Microsoft.OSTCExtensions", "type": "VMAccessForLinux",
                    "typeHandlerVersion": "1.5", "autoUpgradeMinorVersion": True, "forceUpdateTag": tag,
                    "protectedSettings": {"username": spec.ssh_user, "ssh_key": key},
                },
            }
            with self._azure(action):
                poller = self._compute.virtual_machine_extensions.begin_create_or_update(
                    rg, vm.name, ACCESS_EXTENSION, body)
            self._wait(poller, action)

    def _tags(self, spec: InstanceSpec) -> dict[str, str]:
        """Our tags plus the user's labels that Azure accepts as tags (tag names are case-insensitive)."""
        ours = managed_tags(spec.instance_id, spec.owner)
        taken = {k.lower() for k in ours}
        tags: dict[str, str] = {}
        for key, value in (spec.labels or {}).items():
            if (len(tags) < 40 and key and key.lower() not in taken and len(key) <= 512 and len(str(value)) <= 256
                    and not any(c in '<>%&\\?/' or ord(c) < 32 for c in key)):
                tags[key] = str(value)
                taken.add(key.lower())
        tags.update(ours)
        return tags

    def _tag_vm_disk(self, vm: Any) -> None:
        """ARM does not copy VM tags to the OS disk it makes from an image: copy ours, so tag lookups find it.

        Done once the VM is provisioned (at create, on resume and in wait_running), so a worker that died
        in between leaves no untagged disk behind for long; delete_instance finds it by name regardless.
        """
        if plain(vm.provisioning_state).lower() != "succeeded":
            return
        tags = {k: v for k, v in (vm.tags or {}).items() if k in (MANAGED_BY_TAG, INSTANCE_ID_TAG, OWNER_TAG)}
        os_disk = vm.storage_profile.os_disk if vm.storage_profile else None
        if INSTANCE_ID_TAG not in tags or os_disk is None or os_disk.managed_disk is None:
            return
        rg, _, name = parse_id(os_disk.managed_disk.id)
        disk = self._maybe(lambda: self._compute.disks.get(rg, name), "read the OS disk")
        if disk is None or (disk.tags or {}).get(INSTANCE_ID_TAG) == tags[INSTANCE_ID_TAG]:
            return
        with self._azure("tag the OS disk"):
            poller = self._compute.disks.begin_update(rg, name, {"tags": {**(disk.tags or {}), **tags}})
        self._wait(poller, "tag the OS disk")

    def _os_disk_from_snapshot(self, spec: InstanceSpec, region: str, names: Names, tags: dict[str, str],
                               zones: list[str] | None, disk_gb: int) -> dict[str, Any]:
        snap = self._find_snapshot(spec.snapshot)  # type: ignore[arg-type]
        if snap is None:
            raise NotFound(f"Snapshot {spec.snapshot.snapshot_id} does not exist (any more).")  # type: ignore[union-attr]
        if plain(snap.location).lower() != region:
            raise InvalidRequest(f"Snapshot {snap.name} is in {snap.location}; start the instance in that region.")
        if plain(snap.provisioning_state).lower() != "succeeded":
            raise ProviderError(f"Snapshot {snap.name} is not ready yet.", retryable=True)
        body: dict[str, Any] = {
            "location": region, "tags": tags, "sku": {"name": self.config.os_disk_type},
            "properties": {
                "creationData": {"createOption": "Copy", "sourceResourceId": snap.id},
                "osType": "Linux",
                "diskSizeGB": max(disk_gb, int(snap.disk_size_gb or 0)),
            },
        }
        if snap.hyper_v_generation:
            body["properties"]["hyperVGeneration"] = plain(snap.hyper_v_generation)
        if zones:
            body["zones"] = zones
        compute, rg = self._compute, self._rg
        disk = self._ensure(lambda: compute.disks.get(rg, names.osdisk),
                            lambda: compute.disks.begin_create_or_update(rg, names.osdisk, body),
                            "create the OS disk from the snapshot")
        return {"osDisk": {"name": disk.name, "osType": "Linux", "createOption": "Attach", "caching": "ReadWrite",
                           "managedDisk": {"id": disk.id}, "deleteOption": "Delete"}}

    def _describe(self, vm: Any, instance_id: str, raise_failed: bool = False) -> InstanceInfo:
        """InstanceInfo for a VM read with $expand=instanceView (addresses read from NIC and public IP)."""
        statuses = [plain(s.code).lower() for s in ((vm.instance_view.statuses if vm.instance_view else None) or [])]
        provisioning = plain(vm.provisioning_state).lower()
        prov_code = next((c for c in statuses if c.startswith("provisioningstate/")), f"provisioningstate/{provisioning}")
        power_code = next((c for c in statuses if c.startswith("powerstate/")), None)
        if prov_code.startswith("provisioningstate/failed") or provisioning == "failed":
            if raise_failed:
                raise self._provisioning_error(vm)
            state = InstanceState.UNKNOWN
        elif prov_code == "provisioningstate/deleting" or provisioning == "deleting":
            state = InstanceState.STOPPING
        elif power_code is not None:
            state = STATUS_MAP.get(power_code, InstanceState.UNKNOWN)
        else:
            state = STATUS_MAP.get(prov_code, InstanceState.PENDING)
        private_ip = public_ip = None
        nics = (vm.network_profile.network_interfaces if vm.network_profile else None) or []
        primary = next((n for n in nics if n.primary), nics[0] if nics else None)
        if primary is not None and state not in (InstanceState.STOPPING,):
            private_ip, public_ip = self._addresses(primary.id)
        extra = {"resource_group": parse_id(vm.id)[0], "provisioning_state": plain(vm.provisioning_state),
                 "vm_size": plain(vm.hardware_profile.vm_size) if vm.hardware_profile else ""}
        if power_code:
            extra["power_state"] = power_code.split("/", 1)[1]
        zones = list(vm.zones or [])
        return InstanceInfo(
            instance_id=instance_id,
            cloud_id=vm.id, state=state, region=plain(vm.location).lower(), zone=zones[0] if zones else None,
            public_ip=public_ip, private_ip=private_ip, extra=extra,
        )

    def _addresses(self, nic_id: str) -> tuple[str | None, str | None]:
        rg, _, name = parse_id(nic_id)
        nic = self._maybe(lambda: self._network.network_interfaces.get(rg, name), "read the network interface")
        if nic is None:
            return None, None
        configs = nic.ip_configurations or []
        ipc = next((c for c in configs if c.primary), configs[0] if configs else None)
        if ipc is None:
            return None, None
        public = None
        if ipc.public_ip_address is not None and ipc.public_ip_address.id:
            prg, _, pname = parse_id(ipc.public_ip_address.id)
            pip = self._maybe(lambda: self._network.public_ip_addresses.get(prg, pname), "read the public IP address")
            public = pip.ip_address if pip is not None else None
        return ipc.private_ip_address, public

    def _provisioning_error(self, vm: Any) -> ProviderError:
        """The typed error behind a VM whose provisioning failed, from its instance view."""
        statuses = (vm.instance_view.statuses if vm.instance_view else None) or []
        for status in statuses:
            code = plain(status.code)
            if code.lower().startswith("provisioningstate/failed"):
                reason = code.split("/", 2)[2] if code.count("/") >= 2 else None
                return map_code(reason, status.message or status.display_status or "provisioning failed",
                                action="create the virtual machine")
        return ProviderError("Azure could not create the virtual machine: provisioning failed.", retryable=False)

    def wait_running(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        deadline = time.monotonic() + timeout
        info: InstanceInfo | None = None
        while True:
            vm = self._find_vm(ref, expand="instanceView")
            if vm is None:
                raise NotFound(f"Instance {ref.instance_id} no longer exists in Azure.")
            info = self._describe(vm, ref.instance_id, raise_failed=True)
            if info.state == InstanceState.RUNNING and info.public_ip:
                self._tag_vm_disk(vm)
                return info
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderError(f"Instance {ref.instance_id} is not running after {timeout:.0f}s "
                                    f"(state {info.state.value}).", retryable=True)
            time.sleep(min(max(self.config.polling_interval, 0.05), remaining))

    def get_instance(self, ref: InstanceRef) -> InstanceInfo:
        vm = self._find_vm(ref, expand="instanceView")
        if vm is None:
            raise NotFound(f"Instance {ref.instance_id} does not exist in Azure.")
        return self._describe(vm, ref.instance_id)

    # ------------------------------------------------------------ deletion
    def _deleter(self, type_: str) -> Callable[[str, str], Any] | None:
        compute, net = self._compute, self._network
        return {
            VM_TYPE: compute.virtual_machines.begin_delete,
            DISK_TYPE: compute.disks.begin_delete,
            SNAPSHOT_TYPE: compute.snapshots.begin_delete,
            NIC_TYPE: net.network_interfaces.begin_delete,
            PIP_TYPE: net.public_ip_addresses.begin_delete,
            NSG_TYPE: net.network_security_groups.begin_delete,
        }.get(type_)

    def _delete_id(self, resource_id: str) -> None:
        """Delete one resource and wait; gone already is fine."""
        from azure.core.exceptions import ResourceNotFoundError

        rg, type_, name = parse_id(resource_id)
        delete = self._deleter(type_)
        if delete is None:
            raise ProviderError(f"Resource {resource_id} is tagged for onebox but onebox does not know how to delete "
                                f"a {type_}; delete it by hand.", retryable=False)
        action = f"delete {KINDS.get(type_, type_)} {name}"
        with self._azure(action):
            try:
                poller = delete(rg, name)
            except ResourceNotFoundError:
                return
        self._wait(poller, action)

    def _instance_parts(self, ref: InstanceRef) -> dict[str, str]:
        """Every resource of the instance still in ARM (snapshots excluded), as lower-case id -> id."""
        names = resource_names(ref.instance_id)
        found: dict[str, str] = {}

        def add(resource_id: str | None) -> None:
            if resource_id:
                found.setdefault(resource_id.lower(), resource_id)

        for res in self._tagged(INSTANCE_ID_TAG, ref.instance_id):
            type_ = plain(res.type).lower()
            if SNAPSHOT_ID_TAG in (res.tags or {}) or type_ == SNAPSHOT_TYPE or type_.count("/") != 1:
                continue  # snapshots outlive the instance; nested resources (extensions) go with their parent
            add(res.id)
        compute, net, rg = self._compute, self._network, self._rg
        vms = [self._find_vm(ref)]
        for vm in vms:
            if vm is None:
                continue
            add(vm.id)
            for nic_ref in (vm.network_profile.network_interfaces if vm.network_profile else None) or []:
                add(nic_ref.id)
            os_disk = vm.storage_profile.os_disk if vm.storage_profile else None
            if os_disk is not None and os_disk.managed_disk is not None:
                add(os_disk.managed_disk.id)
        for getter, what in ((lambda: net.network_interfaces.get(rg, names.nic), "read the network interface"),
                             (lambda: net.public_ip_addresses.get(rg, names.ip), "read the public IP address"),
                             (lambda: net.network_security_groups.get(rg, names.nsg), "read the security group"),
                             (lambda: compute.disks.get(rg, names.osdisk), "read the OS disk")):
            res = self._maybe(getter, what)
            if res is not None:
                add(res.id)
        # Public IPs hanging off our NICs belong to the instance too, even if untagged.
        for key, rid in list(found.items()):
            if parse_id(rid)[1] == NIC_TYPE:
                nrg, _, nname = parse_id(rid)
                nic = self._maybe(lambda: net.network_interfaces.get(nrg, nname), "read the network interface")
                for ipc in (nic.ip_configurations if nic is not None else None) or []:
                    if ipc.public_ip_address is not None:
                        add(ipc.public_ip_address.id)
        return found

    def delete_instance(self, ref: InstanceRef) -> None:
        deadline = time.monotonic() + self.config.wait_timeout
        while True:
            parts = self._instance_parts(ref)
            if not parts:
                return
            if time.monotonic() > deadline:
                raise ProviderError(f"Azure still lists {len(parts)} resource(s) of instance {ref.instance_id} after "
                                    f"{self.config.wait_timeout:.0f}s: {', '.join(sorted(parts.values()))}.",
                                    retryable=True)
            for rid in sorted(parts.values(), key=lambda i: (DELETE_ORDER.get(parse_id(i)[1], 9), i.lower())):
                self._delete_id(rid)
            # Re-read everything: the VM's deleteOption cascade and ARM's listing may lag behind.
            if self.config.polling_interval:
                time.sleep(min(self.config.polling_interval, 5.0))

    # ------------------------------------------------------------ power
    def _power(self, ref: InstanceRef, timeout: float, what: str,
               decide: Callable[[str, bool], tuple[str | None, bool]]) -> InstanceInfo:
        """Drive the VM with start/deallocate/restart operations until ``decide`` says it is done.

        ``decide(power, acted)`` looks at the VM's power state as just read (``running``,
        ``deallocated``, ``deallocating`` …; "" while none is reported) and answers (the operation
        to run now or None, done?). Each operation is awaited, then the VM read again, so a call
        repeated after a crash picks up wherever Azure is.
        """
        deadline = time.monotonic() + timeout
        compute = self._compute
        begin = {"deallocate": compute.virtual_machines.begin_deallocate,
                 "start": compute.virtual_machines.begin_start,
                 "restart": compute.virtual_machines.begin_restart}
        acted = False
        vm = self._find_vm(ref, expand="instanceView")
        while True:
            if vm is None or plain(vm.provisioning_state).lower() == "deleting":
                raise NotFound(f"Instance {ref.instance_id} does not exist in Azure (any more); there is nothing "
                               f"to {what}.")
            info = self._describe(vm, ref.instance_id)
            creating = plain(vm.provisioning_state).lower() == "creating"
            operation, done = (None, False) if creating else decide(info.extra.get("power_state", ""), acted)
            if done:
                return info
            rg = parse_id(vm.id)[0]
            if operation is not None:
                action = f"{what} the virtual machine"
                with self._azure(action):
                    poller = begin[operation](rg, vm.name)
                self._wait(poller, action, timeout=max(0.0, deadline - time.monotonic()))
                log.info("azure: %s of VM %s (%s) done", operation, vm.name, ref.instance_id)
                acted = True
            elif time.monotonic() >= deadline:
                raise ProviderError(f"Instance {ref.instance_id} is still {info.state.value} after {timeout:.0f}s; "
                                    "onebox will check again.", retryable=True, code="timeout")
            else:
                time.sleep(min(max(self.config.polling_interval, 0.05), max(0.0, deadline - time.monotonic())))
            vm = self._get_vm(vm.name, rg, "instanceView")

    def stop_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        """Deallocate: the compute is released and billed no more (a power-off would still be billed)."""
        def decide(power: str, acted: bool) -> tuple[str | None, bool]:
            if power == "deallocated":
                return None, True
            return ("deallocate" if power in ("running", "stopped", "starting") else None), False

        return self._power(ref, timeout, "stop", decide)

    def start_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        def decide(power: str, acted: bool) -> tuple[str | None, bool]:
            if power == "running":
                return None, True
            return ("start" if power in ("deallocated", "stopped") else None), False

        return self._running_with_address(ref, timeout, self._power(ref, timeout, "start", decide))

    def reboot_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        def decide(power: str, acted: bool) -> tuple[str | None, bool]:
            if power == "running":
                return (None, True) if acted else ("restart", False)
            return ("start" if power in ("deallocated", "stopped") else None), False  # a start boots it too

        return self._running_with_address(ref, timeout, self._power(ref, timeout, "reboot", decide))

    def _running_with_address(self, ref: InstanceRef, timeout: float, info: InstanceInfo) -> InstanceInfo:
        """``info``, or once its public IP is known: a Dynamic one gets its new address as the VM starts."""
        return info if info.public_ip else self.wait_running(ref, timeout)

    # ------------------------------------------------------------ snapshots
    def _snapshot_location(self, ref: SnapshotRef) -> tuple[str, str]:
        if ref.cloud_id:
            try:
                rg, type_, name = parse_id(ref.cloud_id)
                if type_ == SNAPSHOT_TYPE:
                    return rg, name
            except InvalidRequest:
                pass
        return self._rg, snapshot_name(ref.snapshot_id)

    def _find_snapshot(self, ref: SnapshotRef) -> Any:
        rg, name = self._snapshot_location(ref)
        return self._maybe(lambda: self._compute.snapshots.get(rg, name), f"read snapshot {name}")

    def _snapshot_info(self, snap: Any, snapshot_id: str) -> SnapshotInfo:
        state = SNAPSHOT_STATUS_MAP.get(plain(snap.provisioning_state).lower(), SnapshotState.CREATING)
        return SnapshotInfo(snapshot_id=(snap.tags or {}).get(SNAPSHOT_ID_TAG, snapshot_id), cloud_id=snap.id,
                            state=state, region=plain(snap.location).lower())

    def create_snapshot(self, spec: SnapshotSpec) -> SnapshotInfo:
        name = snapshot_name(spec.snapshot_id)
        compute, rg = self._compute, self._rg
        existing = self._maybe(lambda: compute.snapshots.get(rg, name), f"read snapshot {name}")
        if existing is not None and plain(existing.provisioning_state).lower() == "succeeded":
            return self._snapshot_info(existing, spec.snapshot_id)
        vm = self._find_vm(spec.instance)
        if vm is None:
            raise NotFound(f"Instance {spec.instance.instance_id} does not exist; there is nothing to snapshot.")
        os_disk = vm.storage_profile.os_disk if vm.storage_profile else None
        if os_disk is None or os_disk.managed_disk is None or not os_disk.managed_disk.id:
            raise ProviderError(f"Instance {spec.instance.instance_id} has no managed OS disk to snapshot.",
                                retryable=False)
        self._ensure_group()
        body = {
            "location": plain(vm.location).lower(),
            "tags": {MANAGED_BY_TAG: MANAGED_BY_VALUE, SNAPSHOT_ID_TAG: spec.snapshot_id,
                     INSTANCE_ID_TAG: spec.instance.instance_id, OWNER_TAG: spec.owner},
            "sku": {"name": "Standard_LRS"},
            "properties": {"creationData": {"createOption": "Copy", "sourceResourceId": os_disk.managed_disk.id},
                           "incremental": False},
        }
        action = f"snapshot instance {spec.instance.instance_id}"
        with self._azure(action):
            poller = compute.snapshots.begin_create_or_update(rg, name, body)
        snap = self._wait(poller, action)
        return self._snapshot_info(snap, spec.snapshot_id)

    def get_snapshot(self, ref: SnapshotRef) -> SnapshotInfo:
        snap = self._find_snapshot(ref)
        if snap is None:
            raise NotFound(f"Snapshot {ref.snapshot_id} does not exist in Azure.")
        return self._snapshot_info(snap, ref.snapshot_id)

    def delete_snapshot(self, ref: SnapshotRef) -> None:
        rg, name = self._snapshot_location(ref)
        deadline = time.monotonic() + self.config.wait_timeout
        while True:
            snap = self._find_snapshot(ref)
            if snap is None:
                return
            if time.monotonic() > deadline:
                raise ProviderError(f"Azure still shows snapshot {name} after {self.config.wait_timeout:.0f}s.",
                                    retryable=True)
            self._delete_id(snap.id)

    # ------------------------------------------------------------ garbage collection
    def list_managed(self) -> list[ManagedResource]:
        out: list[ManagedResource] = []
        for res in self._tagged(MANAGED_BY_TAG, MANAGED_BY_VALUE):
            tags = res.tags or {}
            instance_id, snapshot_id = tags.get(INSTANCE_ID_TAG), tags.get(SNAPSHOT_ID_TAG)
            if not instance_id and not snapshot_id:
                continue  # shared infrastructure (the virtual network): never garbage
            type_ = plain(res.type).lower()
            out.append(ManagedResource(
                kind=KINDS.get(type_, type_), cloud_id=res.id, region=plain(res.location).lower(),
                instance_id=instance_id, snapshot_id=snapshot_id,
                state=plain(res.provisioning_state).lower() or None,
            ))
        return out
