"""``GcpProvider``: one Compute Engine VM per onebox instance, through google-cloud-compute (REST).

How the contract in ``providers.base`` maps onto Compute Engine:

* **Names and labels.** The VM is named ``<prefix>-<instance id>`` (a valid GCE
  name; ids that are not get a readable slug plus a hash) and carries the labels
  ``managed-by=onebox``, ``onebox-instance-id``, ``onebox-owner`` and the user's
  labels (sanitized to GCE's label rules). Its boot disk carries the same labels,
  snapshots carry ``onebox-snapshot-id``/``onebox-instance-id``/``onebox-owner``.
  Label values that GCE's rules would alter get a hash suffix so lookups stay
  exact; the original ids are kept in the instance metadata / disk and snapshot
  descriptions.
* **Idempotent create.** ``create_instance`` first looks for a VM labelled with
  the instance id (aggregated list, every zone); if one exists it is resumed.
  Otherwise it inserts with a ``requestId`` derived (uuid5) from the project,
  zone and instance id, so a worker that died right after the insert and is
  replaced gets the same operation back instead of a second VM; a 409 on the
  derived name also resumes. When the API hands back an operation that had
  already *failed* (an earlier attempt spent that requestId), the next id is
  derived from that operation and the insert is tried again, so a later retry
  can still succeed.
* **Operations.** The library's ``ExtendedOperation.result()`` builds its own
  default client (ignoring a custom endpoint), so operations are awaited here
  with the zonal/global operations clients (``wait``, which the server may hold
  up to ~2 minutes, looped until DONE or the deadline), and the operation's
  ``error`` / ``httpErrorStatusCode`` are turned into typed errors.
* **Deletes** find the VM by label (and by its derived name), delete it, wait
  for the operation and then poll ``get`` until it answers 404; leftover
  labelled disks (autoDelete normally takes the boot disk along) are deleted the
  same way.
* **SSH.** ``ssh-keys`` metadata ``user:key``, one NIC with an
  ``ONE_TO_ONE_NAT`` access config, a network tag matched by one ingress rule
  per network (tcp:22 from ``ssh_cidr``) that onebox creates on first use.
  Firewall rules have no labels in Compute v1, so the rule says it is onebox's
  in its description.
* **Errors** go through ``errors.map_error`` / ``errors.operation_error`` (see there).
* **Retries.** Every single API call is retried here on retryable errors, up to
  ``GcpConfig.api_retries`` more times with jittered exponential backoff
  (honouring ``Retry-After``); that is safe because inserts carry a requestId and
  gets/deletes are idempotent. The library's own default retry is switched off
  so there is one policy. When the retries run out the retryable
  ``ProviderError`` reaches the engine, which backs off and calls again.

The google libraries are imported lazily so onebox starts without them.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

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
from providers.gcp.config import GcpConfig
from providers.gcp.errors import is_conflict, map_error, operation_error
from providers.gcp.mapping import (
    DEAD_STATES,
    DISK_PATH_RE,
    IMAGE_FAMILIES,
    INSTANCE_PATH_RE,
    NATIVE_IMAGE_PATTERN,
    NATIVE_IMAGE_RE,
    SNAPSHOT_PATH_RE,
    SNAPSHOT_STATUS_MAP,
    STATUS_MAP,
    gce_name,
    json_description,
    label_value,
    labels_for,
    last_segment,
    machine_type_of,
    path_of,
    region_of,
    request_id,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_REQUEST_ID_HOPS = 8
_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


@dataclass
class _CatalogCache:
    catalog: Catalog
    zone_types: dict[str, frozenset[str]]
    at: float


class GcpProvider:
    """Compute Engine behind the ``Provider`` protocol."""

    name = "gcp"

    def __init__(self, config: GcpConfig, credentials: Any = None) -> None:
        from google.api_core.client_options import ClientOptions
        from google.cloud import compute_v1

        if credentials is None:
            import google.auth

            credentials, _ = google.auth.default(scopes=[_SCOPE])
        self.config = config
        self._c = compute_v1
        options = ClientOptions(api_endpoint=config.api_endpoint) if config.api_endpoint else None
        kw: dict[str, Any] = {"credentials": credentials, "client_options": options, "transport": "rest"}
        self._instances = compute_v1.InstancesClient(**kw)
        self._zone_ops = compute_v1.ZoneOperationsClient(**kw)
        self._global_ops = compute_v1.GlobalOperationsClient(**kw)
        self._disks = compute_v1.DisksClient(**kw)
        self._snapshots = compute_v1.SnapshotsClient(**kw)
        self._images = compute_v1.ImagesClient(**kw)
        self._firewalls = compute_v1.FirewallsClient(**kw)
        self._machine_types = compute_v1.MachineTypesClient(**kw)
        self._zones = compute_v1.ZonesClient(**kw)
        self._lock = threading.Lock()
        self._catalog: _CatalogCache | None = None
        self._firewall_ready: set[str] = set()

    # ------------------------------------------------------------------ plumbing
    def _call(
        self, what: str, fn: Callable[..., T], *, missing: type[ProviderError] = NotFound, timeout: float | None = None
    ) -> T:
        """``fn(retry=None, timeout=…)`` with onebox's retry policy and error mapping."""
        cfg = self.config
        attempt = 0
        while True:
            try:
                return fn(retry=None, timeout=timeout or cfg.request_timeout)
            except Exception as exc:  # noqa: BLE001 - mapped or re-raised by map_error
                err = map_error(exc, what, missing=missing)
                if not err.retryable or attempt >= cfg.api_retries:
                    raise err from exc
                delay = min(cfg.retry_max_delay, cfg.retry_base_delay * (2**attempt)) * random.uniform(0.5, 1.0)
                if err.retry_after is not None:
                    delay = max(delay, min(err.retry_after, cfg.retry_max_delay))
                attempt += 1
                log.info("gcp: %s failed (%s); retry %d/%d in %.1fs", what, err, attempt, cfg.api_retries, delay)
                time.sleep(delay)

    def _get_or_none(self, what: str, fn: Callable[..., T]) -> T | None:
        try:
            return self._call(what, fn)
        except NotFound:
            return None

    def _deadline(self, timeout: float | None = None) -> float:
        return time.monotonic() + (self.config.wait_timeout if timeout is None else timeout)

    def _sleep(self, deadline: float) -> None:
        time.sleep(max(0.0, min(self.config.poll_interval, deadline - time.monotonic())))

    def _wait_operation(self, op: Any, what: str, deadline: float, *, missing: type[ProviderError] = NotFound) -> Any:
        """Block until the operation is DONE; raise the typed error it ended with."""
        DONE = self._c.Operation.Status.DONE
        zone = last_segment(op.zone) if op.zone else None
        while op.status != DONE:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderError(
                    f"{what}: still in progress after {self.config.wait_timeout:.0f}s (operation {op.name})",
                    retryable=True,
                )
            # the server may hold `wait` for up to ~2 minutes; give the HTTP call that long
            timeout = min(remaining, 120.0) + self.config.request_timeout
            name = op.name
            try:
                if zone:
                    op = self._call(
                        what,
                        lambda name=name, **kw: self._zone_ops.wait(
                            project=self.config.project, zone=zone, operation=name, **kw
                        ),
                        timeout=timeout,
                    )
                else:
                    op = self._call(
                        what,
                        lambda name=name, **kw: self._global_ops.wait(
                            project=self.config.project, operation=name, **kw
                        ),
                        timeout=timeout,
                    )
            except NotFound:
                # operations are kept for a limited time; the caller re-reads the resource on retry
                raise ProviderError(f"{what}: operation {name} is no longer known to the API", retryable=True) from None
            if op.status != DONE:
                self._sleep(deadline)
        err = operation_error(op, what, missing=missing)
        if err:
            raise err
        return op

    def _insert_once(
        self,
        what: str,
        base_request_id: str,
        send: Callable[[str], Any],
        exists: Callable[[], bool],
        deadline: float,
        *,
        missing: type[ProviderError] = NotFound,
    ) -> None:
        """Run an insert-like call exactly once per intent, using requestIds.

        ``send(request_id)`` issues the call and returns its Operation. A 409
        means the resource exists: done. An operation handed back already
        finished may belong to an earlier attempt that spent this requestId: if
        it failed (or succeeded for a resource that has since gone), the next
        requestId is derived from it and the call is issued again.
        """
        rid = base_request_id
        last_error: ProviderError | None = None
        for _ in range(_MAX_REQUEST_ID_HOPS):
            try:
                op = self._call(what, lambda rid=rid, **kw: send(rid, **kw), missing=missing)
            except ProviderError as err:
                if is_conflict(err):
                    return
                raise
            if op.status == self._c.Operation.Status.DONE:
                last_error = operation_error(op, what, missing=missing)
                if last_error is None and exists():
                    return
                if last_error is not None and is_conflict(last_error):
                    return
                rid = request_id(rid, str(op.id or op.name))
                continue
            try:
                self._wait_operation(op, what, deadline, missing=missing)
            except ProviderError as err:
                if is_conflict(err):
                    return
                raise
            return
        raise last_error or ProviderError(f"{what}: the API keeps answering finished operations", retryable=True)

    # ------------------------------------------------------------------ catalog
    def catalog(self) -> Catalog:
        with self._lock:
            cache = self._catalog
            if cache and time.monotonic() - cache.at < self.config.catalog_ttl:
                return cache.catalog
        cache = self._load_catalog()
        with self._lock:
            self._catalog = cache
        return cache.catalog

    def _load_catalog(self) -> _CatalogCache:
        cfg = self.config
        project = cfg.project
        zone_region: dict[str, str] = {}
        if cfg.zones:
            for zone in cfg.zones:
                try:
                    z = self._call(
                        f"read zone {zone}", lambda zone=zone, **kw: self._zones.get(project=project, zone=zone, **kw)
                    )
                except (NotFound, InvalidRequest) as err:
                    log.warning("gcp: configured zone %s skipped: %s", zone, err)
                    continue
                zone_region[z.name] = last_segment(z.region) or region_of(z.name)
        else:
            zones = self._call("list zones", lambda **kw: list(self._zones.list(project=project, **kw)))
            for z in zones:
                region = last_segment(z.region) or region_of(z.name)
                if z.status in ("", "UP") and (not cfg.regions or region in cfg.regions):
                    zone_region[z.name] = region
        if not zone_region:
            raise ProviderError("gcp: none of the configured zones exists in the project")
        zone_types: dict[str, frozenset[str]] = {}
        regions: dict[str, dict[str, Any]] = {}
        wanted = set(cfg.machine_types)
        for zone in sorted(zone_region):
            types = self._call(
                f"list machine types in {zone}",
                lambda zone=zone, **kw: list(self._machine_types.list(project=project, zone=zone, **kw)),
            )
            offered = {
                mt.name: machine_type_of(mt)
                for mt in types
                if not wanted or mt.name in wanted
            }
            zone_types[zone] = frozenset(offered)
            entry = regions.setdefault(zone_region[zone], {"zones": [], "types": {}})
            entry["zones"].append(zone)
            entry["types"].update(offered)
        catalog = Catalog(
            regions={
                name: Region(name, tuple(sorted(e["zones"])), dict(sorted(e["types"].items())))
                for name, e in sorted(regions.items())
                if e["types"]
            },
            native_image_pattern=NATIVE_IMAGE_PATTERN,
        )
        return _CatalogCache(catalog, zone_types, time.monotonic())

    def _choose_zone(self, spec: InstanceSpec) -> str:
        catalog = self.catalog()
        region = catalog.regions.get(spec.region)
        if region is None:
            raise InvalidRequest(
                f"region {spec.region!r} is not offered on GCP (offered: {', '.join(catalog.regions)})"
            )
        if spec.machine_type not in region.machine_types:
            raise InvalidRequest(f"machine type {spec.machine_type!r} is not offered in {spec.region}")
        assert self._catalog is not None
        zone_types = self._catalog.zone_types
        if spec.zone:
            if spec.zone not in region.zones:
                raise InvalidRequest(f"zone {spec.zone!r} is not offered in region {spec.region}")
            if spec.machine_type not in zone_types.get(spec.zone, ()):
                raise InvalidRequest(f"machine type {spec.machine_type!r} is not offered in zone {spec.zone}")
            return spec.zone
        for zone in region.zones:  # deterministic, so a retried create picks the same zone
            if spec.machine_type in zone_types.get(zone, ()):
                return zone
        raise InvalidRequest(f"machine type {spec.machine_type!r} is not offered in {spec.region}")

    # ------------------------------------------------------------------ lookups
    def _vm_name(self, instance_id: str) -> str:
        return gce_name(self.config.name_prefix, instance_id)

    def _snapshot_name(self, snapshot_id: str) -> str:
        return gce_name(f"{self.config.name_prefix}-snap", snapshot_id)

    def _label_filter(self, key: str, value: str) -> str:
        return f"(labels.{MANAGED_BY_TAG} = {MANAGED_BY_VALUE}) (labels.{key} = {label_value(value)})"

    def _aggregated(self, client: Any, request_cls: Any, filter_: str, what: str, attr: str) -> list[tuple[str, Any]]:
        """(zone, resource) for every match of an aggregated list, across pages."""
        project = self.config.project

        def run(**kw: Any) -> list[tuple[str, Any]]:
            out = []
            for scope, scoped in client.aggregated_list(request=request_cls(project=project, filter=filter_), **kw):
                for item in getattr(scoped, attr):
                    out.append((last_segment(scope), item))
            return out

        return self._call(what, run)

    def _instances_by_label(self, instance_id: str) -> list[tuple[str, Any]]:
        return self._aggregated(
            self._instances,
            self._c.AggregatedListInstancesRequest,
            self._label_filter(INSTANCE_ID_TAG, instance_id),
            "look up the VM",
            "instances",
        )

    def _get_vm(self, zone: str, name: str) -> Any | None:
        project = self.config.project
        return self._get_or_none(
            "read the VM", lambda **kw: self._instances.get(project=project, zone=zone, instance=name, **kw)
        )

    def _locate(self, ref: InstanceRef) -> tuple[str, Any]:
        """(zone, Instance) of the VM behind ref; NotFound when there is none."""
        name = self._vm_name(ref.instance_id)
        if ref.cloud_id:
            m = INSTANCE_PATH_RE.match(path_of(ref.cloud_id))
            if m:
                vm = self._get_vm(m["zone"], m["name"])
                if vm is not None:
                    return m["zone"], vm
        elif ref.zone:
            vm = self._get_vm(ref.zone, name)
            if vm is not None:
                return ref.zone, vm
        found = self._instances_by_label(ref.instance_id)
        if found:
            found.sort(key=lambda zi: zi[1].name != name)
            return found[0]
        raise NotFound(f"instance {ref.instance_id} does not exist on GCP")

    def _info(self, instance_id: str, zone: str, vm: Any) -> InstanceInfo:
        nic = vm.network_interfaces[0] if vm.network_interfaces else None
        public = None
        if nic is not None:
            public = next((ac.nat_i_p for ac in nic.access_configs if ac.nat_i_p), None)
        return InstanceInfo(
            instance_id=instance_id,
            cloud_id=path_of(vm.self_link) or f"projects/{self.config.project}/zones/{zone}/instances/{vm.name}",
            state=STATUS_MAP.get(vm.status, InstanceState.UNKNOWN),
            region=region_of(zone),
            zone=zone,
            public_ip=public or None,
            private_ip=(nic.network_i_p or None) if nic is not None else None,
            extra={"name": vm.name, "status": vm.status, "machine_type": last_segment(vm.machine_type)},
        )

    # ------------------------------------------------------------------ instances
    def create_instance(self, spec: InstanceSpec) -> InstanceInfo:
        deadline = self._deadline()
        found = self._instances_by_label(spec.instance_id)
        if found:
            zone, vm = found[0]
            log.info("gcp: resuming VM %s for %s", vm.name, spec.instance_id)
            return self._info(spec.instance_id, zone, vm)
        zone = self._choose_zone(spec)
        name = self._vm_name(spec.instance_id)
        existing = self._get_vm(zone, name)
        if existing is not None:
            return self._info(spec.instance_id, zone, existing)
        self._ensure_firewall(deadline)
        body = self._instance_body(spec, zone, name, self._boot_source(spec))
        project = self.config.project

        def send(rid: str, **kw: Any) -> Any:
            request = self._c.InsertInstanceRequest(project=project, zone=zone, instance_resource=body, request_id=rid)
            return self._instances.insert_unary(request=request, **kw)

        self._insert_once(
            f"create VM {name}",
            request_id("instances.insert", project, zone, spec.instance_id),
            send,
            lambda: self._get_vm(zone, name) is not None,
            deadline,
            missing=InvalidRequest,
        )
        vm = self._get_vm(zone, name)
        if vm is None:
            raise ProviderError(f"create VM {name}: the API accepted it but it does not exist", retryable=True)
        return self._info(spec.instance_id, zone, vm)

    def _boot_source(self, spec: InstanceSpec) -> tuple[str, str, int]:
        """("source_image" | "source_snapshot", link, minimum size in GB)."""
        project = self.config.project
        if spec.snapshot is not None:
            snap_name = self._snapshot_name(spec.snapshot.snapshot_id)
            if spec.snapshot.cloud_id:
                m = SNAPSHOT_PATH_RE.match(path_of(spec.snapshot.cloud_id))
                if not m:
                    raise InvalidRequest(f"{spec.snapshot.cloud_id!r} is not a GCE snapshot path")
                project, snap_name = m["project"], m["name"]
            snap = self._call(
                f"read snapshot {snap_name}",
                lambda **kw: self._snapshots.get(project=project, snapshot=snap_name, **kw),
                missing=InvalidRequest,
            )
            if snap.status != "READY":
                raise ProviderError(
                    f"snapshot {snap_name} is {snap.status.lower()}, not ready", retryable=snap.status != "FAILED"
                )
            return "source_snapshot", path_of(snap.self_link), int(snap.disk_size_gb or 0)
        image = spec.image or self.config.default_image
        if image in IMAGE_FAMILIES:
            img_project, family = IMAGE_FAMILIES[image]
            img = self._call(
                f"resolve image {image}",
                lambda **kw: self._images.get_from_family(project=img_project, family=family, **kw),
                missing=InvalidRequest,
            )
        else:
            m = NATIVE_IMAGE_RE.match(image)
            if not m:
                raise InvalidRequest(
                    f"image {image!r} is neither one of {', '.join(IMAGE_ALIASES)} nor a GCE image "
                    "(projects/<project>/global/images/<name> or …/images/family/<family>)"
                )
            if m["family"]:
                img = self._call(
                    f"resolve image {image}",
                    lambda **kw: self._images.get_from_family(project=m["project"], family=m["family"], **kw),
                    missing=InvalidRequest,
                )
            else:
                img = self._call(
                    f"resolve image {image}",
                    lambda **kw: self._images.get(project=m["project"], image=m["name"], **kw),
                    missing=InvalidRequest,
                )
        return "source_image", path_of(img.self_link), int(img.disk_size_gb or 0)

    def _instance_body(self, spec: InstanceSpec, zone: str, name: str, source: tuple[str, str, int]) -> Any:
        c = self._c
        kind, link, min_gb = source
        if spec.disk_gb < min_gb:
            raise InvalidRequest(
                f"disk_gb {spec.disk_gb} is smaller than the {kind.split('_')[1]} it starts from ({min_gb} GB)"
            )
        key = spec.ssh_public_key.strip()
        if not key or "\n" in key or not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", spec.ssh_user):
            raise InvalidRequest("ssh_user must be a plain POSIX user name and ssh_public_key one OpenSSH key line")
        tags = managed_tags(spec.instance_id, spec.owner)
        labels = labels_for(tags, dict(spec.labels))
        params = c.AttachedDiskInitializeParams(
            disk_name=name,
            disk_size_gb=spec.disk_gb,
            labels=labels,
            description=json.dumps({INSTANCE_ID_TAG: spec.instance_id, OWNER_TAG: spec.owner}),
            **{kind: link},
        )
        if self.config.disk_type:
            params.disk_type = f"zones/{zone}/diskTypes/{self.config.disk_type}"
        return c.Instance(
            name=name,
            description=f"onebox instance {spec.name!s}"[:2048],
            machine_type=f"zones/{zone}/machineTypes/{spec.machine_type}",
            labels=labels,
            tags=c.Tags(items=[self.config.network_tag]),
            metadata=c.Metadata(
                items=[
                    c.Items(key="ssh-keys", value=f"{spec.ssh_user}:{key}"),
                    c.Items(key=INSTANCE_ID_TAG, value=spec.instance_id),
                ]
            ),
            network_interfaces=[
                c.NetworkInterface(
                    network=self.config.network,
                    access_configs=[c.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")],
                )
            ],
            disks=[c.AttachedDisk(boot=True, auto_delete=True, type_="PERSISTENT", initialize_params=params)],
        )

    def _ensure_firewall(self, deadline: float) -> None:
        """The one ingress rule (tcp:22 to the network tag) per network; created once."""
        cfg = self.config
        network = cfg.network
        with self._lock:
            if network in self._firewall_ready:
                return
        name = gce_name(f"{cfg.name_prefix}-allow-ssh", f"{last_segment(network)}-{cfg.network_tag}")
        project = cfg.project
        if (
            self._get_or_none(
                "read the SSH firewall rule", lambda **kw: self._firewalls.get(project=project, firewall=name, **kw)
            )
            is None
        ):
            rule = self._c.Firewall(
                name=name,
                network=network,
                direction="INGRESS",
                priority=1000,
                allowed=[self._c.Allowed(I_p_protocol="tcp", ports=["22"])],
                source_ranges=[cfg.ssh_cidr],
                target_tags=[cfg.network_tag],
                description=f"{MANAGED_BY_TAG}={MANAGED_BY_VALUE}: SSH to onebox VMs (network tag {cfg.network_tag})",
            )

            def send(rid: str, **kw: Any) -> Any:
                request = self._c.InsertFirewallRequest(project=project, firewall_resource=rule, request_id=rid)
                return self._firewalls.insert_unary(request=request, **kw)

            self._insert_once(
                f"create firewall rule {name}",
                request_id("firewalls.insert", project, name),
                send,
                lambda: (
                    self._get_or_none(
                        "read the SSH firewall rule",
                        lambda **kw: self._firewalls.get(project=project, firewall=name, **kw),
                    )
                    is not None
                ),
                deadline,
                missing=InvalidRequest,
            )
        with self._lock:
            self._firewall_ready.add(network)

    def wait_running(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        deadline = time.monotonic() + timeout
        zone, vm = self._locate(ref)
        while True:
            info = self._info(ref.instance_id, zone, vm)
            if info.state == InstanceState.RUNNING and info.public_ip:
                return info
            if info.state in DEAD_STATES:
                raise ProviderError(
                    f"VM {vm.name} is {vm.status.lower()} and will not start by itself", retryable=False
                )
            if time.monotonic() >= deadline:
                raise ProviderError(f"VM {vm.name} still {vm.status.lower()} after {timeout:.0f}s", retryable=True)
            self._sleep(deadline)
            vm = self._get_vm(zone, vm.name)
            if vm is None:
                raise NotFound(f"VM for instance {ref.instance_id} disappeared while starting (a failed create?)")

    def get_instance(self, ref: InstanceRef) -> InstanceInfo:
        zone, vm = self._locate(ref)
        return self._info(ref.instance_id, zone, vm)

    def delete_instance(self, ref: InstanceRef) -> None:
        deadline = self._deadline()
        targets: dict[tuple[str, str], Any] = {
            (zone, vm.name): vm for zone, vm in self._instances_by_label(ref.instance_id)
        }
        zone_hint = ref.zone
        if ref.cloud_id and (m := INSTANCE_PATH_RE.match(path_of(ref.cloud_id))):
            zone_hint = m["zone"]
            if (m["zone"], m["name"]) not in targets and (vm := self._get_vm(m["zone"], m["name"])) is not None:
                targets[(m["zone"], m["name"])] = vm
        name = self._vm_name(ref.instance_id)
        if zone_hint and (zone_hint, name) not in targets and (vm := self._get_vm(zone_hint, name)) is not None:
            targets[(zone_hint, name)] = vm
        for (zone, vm_name), vm in targets.items():
            self._delete_vm(zone, vm_name, str(vm.id), deadline)
        self._delete_leftover_disks(ref.instance_id, deadline)

    def _delete_vm(self, zone: str, name: str, vm_id: str, deadline: float) -> None:
        project = self.config.project
        what = f"delete VM {name}"
        request = self._c.DeleteInstanceRequest(
            project=project,
            zone=zone,
            instance=name,
            request_id=request_id("instances.delete", project, zone, name, vm_id),
        )
        try:
            op = self._call(what, lambda **kw: self._instances.delete_unary(request=request, **kw))
            self._wait_operation(op, what, deadline)
        except NotFound:
            pass
        self._wait_gone(
            what, lambda **kw: self._instances.get(project=project, zone=zone, instance=name, **kw), deadline
        )

    def _wait_gone(self, what: str, get: Callable[..., Any], deadline: float) -> None:
        while True:
            if self._get_or_none(what, get) is None:
                return
            if time.monotonic() >= deadline:
                raise ProviderError(f"{what}: still there after {self.config.wait_timeout:.0f}s", retryable=True)
            self._sleep(deadline)

    def _delete_leftover_disks(self, instance_id: str, deadline: float) -> None:
        project = self.config.project
        disks = self._aggregated(
            self._disks,
            self._c.AggregatedListDisksRequest,
            self._label_filter(INSTANCE_ID_TAG, instance_id),
            "look up disks",
            "disks",
        )
        for zone, disk in disks:
            what = f"delete disk {disk.name}"
            request = self._c.DeleteDiskRequest(
                project=project,
                zone=zone,
                disk=disk.name,
                request_id=request_id("disks.delete", project, zone, disk.name, str(disk.id)),
            )
            try:
                op = self._call(what, lambda request=request, **kw: self._disks.delete_unary(request=request, **kw))
                self._wait_operation(op, what, deadline)
            except NotFound:
                pass
            self._wait_gone(
                what,
                lambda zone=zone, disk=disk, **kw: self._disks.get(project=project, zone=zone, disk=disk.name, **kw),
                deadline,
            )

    # ------------------------------------------------------------------ power
    def _power(self, ref: InstanceRef, timeout: float, what: str,
               decide: Callable[[str, bool], tuple[str | None, bool]]) -> InstanceInfo:
        """Drive the VM with stop/start/reset operations until ``decide`` says it is done.

        ``decide(status, acted)`` looks at the VM's status as just read and answers
        (the operation to run now or None, done?). Each operation is awaited and the
        VM read again, so a call repeated after a crash picks up where GCE is. No
        requestId: these operations are safe to repeat, and a derived id would
        make GCE answer a later stop with an earlier one's operation.
        """
        deadline = time.monotonic() + timeout
        zone, vm = self._locate(ref)
        project, acted = self.config.project, False
        verbs = {"stop": self._instances.stop_unary, "start": self._instances.start_unary,
                 "reset": self._instances.reset_unary}
        while True:
            operation, done = decide(vm.status, acted)
            if done:
                return self._info(ref.instance_id, zone, vm)
            if operation is not None:
                call = verbs[operation]
                name = vm.name
                op = self._call(f"{operation} VM {name}",
                                lambda **kw: call(project=project, zone=zone, instance=name, **kw))
                self._wait_operation(op, f"{operation} VM {name}", deadline)
                log.info("gcp: %s VM %s for %s", operation, name, ref.instance_id)
                acted = True
            elif time.monotonic() >= deadline:
                raise ProviderError(f"{what}: VM {vm.name} still {vm.status.lower()} after {timeout:.0f}s",
                                    retryable=True, code="timeout")
            else:
                self._sleep(deadline)
            vm = self._get_vm(zone, vm.name)
            if vm is None:
                raise NotFound(f"instance {ref.instance_id} was deleted; there is nothing to {what}")

    def stop_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        def decide(status: str, acted: bool) -> tuple[str | None, bool]:
            if STATUS_MAP.get(status) == InstanceState.STOPPED:  # TERMINATED: stopped, disks kept
                return None, True
            return ("stop" if status == "RUNNING" else None), False  # else let it settle first

        return self._power(ref, timeout, "stop", decide)

    def start_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        def decide(status: str, acted: bool) -> tuple[str | None, bool]:
            if status == "RUNNING":
                return None, True
            return ("start" if status == "TERMINATED" else None), False

        deadline = time.monotonic() + timeout
        info = self._power(ref, timeout, "start", decide)
        if info.public_ip:
            return info
        return self.wait_running(ref, max(0.0, deadline - time.monotonic()))  # its new ephemeral IP

    def reboot_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        def decide(status: str, acted: bool) -> tuple[str | None, bool]:
            if status == "RUNNING":
                return (None, True) if acted else ("reset", False)
            return ("start" if status == "TERMINATED" else None), False  # a start is a fresh boot too

        deadline = time.monotonic() + timeout
        info = self._power(ref, timeout, "reboot", decide)
        if info.public_ip:
            return info
        return self.wait_running(ref, max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ snapshots
    def _snapshot_info(self, snapshot_id: str, region: str, snap: Any) -> SnapshotInfo:
        state = SNAPSHOT_STATUS_MAP.get(snap.status, SnapshotState.CREATING)
        return SnapshotInfo(
            snapshot_id=snapshot_id,
            cloud_id=path_of(snap.self_link),
            state=state,
            region=region,
            message="the snapshot failed on GCP" if state == SnapshotState.FAILED else None,
        )

    def _snapshot_location(self, ref: SnapshotRef) -> tuple[str, str]:
        if ref.cloud_id:
            m = SNAPSHOT_PATH_RE.match(path_of(ref.cloud_id))
            if m:
                return m["project"], m["name"]
        return self.config.project, self._snapshot_name(ref.snapshot_id)

    def create_snapshot(self, spec: SnapshotSpec) -> SnapshotInfo:
        deadline = self._deadline()
        project = self.config.project
        name = self._snapshot_name(spec.snapshot_id)
        region = spec.instance.region
        get = lambda **kw: self._snapshots.get(project=project, snapshot=name, **kw)  # noqa: E731
        snap = self._get_or_none(f"read snapshot {name}", get)
        if snap is None:
            zone, vm = self._locate(spec.instance)
            boot = next((d for d in vm.disks if d.boot), None)
            m = DISK_PATH_RE.match(path_of(boot.source)) if boot is not None else None
            if m is None:
                raise ProviderError(f"VM {vm.name} has no boot disk to snapshot")
            disk_zone, disk_name = m["zone"], m["name"]
            tags = {
                MANAGED_BY_TAG: MANAGED_BY_VALUE,
                SNAPSHOT_ID_TAG: spec.snapshot_id,
                INSTANCE_ID_TAG: spec.instance.instance_id,
                OWNER_TAG: spec.owner,
            }
            labels = labels_for(tags)
            labels["onebox-region"] = label_value(region)
            body = self._c.Snapshot(
                name=name,
                labels=labels,
                description=json.dumps(
                    {
                        SNAPSHOT_ID_TAG: spec.snapshot_id,
                        INSTANCE_ID_TAG: spec.instance.instance_id,
                        OWNER_TAG: spec.owner,
                        "name": spec.name,
                    }
                ),
            )

            def send(rid: str, **kw: Any) -> Any:
                request = self._c.CreateSnapshotDiskRequest(
                    project=project, zone=disk_zone, disk=disk_name, snapshot_resource=body, request_id=rid
                )
                return self._disks.create_snapshot_unary(request=request, **kw)

            self._insert_once(
                f"snapshot disk {disk_name}",
                request_id("disks.createSnapshot", project, spec.snapshot_id),
                send,
                lambda: self._get_or_none(f"read snapshot {name}", get) is not None,
                deadline,
            )
            snap = self._get_or_none(f"read snapshot {name}", get)
            if snap is None:
                raise ProviderError(f"snapshot {name}: the API accepted it but it does not exist", retryable=True)
        while True:
            info = self._snapshot_info(spec.snapshot_id, region, snap)
            if info.state == SnapshotState.AVAILABLE:
                return info
            if info.state == SnapshotState.FAILED:
                raise ProviderError(f"snapshot {name} failed on GCP", retryable=False)
            if info.state == SnapshotState.DELETING:
                raise ProviderError(f"snapshot {name} is being deleted", retryable=True)
            if time.monotonic() >= deadline:
                raise ProviderError(
                    f"snapshot {name} still {snap.status.lower()} after {self.config.wait_timeout:.0f}s", retryable=True
                )
            self._sleep(deadline)
            snap = self._get_or_none(f"read snapshot {name}", get)
            if snap is None:
                raise ProviderError(f"snapshot {name} disappeared while being created", retryable=True)

    def get_snapshot(self, ref: SnapshotRef) -> SnapshotInfo:
        project, name = self._snapshot_location(ref)
        snap = self._get_or_none(
            f"read snapshot {name}", lambda **kw: self._snapshots.get(project=project, snapshot=name, **kw)
        )
        if snap is None:
            raise NotFound(f"snapshot {ref.snapshot_id} does not exist on GCP")
        return self._snapshot_info(ref.snapshot_id, ref.region, snap)

    def delete_snapshot(self, ref: SnapshotRef) -> None:
        deadline = self._deadline()
        project, name = self._snapshot_location(ref)
        what = f"delete snapshot {name}"
        get = lambda **kw: self._snapshots.get(project=project, snapshot=name, **kw)  # noqa: E731
        snap = self._get_or_none(what, get)
        if snap is None:
            return
        if snap.status != "DELETING":
            request = self._c.DeleteSnapshotRequest(
                project=project, snapshot=name, request_id=request_id("snapshots.delete", project, name, str(snap.id))
            )
            try:
                op = self._call(what, lambda **kw: self._snapshots.delete_unary(request=request, **kw))
                self._wait_operation(op, what, deadline)
            except NotFound:
                pass
        self._wait_gone(what, get, deadline)

    # ------------------------------------------------------------------ garbage collection
    def list_managed(self) -> list[ManagedResource]:
        managed = f"labels.{MANAGED_BY_TAG} = {MANAGED_BY_VALUE}"
        out: list[ManagedResource] = []
        for zone, vm in self._aggregated(
            self._instances, self._c.AggregatedListInstancesRequest, managed, "list VMs", "instances"
        ):
            original = (
                next((i.value for i in vm.metadata.items if i.key == INSTANCE_ID_TAG), None) if vm.metadata else None
            )
            out.append(
                ManagedResource(
                    kind="instance",
                    cloud_id=path_of(vm.self_link),
                    region=region_of(zone),
                    instance_id=original or vm.labels.get(INSTANCE_ID_TAG),
                    state=str(STATUS_MAP.get(vm.status, InstanceState.UNKNOWN)),
                )
            )
        for zone, disk in self._aggregated(
            self._disks, self._c.AggregatedListDisksRequest, managed, "list disks", "disks"
        ):
            meta = json_description(disk.description)
            out.append(
                ManagedResource(
                    kind="disk",
                    cloud_id=path_of(disk.self_link),
                    region=region_of(zone),
                    instance_id=meta.get(INSTANCE_ID_TAG) or disk.labels.get(INSTANCE_ID_TAG),
                    state=(disk.status or "").lower() or None,
                )
            )
        project = self.config.project
        request = self._c.ListSnapshotsRequest(project=project, filter=managed)
        snaps = self._call("list snapshots", lambda **kw: list(self._snapshots.list(request=request, **kw)))
        for snap in snaps:
            meta = json_description(snap.description)
            out.append(
                ManagedResource(
                    kind="snapshot",
                    cloud_id=path_of(snap.self_link),
                    region=snap.labels.get("onebox-region") or "global",
                    instance_id=meta.get(INSTANCE_ID_TAG) or snap.labels.get(INSTANCE_ID_TAG),
                    snapshot_id=meta.get(SNAPSHOT_ID_TAG) or snap.labels.get(SNAPSHOT_ID_TAG),
                    state=str(SNAPSHOT_STATUS_MAP.get(snap.status, SnapshotState.CREATING)),
                )
            )
        return out

