"""A zero-latency cloud for the benchmarks: the provider contract, kept in memory.

It answers at once, so what the provision and scale scenarios measure is
onebox's own cost (plus ``ONEBOX_INJECT_CLOUD_LATENCY_SECONDS`` where a slow
cloud is wanted). It keeps the contract's rules (idempotent create by
instance id, deletes that tolerate the gone) so the lifecycle runs unchanged.
Its state lives in one process: a job resumed by another worker process would
not find its VM, which the benchmarks never provoke (no worker dies).
"""

from __future__ import annotations

import dataclasses
import threading

from providers.base import (Catalog, InstanceInfo, InstanceRef, InstanceSpec, InstanceState, MachineType,
                            ManagedResource, NotFound, Region, SnapshotInfo, SnapshotRef, SnapshotSpec,
                            SnapshotState)

# Requests name a provider the API knows, so the fake stands in for "local" (same region and
# machine type names); the registry is given it in place of the real local provider.
NAME = "local"
REGION = "local"
MACHINE_TYPE = "local"


class FakeCloud:
    name = NAME

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._instances: dict[str, InstanceInfo] = {}
        self._snapshots: dict[str, SnapshotInfo] = {}

    def catalog(self) -> Catalog:
        machine = MachineType(MACHINE_TYPE, vcpus=1, memory_gb=1.0)
        return Catalog(regions={REGION: Region(REGION, (REGION,), {MACHINE_TYPE: machine})})

    def create_instance(self, spec: InstanceSpec) -> InstanceInfo:
        with self._lock:
            if spec.instance_id not in self._instances:
                n = len(self._instances) + 1
                self._instances[spec.instance_id] = InstanceInfo(
                    spec.instance_id, f"vm-{n}", InstanceState.RUNNING, spec.region, spec.zone or REGION,
                    public_ip=f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", private_ip="192.168.0.1")
            return self._instances[spec.instance_id]

    def wait_running(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        return self.get_instance(ref)

    def get_instance(self, ref: InstanceRef) -> InstanceInfo:
        with self._lock:
            info = self._instances.get(ref.instance_id)
        if info is None:
            raise NotFound(f"instance {ref.instance_id} not found")
        return info

    def delete_instance(self, ref: InstanceRef) -> None:
        with self._lock:
            self._instances.pop(ref.instance_id, None)

    def _set_state(self, ref: InstanceRef, state: InstanceState) -> InstanceInfo:
        with self._lock:
            info = self._instances.get(ref.instance_id)
            if info is None:
                raise NotFound(f"instance {ref.instance_id} not found")
            info = self._instances[ref.instance_id] = dataclasses.replace(info, state=state)
            return info

    def stop_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        return self._set_state(ref, InstanceState.STOPPED)

    def start_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        return self._set_state(ref, InstanceState.RUNNING)

    def reboot_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        return self._set_state(ref, InstanceState.RUNNING)

    def create_snapshot(self, spec: SnapshotSpec) -> SnapshotInfo:
        with self._lock:
            info = SnapshotInfo(spec.snapshot_id, f"snap-{spec.snapshot_id}", SnapshotState.AVAILABLE,
                                spec.instance.region)
            return self._snapshots.setdefault(spec.snapshot_id, info)

    def get_snapshot(self, ref: SnapshotRef) -> SnapshotInfo:
        with self._lock:
            info = self._snapshots.get(ref.snapshot_id)
        if info is None:
            raise NotFound(f"snapshot {ref.snapshot_id} not found")
        return info

    def delete_snapshot(self, ref: SnapshotRef) -> None:
        with self._lock:
            self._snapshots.pop(ref.snapshot_id, None)

    def list_managed(self) -> list[ManagedResource]:
        with self._lock:
            return [ManagedResource("instance", i.cloud_id, i.region, instance_id=i.instance_id, state=i.state.value)
                    for i in self._instances.values()]


def request_body(n: int, ssh_public_key: str) -> dict:
    """A POST /v1/instances body for this cloud."""
    return {"name": f"bench-{n}", "provider": NAME, "region": REGION, "machine_type": MACHINE_TYPE,
            "ssh_user": "bench", "ssh_public_key": ssh_public_key}
