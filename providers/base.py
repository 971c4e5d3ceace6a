"""The provider contract: what onebox asks of a cloud, and nothing more.

The lifecycle engine (``app/lifecycle``) drives every cloud through the one
``Provider`` protocol below. A provider turns these calls into its SDK's calls,
translates the cloud's states to ``InstanceState``/``SnapshotState`` through a
small status map, and raises the typed errors at the bottom of this module.

Rules every provider keeps, because the engine relies on them:

* Methods block (cloud SDKs do); the engine calls them in worker threads with a
  bound on concurrency, never on the event loop.
* ``create_instance`` is idempotent for ``spec.instance_id``. Every cloud
  resource it makes is tagged ``managed-by=onebox`` and
  ``onebox-instance-id=<id>``; before making anything it looks for resources
  carrying that tag and resumes them instead of making a second set. A worker
  that dies half-way through a create and is replaced must not leak or
  duplicate anything.
* ``delete_instance`` finds what to delete by tag, not only by a recorded id,
  and returns only once the cloud confirms every part is gone. Deleting
  something already gone is not an error.
* Deployments that share a cloud account never touch each other. A provider
  is built for one deployment (``<Name>Config.deployment``, onebox's
  ``ONEBOX_DEPLOYMENT_ID``): every resource it makes, instances' and
  snapshots' alike, also carries ``onebox-deployment=<deployment>``
  (``managed_tags``), and ``list_managed`` leaves out every resource tagged
  with another deployment (``listed_for``). Resources made before this tag
  existed are listed with ``deployment=None``.
* Errors are typed: ``ProviderError(retryable=True)`` is retried by the engine
  with backoff; anything else fails the step for good and triggers cleanup.
  Messages are written for the user who asked for the instance and never
  contain credentials.
* Power verbs (``stop_instance``, ``start_instance``, ``reboot_instance``) keep
  the instance's disks and identity: the same ``cloud_id``, the same root disk.
  Each returns only once the cloud reports the state it promises, and each may
  be called again after a crash at any point: stopping a stopped VM and
  starting a running one return at once. A call that runs out of ``timeout``
  raises ``ProviderError(retryable=True, code="timeout")``; the engine calls
  again and the verb picks up where the cloud is. Addresses are re-read after
  every start: a public IP may change across a stop (EC2 without an Elastic IP,
  GCE ephemeral IPs), and the engine records the one the verb returns.

One layout for every provider, so that a reader finds the same concern in the
same file whatever the cloud (a new provider, e.g. ``qemu``, follows it too)::

    providers/<name>/__init__.py  a docstring index of the files; exports <Name>Config and <Name>Provider
    providers/<name>/config.py    the <Name>Config dataclass: plain settings, no credentials
    providers/<name>/provider.py  the <Name>Provider class: every verb of ``Provider``, stop/start/reboot included
    providers/<name>/mapping.py   pure vocabulary, no SDK calls: the status map to InstanceState,
                                  image aliases, tag/label and resource names
    providers/<name>/errors.py    the cloud's errors turned into the typed errors below, in one place

plus helpers a cloud needs of its own (``aws/network.py``, ``local/processes.py``).
Importing ``providers`` or ``providers.base`` never imports a cloud SDK; a
provider package imports its SDK lazily or on import of its ``provider`` module.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Protocol, runtime_checkable

MANAGED_BY_TAG = "managed-by"
MANAGED_BY_VALUE = "onebox"
INSTANCE_ID_TAG = "onebox-instance-id"
SNAPSHOT_ID_TAG = "onebox-snapshot-id"
OWNER_TAG = "onebox-owner"
DEPLOYMENT_TAG = "onebox-deployment"

# Portable image names a user may give instead of a cloud's native image id.
IMAGE_ALIASES: tuple[str, ...] = ("ubuntu-22.04", "ubuntu-24.04", "debian-12")


def managed_tags(instance_id: str, owner: str, deployment: str | None = None) -> dict[str, str]:
    """The tags every cloud resource of one onebox instance carries (the deployment's, when it has one)."""
    tags = {MANAGED_BY_TAG: MANAGED_BY_VALUE, INSTANCE_ID_TAG: instance_id, OWNER_TAG: owner}
    if deployment:
        tags[DEPLOYMENT_TAG] = deployment
    return tags


def listed_for(resource_deployment: str | None, deployment: str | None) -> bool:
    """Whether ``list_managed`` of ``deployment`` lists a resource tagged ``resource_deployment``: its
    own, and untagged ones (made before deployment tags existed), never another deployment's. A
    provider built without a deployment (tools, tests) lists everything tagged managed-by=onebox."""
    return deployment is None or resource_deployment in (None, deployment)


class InstanceState(enum.StrEnum):
    """A cloud VM's state, normalized across clouds."""

    PENDING = "pending"  # accepted by the cloud, not yet running (being created or started)
    RUNNING = "running"
    STOPPING = "stopping"  # shutting down or being deleted
    STOPPED = "stopped"  # exists with its disks, not running (EC2 stopped, GCE TERMINATED, Azure deallocated)
    TERMINATED = "terminated"  # gone, or about to vanish from listings
    UNKNOWN = "unknown"


class SnapshotState(enum.StrEnum):
    """A cloud snapshot's (image's) state, normalized across clouds."""

    CREATING = "creating"
    AVAILABLE = "available"
    FAILED = "failed"
    DELETING = "deleting"


@dataclass(frozen=True)
class MachineType:
    """One size a user may ask for."""

    name: str
    vcpus: int  # counted against the user's vCPU quota
    memory_gb: float
    gpu_count: int = 0  # accelerators attached to every VM of this type
    gpu_type: str | None = None  # e.g. "NVIDIA A10G"; None without GPUs
    hourly_usd: float | None = None  # indicative on-demand Linux list price (providers/prices.py); None = unknown


@dataclass(frozen=True)
class Region:
    """One region, the zones in it and the machine types it offers."""

    name: str
    zones: tuple[str, ...]
    machine_types: Mapping[str, MachineType]


@dataclass(frozen=True)
class Catalog:
    """What a provider offers; the API validates every request against it."""

    regions: Mapping[str, Region]
    images: tuple[str, ...] = IMAGE_ALIASES  # aliases; native ids are checked by the cloud
    native_image_pattern: str | None = None  # regex a native image id must match, if any
    ssh_key_types: tuple[str, ...] | None = None  # key types the cloud accepts; None = any onebox accepts
    reserved_ssh_users: frozenset[str] = frozenset()  # user names the cloud refuses


@dataclass(frozen=True)
class SnapshotRef:
    """Enough to find one of our snapshots in the cloud."""

    snapshot_id: str  # onebox's id, also the cloud-side tag
    region: str
    cloud_id: str | None = None  # AMI id, GCE snapshot path, ARM resource id, archive path …


@dataclass(frozen=True)
class InstanceRef:
    """Enough to find one of our instances in the cloud."""

    instance_id: str  # onebox's id, also the cloud-side tag
    region: str
    zone: str | None = None
    cloud_id: str | None = None  # recorded once known; lookups by tag never need it


@dataclass(frozen=True)
class InstanceSpec:
    """What the user asked for, as the provider needs it."""

    instance_id: str
    owner: str
    name: str
    region: str
    zone: str | None
    machine_type: str
    ssh_user: str
    ssh_public_key: str  # one OpenSSH public key line
    disk_gb: int
    image: str | None = None  # alias or native id; None means the provider's default
    snapshot: SnapshotRef | None = None  # start from this snapshot instead of an image
    labels: Mapping[str, str] = field(default_factory=dict)
    # onebox's own key, authorized next to the user's so that configuration
    # management (Ansible) can log in; None when configuration is skipped.
    admin_ssh_public_key: str | None = None

    @property
    def ref(self) -> InstanceRef:
        return InstanceRef(self.instance_id, self.region, self.zone)


@dataclass(frozen=True)
class InstanceInfo:
    """What the cloud says about one of our instances."""

    instance_id: str
    cloud_id: str  # the cloud's own id (EC2 id, GCE self path, ARM resource id, local dir)
    state: InstanceState
    region: str
    zone: str | None = None
    public_ip: str | None = None
    private_ip: str | None = None
    ssh_port: int = 22  # where configuration management reaches sshd on public_ip
    # provider-specific, for events only; create_instance's extra["notice"] becomes an instance event
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotSpec:
    """A snapshot of one instance's root disk."""

    snapshot_id: str
    owner: str
    name: str
    instance: InstanceRef  # cloud_id is filled
    reboot: bool = False  # AWS: let create_image reboot the instance for a consistent image


@dataclass(frozen=True)
class SnapshotInfo:
    """What the cloud says about one of our snapshots."""

    snapshot_id: str
    cloud_id: str
    state: SnapshotState
    region: str
    message: str | None = None  # why it failed, when it did


@dataclass(frozen=True)
class ManagedResource:
    """One cloud resource tagged managed-by=onebox, for garbage collection."""

    kind: str  # "instance", "snapshot", "disk", "nic", "public-ip", "image", …
    cloud_id: str
    region: str
    instance_id: str | None = None
    snapshot_id: str | None = None
    state: str | None = None
    # Its onebox-deployment tag: the provider's own deployment, or None for a resource made before
    # deployments were tagged (the reaper adopts those only when one of its records names them).
    deployment: str | None = None


@runtime_checkable
class Provider(Protocol):
    """One cloud. Every method blocks; every method is safe to call again."""

    name: str

    def catalog(self) -> Catalog:
        """Regions, zones and machine types; cached by the provider."""
        ...

    def create_instance(self, spec: InstanceSpec) -> InstanceInfo:
        """Create the VM, or resume the one already tagged with spec.instance_id.

        Returns once the cloud has accepted the request; the VM may still be
        starting (state PENDING).
        """
        ...

    def wait_running(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        """Block until the VM is running with its addresses known.

        Raises ProviderError(retryable=True) on timeout, ProviderError when it
        ends in a state it can never leave (terminated, failed).
        """
        ...

    def get_instance(self, ref: InstanceRef) -> InstanceInfo:
        """The VM's current state; NotFound once it is gone."""
        ...

    def delete_instance(self, ref: InstanceRef) -> None:
        """Delete every resource tagged with ref.instance_id; return when all are gone."""
        ...

    def create_snapshot(self, spec: SnapshotSpec) -> SnapshotInfo:
        """Snapshot the instance's root disk (idempotent by snapshot_id) and wait until available."""
        ...

    def get_snapshot(self, ref: SnapshotRef) -> SnapshotInfo:
        """The snapshot's current state; NotFound once it is gone."""
        ...

    def delete_snapshot(self, ref: SnapshotRef) -> None:
        """Delete the snapshot and what backs it; return when gone. Gone already is fine."""
        ...

    def list_managed(self) -> list[ManagedResource]:
        """Every resource tagged managed-by=onebox, in every configured region, that belongs to this
        provider's deployment or to none (``listed_for``): never another deployment's.

        Stopped instances are listed too: they still hold disks (``state`` is the cloud's
        word where its listing has one: Azure lists provisioning states, not power states).
        """
        ...

    def stop_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        """Stop the VM and keep its disk(s); return once the cloud says it is stopped.

        Returns state STOPPED (``public_ip`` may be None: some clouds release it).
        Already stopped: returns at once. Still starting or being stopped: waits
        for that to settle, then stops. Gone (or being deleted): NotFound. The
        cloud's cheapest stop that keeps the disks is used (Azure: deallocate,
        which ends compute billing; a mere power-off does not).
        """
        ...

    def start_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        """Start a stopped VM; return once it runs with its addresses known.

        Returns state RUNNING with the addresses re-read from the cloud (the
        public IP may differ from the one before the stop). Already running:
        returns its info at once. Being stopped: waits for the stop to end,
        then starts. Gone (or being deleted): NotFound. What was set up to start
        at boot (the onebox agent) comes back by itself: configuration is not
        run again.
        """
        ...

    def reboot_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        """Reboot the VM; return once it runs again, addresses re-read.

        At least once: the VM has booted at least once since the call began
        when it returns, so a reboot repeated after a crash (the engine cannot
        tell whether the first one reached the cloud) reboots again rather
        than risk none. A VM found stopped is started (a reboot is a power
        cycle). Gone: NotFound.
        """
        ...


class ProviderError(Exception):
    """A cloud call failed. ``retryable`` tells the engine whether to try again."""

    code = "provider_error"
    default_retryable = False

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        cloud_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = self.default_retryable if retryable is None else retryable
        if code is not None:
            self.code = code
        self.retry_after = retry_after  # seconds the cloud asked us to wait, if it said
        # The cloud's own error code when it gave one (InsufficientInstanceCapacity,
        # ZONE_RESOURCE_POOL_EXHAUSTED, ZonalAllocationFailed, …): failover events and metrics name it.
        self.cloud_code = cloud_code

    def __str__(self) -> str:
        return self.message


class CapacityError(ProviderError):
    """The cloud has no capacity for this machine type in this zone right now."""

    code = "capacity"


class QuotaError(ProviderError):
    """The cloud account's quota would be exceeded."""

    code = "quota"


class NotFound(ProviderError):
    """The resource does not exist (any more)."""

    code = "not_found"


class InvalidRequest(ProviderError):
    """The cloud refused the request as malformed (bad image, bad parameter)."""

    code = "invalid_request"
