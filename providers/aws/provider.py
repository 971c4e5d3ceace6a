"""``AwsProvider``: the ``providers.base.Provider`` contract on EC2, through boto3.

One onebox instance is one EC2 instance with one root EBS volume, in the
region's default VPC, reachable over SSH through a security group shared by
all onebox instances of that VPC (``network``). A onebox snapshot is an AMI
made with ``CreateImage`` plus the EBS snapshot behind it. Everything is found
again by its tags (``managed-by=onebox``, ``onebox-instance-id``,
``onebox-snapshot-id``), never only by a recorded id, so a worker that died
half-way can be replaced.

Every public method blocks and is safe to call from several threads: boto3
clients are shared (they are thread-safe), while the session, the caches and
the security-group setup are guarded by locks.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from typing import Any, Callable, Iterable

from botocore.exceptions import ClientError, WaiterError

from providers import prices
from providers.aws.config import AwsConfig
from providers.aws.mapping import (
    DEFAULT_IMAGE,
    IMAGE_FILTERS,
    IMAGE_STATUS_MAP,
    NATIVE_IMAGE_RE,
    RESERVED_TAG_KEYS,
    RESUMABLE_STATES,
    SSH_USER_RE,
    STALE_NETWORK_CODES,
    STATUS_MAP,
    client_token,
    image_name,
    image_snapshot_ids,
    paginate,
    root_volume_gb,
    state_reason,
    tag_dict,
    tag_filter,
    tag_list,
)
from providers.aws.errors import error_code, map_client_error, translated
from providers.aws.network import Network
from providers.base import (
    DEPLOYMENT_TAG,
    IMAGE_ALIASES,
    INSTANCE_ID_TAG,
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
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
    listed_for,
    managed_tags,
)
from providers.cloudinit import cloud_config

log = logging.getLogger(__name__)


class AwsProvider:
    """onebox's provider for Amazon EC2. Construct with ``AwsProvider(AwsConfig(...))``."""

    name = "aws"

    def __init__(self, config: AwsConfig | None = None) -> None:
        self.config = config or AwsConfig()
        self._lock = threading.Lock()  # session, clients, image cache
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._catalog: tuple[float, Catalog] | None = None
        self._catalog_lock = threading.Lock()
        self._images: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        self._network = Network(self.config)

    # -- plumbing ----------------------------------------------------------

    def _client(self, region: str) -> Any:
        """The EC2 client of one configured region, made once and shared by all threads."""
        if region not in self.config.regions:
            raise InvalidRequest(f"AWS region {region!r} is not offered here; "
                                 f"choose one of {', '.join(self.config.regions)}")
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                import boto3  # on first use: a service without AWS enabled never loads it
                from botocore.config import Config

                if self._session is None:
                    self._session = boto3.session.Session()
                client = self._session.client(
                    "ec2",
                    region_name=region,
                    endpoint_url=self.config.endpoint_url,
                    config=Config(
                        # botocore's "max_attempts" counts retries only; "total_max_attempts" includes the first
                        retries={"mode": "standard", "total_max_attempts": self.config.max_attempts},
                        connect_timeout=self.config.connect_timeout,
                        read_timeout=self.config.read_timeout,
                        user_agent_extra="onebox",
                    ),
                )
                self._clients[region] = client
            return client

    def _cached(self, store: dict, key: Any) -> Any:
        with self._lock:
            hit = store.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.config.cache_ttl:
            return hit
        return None

    def _sleep(self) -> None:
        time.sleep(self.config.poll_delay)

    def _deadline(self, timeout: float | None = None) -> float:
        return time.monotonic() + (self.config.wait_timeout if timeout is None else timeout)

    def _wait(self, client: Any, waiter_name: str, deadline: float,
              retry_codes: Iterable[str] = (), **params: Any) -> None:
        """Run a boto3 waiter until ``deadline``; error codes in ``retry_codes`` mean "not yet"."""
        waiter = client.get_waiter(waiter_name)
        delay = self.config.poll_delay
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            attempts = max(1, math.floor(remaining / delay) + 1)
            try:
                waiter.wait(**params, WaiterConfig={"Delay": delay, "MaxAttempts": attempts})
                return
            except WaiterError as exc:
                code = ((exc.last_response or {}).get("Error") or {}).get("Code")
                if code in set(retry_codes) and time.monotonic() + delay < deadline:
                    self._sleep()
                    continue
                raise

    @staticmethod
    def _waiter_failure(exc: WaiterError, action: str, what: str) -> ProviderError:
        """A provider error for a waiter that timed out or met an error (not a terminal state)."""
        response = exc.last_response or {}
        if "Max attempts exceeded" not in str(exc.kwargs.get("reason")) and "Error" in response:
            return map_client_error(ClientError(response, str(exc.kwargs.get("name"))), action)
        return ProviderError(f"Timed out waiting for {what}; onebox will check again",
                             retryable=True, code="timeout")

    # -- catalog -------------------------------------------------------------

    def catalog(self) -> Catalog:
        with self._catalog_lock:
            if self._catalog and time.monotonic() - self._catalog[0] < self.config.cache_ttl:
                return self._catalog[1]
            catalog = self._load_catalog()
            self._catalog = (time.monotonic(), catalog)
            return catalog

    @translated("describe its regions and machine types")
    def _load_catalog(self) -> Catalog:
        first = self._client(self.config.regions[0])
        enabled = {r["RegionName"] for r in first.describe_regions().get("Regions", [])}
        regions: dict[str, Region] = {}
        for name in self.config.regions:
            if name not in enabled:
                log.warning("aws: configured region %s is not enabled for this account; skipped", name)
                continue
            client = self._client(name)
            zones = client.describe_availability_zones(Filters=[
                {"Name": "state", "Values": ["available"]},
                {"Name": "zone-type", "Values": ["availability-zone"]},
            ]).get("AvailabilityZones", [])
            types: dict[str, MachineType] = {}
            for it in paginate(client, "describe_instance_types", "InstanceTypes", Filters=[
                {"Name": "current-generation", "Values": ["true"]},
                {"Name": "processor-info.supported-architecture", "Values": list(self.config.architectures)},
            ]):
                vcpus = int((it.get("VCpuInfo") or {}).get("DefaultVCpus") or 0)
                mib = float((it.get("MemoryInfo") or {}).get("SizeInMiB") or 0)
                if vcpus:
                    gpus = (it.get("GpuInfo") or {}).get("Gpus") or []
                    gpu_count = sum(int(g.get("Count") or 0) for g in gpus)
                    gpu_type = " ".join(filter(None, (gpus[0].get("Manufacturer"), gpus[0].get("Name")))) if gpus else None
                    types[it["InstanceType"]] = MachineType(
                        it["InstanceType"], vcpus, round(mib / 1024, 3), gpu_count=gpu_count,
                        gpu_type=gpu_type or None, hourly_usd=prices.hourly_usd("aws", it["InstanceType"]))
            regions[name] = Region(
                name=name,
                zones=tuple(sorted(z["ZoneName"] for z in zones)),
                machine_types=dict(sorted(types.items())),
            )
        if not regions:
            raise ProviderError("None of the configured AWS regions "
                                f"({', '.join(self.config.regions)}) is enabled for this account",
                                retryable=False)
        return Catalog(regions=regions, native_image_pattern=NATIVE_IMAGE_RE)

    # -- instances -----------------------------------------------------------

    @translated("create the instance")
    def create_instance(self, spec: InstanceSpec) -> InstanceInfo:
        client = self._client(spec.region)
        tags = self._instance_tags(spec)

        resumed = self._resume(client, spec)
        if resumed is not None:
            return resumed

        image = self._source_image(client, spec)
        root_gb = max(spec.disk_gb, root_volume_gb(image))
        for attempt in (1, 2):
            subnet = self._network.subnet_for(client, spec)
            group_id = self._network.security_group(client, spec.region, subnet["VpcId"])
            try:
                response = self._run_instance(client, spec, tags, image, subnet, group_id, root_gb)
                break
            except ClientError as exc:
                if error_code(exc) == "IdempotentParameterMismatch":
                    # An earlier attempt launched it (with, say, an older image of the alias)
                    # and reads did not show it a moment ago: wait for it to appear.
                    resumed = self._resume(client, spec, patience=self.config.consistency_grace)
                    if resumed is not None:
                        return resumed
                    raise ProviderError(f"An earlier attempt already launched instance "
                                        f"{spec.instance_id} but AWS does not show it yet; "
                                        "onebox will look again", retryable=True) from exc
                # Our cached network is stale (an operator deleted the group or subnet): forget it.
                if error_code(exc) not in STALE_NETWORK_CODES or attempt == 2:
                    raise
                log.warning("aws: cached network of %s is stale (%s); looking again",
                            spec.region, error_code(exc))
                self._network.forget(spec.region)
        inst = response["Instances"][0]
        state = inst.get("State", {}).get("Name")
        if state in ("shutting-down", "terminated"):
            # Same ClientToken as an earlier, since deleted instance: EC2 hands that one back.
            raise ProviderError(
                f"AWS returned instance {inst['InstanceId']} for {spec.instance_id}, but it is "
                f"{state} ({state_reason(inst) or 'no reason given'}); "
                "an onebox instance id cannot be used again after its instance was deleted",
                retryable=False)
        log.info("aws: created instance %s as %s in %s (%s, %s, %d GB)", spec.instance_id,
                 inst["InstanceId"], subnet.get("AvailabilityZone"), spec.machine_type,
                 image["ImageId"], root_gb)
        extra = {"image_id": image["ImageId"], "root_volume_gb": str(root_gb)}
        return self._info(inst, spec.instance_id, spec.region, extra)

    def _resume(self, client: Any, spec: InstanceSpec, patience: float = 0.0) -> InstanceInfo | None:
        """The instance an earlier attempt made for ``spec`` (started again if stopped), or None."""
        give_up = time.monotonic() + patience
        while True:
            existing = [i for i in self._find_instances(client, spec.instance_id)
                        if i["State"]["Name"] in RESUMABLE_STATES]
            if existing or time.monotonic() >= give_up:
                break
            self._sleep()
        if not existing:
            return None
        inst = self._choose(existing, None)
        log.info("aws: resuming instance %s (%s)", spec.instance_id, inst["InstanceId"])
        if inst["State"]["Name"] == "stopped":
            client.start_instances(InstanceIds=[inst["InstanceId"]])
            inst = self._describe_id(client, inst["InstanceId"]) or inst
        return self._info(inst, spec.instance_id, spec.region)

    def _run_instance(self, client: Any, spec: InstanceSpec, tags: dict[str, str],
                      image: dict[str, Any], subnet: dict[str, Any], group_id: str,
                      root_gb: int) -> dict[str, Any]:
        ec2_tags = tag_list(tags)
        return client.run_instances(
            ImageId=image["ImageId"],
            InstanceType=spec.machine_type,
            MinCount=1,
            MaxCount=1,
            ClientToken=client_token(spec.instance_id),
            UserData=cloud_config(spec),
            NetworkInterfaces=[{
                "DeviceIndex": 0,
                "SubnetId": subnet["SubnetId"],
                "Groups": [group_id],
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
            }],
            BlockDeviceMappings=[{
                "DeviceName": image.get("RootDeviceName") or "/dev/sda1",
                "Ebs": {"VolumeSize": root_gb, "VolumeType": self.config.volume_type,
                        "DeleteOnTermination": True},
            }],
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": ec2_tags},
                {"ResourceType": "volume", "Tags": ec2_tags},
                {"ResourceType": "network-interface", "Tags": ec2_tags},
            ],
            MetadataOptions={"HttpTokens": "required", "HttpEndpoint": "enabled"},
        )

    @translated("wait for the instance to start")
    def wait_running(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        client = self._client(ref.region)
        deadline = time.monotonic() + timeout
        cloud_id = ref.cloud_id or self._require_instance(
            client, ref, patience=min(timeout, self.config.consistency_grace))["InstanceId"]
        try:
            self._wait(client, "instance_running", deadline, InstanceIds=[cloud_id])
        except WaiterError as exc:
            if "terminal failure" not in str(exc.kwargs.get("reason") or exc):
                raise self._waiter_failure(exc, "wait for the instance to start",
                                           f"instance {ref.instance_id} to start") from exc
            inst = self._describe_id(client, cloud_id) or {}
            state = (inst.get("State") or {}).get("Name", "gone")
            raise ProviderError(
                f"Instance {ref.instance_id} ({cloud_id}) will not start: it is {state}"
                f" ({state_reason(inst) or 'AWS gave no reason'})", retryable=False) from exc
        inst = self._describe_id(client, cloud_id)
        if inst is None:
            raise ProviderError(f"Instance {ref.instance_id} ({cloud_id}) is running but not yet "
                                "visible; onebox will check again", retryable=True)
        info = self._info(inst, ref.instance_id, ref.region)
        if info.state == InstanceState.RUNNING and not info.public_ip:
            raise ProviderError(f"Instance {ref.instance_id} ({cloud_id}) is running but has no "
                                "public address yet; onebox will check again", retryable=True)
        return info

    @translated("look up the instance")
    def get_instance(self, ref: InstanceRef) -> InstanceInfo:
        client = self._client(ref.region)
        return self._info(self._require_instance(client, ref), ref.instance_id, ref.region)

    @translated("delete the instance")
    def delete_instance(self, ref: InstanceRef) -> None:
        client = self._client(ref.region)
        deadline = self._deadline()
        grace_until = time.monotonic() + self.config.consistency_grace
        terminated: set[str] = set()
        while True:
            live = {i["InstanceId"]: i for i in self._find_instances(client, ref.instance_id)
                    if i["State"]["Name"] != "terminated"}
            unseen = False
            if ref.cloud_id and ref.cloud_id not in live:
                inst = self._describe_id(client, ref.cloud_id)
                if inst is None:
                    # Unknown to EC2: long gone, or so new that reads do not show it yet.
                    unseen = ref.cloud_id not in terminated
                elif inst["State"]["Name"] != "terminated":
                    live[ref.cloud_id] = inst
            to_terminate = [i for i, inst in live.items()
                            if inst["State"]["Name"] != "shutting-down" or i not in terminated]
            for cloud_id in to_terminate:
                try:
                    client.terminate_instances(InstanceIds=[cloud_id])
                    terminated.add(cloud_id)
                    log.info("aws: terminating %s (%s)", ref.instance_id, cloud_id)
                except ClientError as exc:
                    if error_code(exc) != "InvalidInstanceID.NotFound":
                        raise
            if not live and not (unseen and time.monotonic() < grace_until):
                break
            if time.monotonic() > deadline:
                raise ProviderError(f"Timed out waiting for AWS to terminate instance "
                                    f"{ref.instance_id}; onebox will try again", retryable=True,
                                    code="timeout")
            self._sleep()
        self._delete_volumes(client, ref.instance_id, deadline)

    def _delete_volumes(self, client: Any, instance_id: str, deadline: float) -> None:
        """Delete volumes of the instance that outlived it; return once none is left."""
        while True:
            volumes = list(paginate(client, "describe_volumes", "Volumes",
                                          Filters=[tag_filter(INSTANCE_ID_TAG, instance_id)]))
            if not volumes:
                return
            for vol in volumes:
                if vol["State"] == "available":
                    try:
                        client.delete_volume(VolumeId=vol["VolumeId"])
                        log.info("aws: deleted leftover volume %s of %s", vol["VolumeId"], instance_id)
                    except ClientError as exc:
                        if error_code(exc) not in ("InvalidVolume.NotFound", "VolumeInUse"):
                            raise
            if time.monotonic() > deadline:
                raise ProviderError(f"Timed out waiting for AWS to delete the disks of instance "
                                    f"{instance_id}; onebox will try again", retryable=True,
                                    code="timeout")
            self._sleep()

    # -- power -----------------------------------------------------------------

    def _power(self, ref: InstanceRef, timeout: float, action: str,
               step: Callable[[Any, dict[str, Any]], bool]) -> InstanceInfo:
        """Drive one instance until ``step`` says it is where ``action`` wants it.

        ``step(client, inst)`` looks at the instance as EC2 describes it now, makes
        at most one call to move it along, and answers True once it is done. Every
        state is looked at afresh after each poll, so a call repeated after a crash
        (or after a stop or start someone else made) picks up wherever EC2 is.
        """
        client = self._client(ref.region)
        deadline = time.monotonic() + timeout
        inst = self._require_instance(client, ref)
        while True:
            state = inst["State"]["Name"]
            if state in ("shutting-down", "terminated"):
                raise NotFound(f"Instance {ref.instance_id} ({inst['InstanceId']}) is being deleted; "
                               f"there is nothing to {action}")
            if step(client, inst):
                return self._info(inst, ref.instance_id, ref.region)
            if time.monotonic() >= deadline:
                raise ProviderError(f"Instance {ref.instance_id} ({inst['InstanceId']}) is still {state} after "
                                    f"{timeout:.0f}s; onebox will check again", retryable=True, code="timeout")
            self._sleep()
            inst = self._describe_id(client, inst["InstanceId"]) or inst

    @translated("stop the instance")
    def stop_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        def step(client: Any, inst: dict[str, Any]) -> bool:
            state = inst["State"]["Name"]
            if state == "running":
                client.stop_instances(InstanceIds=[inst["InstanceId"]])
                log.info("aws: stopping %s (%s)", ref.instance_id, inst["InstanceId"])
            return state == "stopped"  # pending: EC2 refuses to stop it yet; stopping: wait

        return self._power(ref, timeout, "stop", step)

    @translated("start the instance")
    def start_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        def step(client: Any, inst: dict[str, Any]) -> bool:
            state = inst["State"]["Name"]
            if state == "stopped":
                client.start_instances(InstanceIds=[inst["InstanceId"]])
                log.info("aws: starting %s (%s)", ref.instance_id, inst["InstanceId"])
            # Without an Elastic IP the public address is a new one, assigned as it starts.
            return state == "running" and bool(inst.get("PublicIpAddress"))

        return self._power(ref, timeout, "start", step)

    @translated("reboot the instance")
    def reboot_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        rebooted = False

        def step(client: Any, inst: dict[str, Any]) -> bool:
            nonlocal rebooted
            state = inst["State"]["Name"]
            if state == "stopped":
                client.start_instances(InstanceIds=[inst["InstanceId"]])  # a start is a fresh boot
                rebooted = True
                log.info("aws: starting %s (%s) to reboot it", ref.instance_id, inst["InstanceId"])
            elif state == "running" and not rebooted:
                # EC2 keeps the instance "running" through a reboot: nothing to wait for afterwards.
                client.reboot_instances(InstanceIds=[inst["InstanceId"]])
                rebooted = True
                log.info("aws: rebooting %s (%s)", ref.instance_id, inst["InstanceId"])
            return rebooted and state == "running" and bool(inst.get("PublicIpAddress"))

        return self._power(ref, timeout, "reboot", step)

    # -- snapshots -----------------------------------------------------------

    @translated("snapshot the instance")
    def create_snapshot(self, spec: SnapshotSpec) -> SnapshotInfo:
        """Make (or find) the AMI of the snapshot and wait until it is available.

        Returns only an AVAILABLE snapshot; an image AWS failed to make raises a
        non-retryable ProviderError carrying AWS's reason.
        """
        region = spec.instance.region
        client = self._client(region)
        tags = {
            **managed_tags(spec.instance.instance_id, spec.owner, self.config.deployment),
            SNAPSHOT_ID_TAG: spec.snapshot_id,
            "Name": spec.name,
        }
        images = self._find_images(client, spec.snapshot_id)
        if images:
            image_id = images[0]["ImageId"]
            log.info("aws: resuming snapshot %s (%s)", spec.snapshot_id, image_id)
        else:
            cloud_id = spec.instance.cloud_id or self._require_instance(client, spec.instance)["InstanceId"]
            name = image_name(spec.snapshot_id)
            try:
                image_id = client.create_image(
                    InstanceId=cloud_id,
                    Name=name,
                    Description=f"onebox snapshot {spec.snapshot_id} of {spec.instance.instance_id}"[:255],
                    NoReboot=not (spec.reboot or self.config.reboot_on_snapshot),
                    TagSpecifications=[{"ResourceType": "image", "Tags": tag_list(tags)}],
                )["ImageId"]
                log.info("aws: creating image %s for snapshot %s", image_id, spec.snapshot_id)
            except ClientError as exc:
                if error_code(exc) != "InvalidAMIName.Duplicate":
                    raise
                # Made by an earlier attempt whose tags reads do not show yet.
                found = client.describe_images(Owners=["self"], Filters=[
                    {"Name": "name", "Values": [name]}]).get("Images", [])
                if not found:
                    raise ProviderError(f"Snapshot {spec.snapshot_id} is being created but is not "
                                        "visible yet; onebox will check again", retryable=True) from exc
                image_id = found[0]["ImageId"]

        try:
            self._wait(client, "image_available", self._deadline(),
                       retry_codes=("InvalidAMIID.NotFound",), ImageIds=[image_id])
        except WaiterError as exc:
            if "terminal failure" not in str(exc.kwargs.get("reason") or exc):
                raise self._waiter_failure(exc, "snapshot the instance",
                                           f"snapshot {spec.snapshot_id} to be ready") from exc
        image = self._describe_image(client, image_id)
        if image is None:
            raise ProviderError(f"Snapshot {spec.snapshot_id} ({image_id}) vanished while it was "
                                "being made", retryable=False)
        # CreateImage could tag the EBS snapshot too, but moto rejects that; tagging
        # afterwards works everywhere and also repairs a snapshot an earlier attempt left untagged.
        snapshot_ids = sorted(image_snapshot_ids(image))
        if snapshot_ids:
            client.create_tags(Resources=snapshot_ids, Tags=tag_list(tags))
        info = self._snapshot_info(image, spec.snapshot_id, region)
        if info.state != SnapshotState.AVAILABLE:
            # Only "failed"-like states get here; the engine's cleanup deletes what is left.
            raise ProviderError(f"AWS could not make snapshot {spec.snapshot_id} ({image_id}): "
                                f"{info.message}", retryable=False, code="snapshot_failed")
        return info

    @translated("look up the snapshot")
    def get_snapshot(self, ref: SnapshotRef) -> SnapshotInfo:
        client = self._client(ref.region)
        images = self._snapshot_images(client, ref)
        if not images:
            raise NotFound(f"Snapshot {ref.snapshot_id} does not exist in AWS {ref.region}")
        return self._snapshot_info(images[0], ref.snapshot_id, ref.region)

    @translated("delete the snapshot")
    def delete_snapshot(self, ref: SnapshotRef) -> None:
        client = self._client(ref.region)
        deadline = self._deadline()
        snapshot_ids: set[str] = set()
        for image in self._snapshot_images(client, ref):
            snapshot_ids |= image_snapshot_ids(image)
            try:
                client.deregister_image(ImageId=image["ImageId"])
                log.info("aws: deregistered image %s of snapshot %s", image["ImageId"], ref.snapshot_id)
            except ClientError as exc:
                if not (error_code(exc) or "").startswith("InvalidAMIID."):
                    raise
        # Also those an earlier, interrupted delete left behind without their image.
        snapshot_ids |= {s["SnapshotId"] for s in self._tagged_snapshots(client, ref.snapshot_id)}
        while snapshot_ids:
            for snapshot_id in sorted(snapshot_ids):
                try:
                    client.delete_snapshot(SnapshotId=snapshot_id)
                    snapshot_ids.discard(snapshot_id)
                except ClientError as exc:
                    if error_code(exc) == "InvalidSnapshot.NotFound":
                        snapshot_ids.discard(snapshot_id)
                    elif error_code(exc) != "InvalidSnapshot.InUse":  # image still deregistering
                        raise
            if snapshot_ids:
                if time.monotonic() > deadline:
                    raise ProviderError(f"Timed out deleting the disk snapshots of snapshot "
                                        f"{ref.snapshot_id}; onebox will try again",
                                        retryable=True, code="timeout")
                self._sleep()
        while self._find_images(client, ref.snapshot_id):
            if time.monotonic() > deadline:
                raise ProviderError(f"Timed out waiting for AWS to delete snapshot {ref.snapshot_id}; "
                                    "onebox will try again", retryable=True, code="timeout")
            self._sleep()

    # -- garbage collection ------------------------------------------------------

    @translated("list onebox's resources")
    def list_managed(self) -> list[ManagedResource]:
        managed = [tag_filter(MANAGED_BY_TAG, MANAGED_BY_VALUE)]
        out: list[ManagedResource] = []

        def add(kind: str, cloud_id: str, region: str, tags: dict[str, str], **fields: Any) -> None:
            if listed_for(tags.get(DEPLOYMENT_TAG), self.config.deployment):  # another deployment's: not ours
                out.append(ManagedResource(kind, cloud_id, region, instance_id=tags.get(INSTANCE_ID_TAG),
                                           deployment=tags.get(DEPLOYMENT_TAG), **fields))

        for region in self.config.regions:
            client = self._client(region)
            for inst in paginate(client, "describe_instances", "Reservations", Filters=managed):
                for i in inst.get("Instances") or []:
                    add("instance", i["InstanceId"], region, tag_dict(i),
                        state=STATUS_MAP.get(i["State"]["Name"], InstanceState.UNKNOWN).value)
            for img in paginate(client, "describe_images", "Images", Owners=["self"], Filters=managed):
                tags = tag_dict(img)
                state = IMAGE_STATUS_MAP.get(img.get("State", ""), SnapshotState.FAILED)
                add("image", img["ImageId"], region, tags, snapshot_id=tags.get(SNAPSHOT_ID_TAG),
                    state="deleted" if img.get("State") == "deregistered" else state.value)
            for vol in paginate(client, "describe_volumes", "Volumes", Filters=managed):
                add("disk", vol["VolumeId"], region, tag_dict(vol), state=vol.get("State"))
            for snap in paginate(client, "describe_snapshots", "Snapshots", OwnerIds=["self"],
                                       Filters=managed):
                tags = tag_dict(snap)
                add("snapshot", snap["SnapshotId"], region, tags, snapshot_id=tags.get(SNAPSHOT_ID_TAG),
                    state=snap.get("State"))
        return out

    # -- lookups -------------------------------------------------------------------

    def _find_instances(self, client: Any, instance_id: str) -> list[dict[str, Any]]:
        """Our EC2 instances tagged with this onebox id, terminated ones included."""
        return [i for r in paginate(client, "describe_instances", "Reservations",
                                          Filters=[tag_filter(INSTANCE_ID_TAG, instance_id)])
                for i in r.get("Instances") or []]

    @staticmethod
    def _describe_id(client: Any, cloud_id: str) -> dict[str, Any] | None:
        """One EC2 instance by id; None when EC2 does not know it (yet, or any more)."""
        try:
            reservations = client.describe_instances(InstanceIds=[cloud_id]).get("Reservations") or []
        except ClientError as exc:
            if error_code(exc) in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
                return None
            raise
        instances = [i for r in reservations for i in r.get("Instances") or []]
        return instances[0] if instances else None

    @staticmethod
    def _choose(instances: list[dict[str, Any]], cloud_id: str | None) -> dict[str, Any]:
        """The one instance to report when (against the rules) a tag matches several."""
        for inst in instances:
            if inst["InstanceId"] == cloud_id:
                return inst
        rank = {"running": 0, "pending": 1, "stopping": 2, "stopped": 3, "shutting-down": 4}
        return sorted(instances, key=lambda i: (rank.get(i["State"]["Name"], 9),
                                                str(i.get("LaunchTime")), i["InstanceId"]))[0]

    def _require_instance(self, client: Any, ref: InstanceRef, patience: float = 0.0) -> dict[str, Any]:
        """The live instance of ``ref``, by tag, else by its recorded id; NotFound otherwise.

        With ``patience``, keep looking that long first: a just-created instance
        may be missing from EC2's reads for a few seconds.
        """
        give_up = time.monotonic() + patience
        while True:
            live = [i for i in self._find_instances(client, ref.instance_id)
                    if i["State"]["Name"] != "terminated"]
            if not live and ref.cloud_id:
                inst = self._describe_id(client, ref.cloud_id)
                if inst is not None and inst["State"]["Name"] != "terminated":
                    live = [inst]
            if live:
                return self._choose(live, ref.cloud_id)
            if time.monotonic() >= give_up:
                raise NotFound(f"Instance {ref.instance_id} does not exist in AWS {ref.region}")
            self._sleep()

    def _find_images(self, client: Any, snapshot_id: str) -> list[dict[str, Any]]:
        """Our AMIs tagged with this onebox snapshot id (deregistered ones left out)."""
        return [img for img in paginate(client, "describe_images", "Images", Owners=["self"],
                                              Filters=[tag_filter(SNAPSHOT_ID_TAG, snapshot_id)])
                if img.get("State") != "deregistered"]

    @staticmethod
    def _describe_image(client: Any, image_id: str) -> dict[str, Any] | None:
        try:
            images = client.describe_images(ImageIds=[image_id]).get("Images") or []
        except ClientError as exc:
            if (error_code(exc) or "").startswith("InvalidAMIID."):
                return None
            raise
        images = [i for i in images if i.get("State") != "deregistered"]
        return images[0] if images else None

    def _snapshot_images(self, client: Any, ref: SnapshotRef) -> list[dict[str, Any]]:
        """Our AMIs of ``ref``: by tag, else by the recorded AMI id if it carries our tag."""
        images = self._find_images(client, ref.snapshot_id)
        if not images and ref.cloud_id:
            image = self._describe_image(client, ref.cloud_id)
            if image is not None and tag_dict(image).get(MANAGED_BY_TAG) == MANAGED_BY_VALUE:
                images = [image]
        return images

    def _tagged_snapshots(self, client: Any, snapshot_id: str) -> list[dict[str, Any]]:
        return list(paginate(client, "describe_snapshots", "Snapshots", OwnerIds=["self"],
                                   Filters=[tag_filter(SNAPSHOT_ID_TAG, snapshot_id)]))

    # -- what create_instance needs --------------------------------------------------

    def _instance_tags(self, spec: InstanceSpec) -> dict[str, str]:
        if not SSH_USER_RE.match(spec.ssh_user) or spec.ssh_user == "root":
            raise InvalidRequest(f"SSH user name {spec.ssh_user!r} is not a valid Linux user name "
                                 "(lower case letters, digits, '-' and '_'; not root)")
        key = spec.ssh_public_key.strip()
        if not key or "\n" in key or "\r" in key:
            raise InvalidRequest("The SSH public key must be one OpenSSH public key line")
        tags: dict[str, str] = {}
        for k, v in (spec.labels or {}).items():
            if str(k).lower().startswith("aws:"):
                raise InvalidRequest(f"Label {k!r}: keys starting with 'aws:' are reserved by AWS")
            if not 1 <= len(str(k)) <= 128 or len(str(v)) > 256:
                raise InvalidRequest(f"Label {k!r}: AWS allows keys of 1-128 and values of up to "
                                     "256 characters")
            if k not in RESERVED_TAG_KEYS:
                tags[str(k)] = str(v)
        if len(tags) > 50 - len(RESERVED_TAG_KEYS):
            raise InvalidRequest(f"Too many labels: AWS allows 50 tags per resource and onebox uses "
                                 f"{len(RESERVED_TAG_KEYS)}")
        tags.update(managed_tags(spec.instance_id, spec.owner, self.config.deployment))
        tags["Name"] = spec.name[:256]
        return tags

    def _source_image(self, client: Any, spec: InstanceSpec) -> dict[str, Any]:
        """The AMI the instance boots from: the snapshot's, a native id's or an alias's."""
        if spec.snapshot is not None:
            ref = spec.snapshot
            if ref.region != spec.region:
                raise InvalidRequest(f"Snapshot {ref.snapshot_id} is in {ref.region}; an instance in "
                                     f"{spec.region} cannot start from it")
            images = self._snapshot_images(client, ref)
            if not images:
                raise InvalidRequest(f"Snapshot {ref.snapshot_id} does not exist (any more)")
            image = images[0]
            if image.get("State") == "pending":
                raise ProviderError(f"Snapshot {ref.snapshot_id} is not ready yet; onebox will try again",
                                    retryable=True)
            if image.get("State") != "available":
                raise InvalidRequest(f"Snapshot {ref.snapshot_id} cannot be used: it is {image.get('State')}")
            return image
        image_ref = spec.image or DEFAULT_IMAGE
        if image_ref in IMAGE_FILTERS:
            return self.resolve_alias(spec.region, image_ref)
        if re.match(NATIVE_IMAGE_RE, image_ref):
            image = self._describe_image(client, image_ref)
            if image is None:
                raise InvalidRequest(f"Image {image_ref} does not exist in AWS {spec.region}")
            if image.get("State") != "available":
                raise InvalidRequest(f"Image {image_ref} cannot be used: it is {image.get('State')}")
            return image
        raise InvalidRequest(f"Unknown image {image_ref!r}: use one of {', '.join(IMAGE_ALIASES)} "
                             "or an AMI id (ami-…)")

    @translated("look up the image")
    def resolve_alias(self, region: str, alias: str) -> dict[str, Any]:
        """The newest available AMI for a portable image alias in ``region`` (cached)."""
        hit = self._cached(self._images, (region, alias))
        if hit is not None:
            return hit[1]
        owner, pattern = IMAGE_FILTERS[alias]
        client = self._client(region)
        images = list(paginate(client, "describe_images", "Images", Owners=[owner], Filters=[
            {"Name": "name", "Values": [pattern]},
            {"Name": "state", "Values": ["available"]},
            {"Name": "architecture", "Values": ["x86_64"]},
        ]))
        if not images:
            raise InvalidRequest(f"No {alias} image is published in AWS {region}")
        newest = max(images, key=lambda i: (i.get("CreationDate") or "", i.get("Name") or ""))
        log.info("aws: %s in %s is %s (%s)", alias, region, newest["ImageId"], newest.get("Name"))
        with self._lock:
            self._images[(region, alias)] = (time.monotonic(), newest)
        return newest

    # -- conversions ------------------------------------------------------------

    @staticmethod
    def _info(inst: dict[str, Any], instance_id: str, region: str,
              extra: dict[str, str] | None = None) -> InstanceInfo:
        ec2_state = (inst.get("State") or {}).get("Name", "")
        details = {"ec2_state": ec2_state, "instance_type": inst.get("InstanceType", "")}
        reason = state_reason(inst)
        if reason:
            details["state_reason"] = reason
        details.update(extra or {})
        return InstanceInfo(
            instance_id=instance_id,
            cloud_id=inst["InstanceId"],
            state=STATUS_MAP.get(ec2_state, InstanceState.UNKNOWN),
            region=region,
            zone=(inst.get("Placement") or {}).get("AvailabilityZone"),
            public_ip=inst.get("PublicIpAddress"),
            private_ip=inst.get("PrivateIpAddress"),
            extra=details,
        )

    @staticmethod
    def _snapshot_info(image: dict[str, Any], snapshot_id: str, region: str) -> SnapshotInfo:
        state = IMAGE_STATUS_MAP.get(image.get("State", ""), SnapshotState.FAILED)
        message = state_reason(image) if state == SnapshotState.FAILED else None
        if state == SnapshotState.FAILED and not message:
            message = f"AWS reports the image as {image.get('State')}"
        return SnapshotInfo(snapshot_id=snapshot_id, cloud_id=image["ImageId"], state=state,
                            region=region, message=message)
