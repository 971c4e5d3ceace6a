"""The one contract every provider keeps, checked the same way for each cloud.

A provider's test module subclasses ``ProviderContract`` and supplies three
fixtures:

* ``provider`` – a ready ``Provider`` talking to its local stand-in (the local
  provider itself, moto's EC2 server, the GCE fake, the ARM fake);
* ``make_spec`` – a callable ``make_spec(**overrides) -> InstanceSpec`` giving a
  valid spec with a fresh ``instance_id`` for that provider;
* ``disk_identity`` – a callable ``disk_identity(ref) -> object``: the
  instance's root disk as far as the stand-in shows it (its cloud id, and its
  content where the stand-in has any), asked of the stand-in itself. Equal
  before and after a stop means the disk was kept.

The checks are what the lifecycle engine relies on: idempotent create, typed
NotFound, delete that returns only once everything is gone, snapshots that a
new instance can start from, ``list_managed`` seeing all of it, and stop,
start and reboot that keep the disk and report the addresses the cloud has
after a start.
"""

from __future__ import annotations

import pytest

from providers.base import (
    InstanceRef,
    InstanceState,
    NotFound,
    Provider,
    SnapshotRef,
    SnapshotSpec,
    SnapshotState,
)


def _snapshot_spec(spec, info, snapshot_id: str) -> SnapshotSpec:
    ref = spec.ref.__class__(spec.instance_id, spec.region, spec.zone, info.cloud_id)
    return SnapshotSpec(snapshot_id=snapshot_id, owner=spec.owner, name=f"snap-{snapshot_id}"[:40], instance=ref)


class PowerContract:
    """stop_instance, start_instance, reboot_instance: part of ``ProviderContract``."""

    wait_timeout = 60.0
    # Whether the stand-in keeps the public IP across a stop (local, Azure's static IP) or gives a
    # new one on start (EC2 without an Elastic IP, GCE's ephemeral IP): the README table says which.
    public_ip_kept_on_stop = True

    def _running(self, provider, make_spec):
        spec = make_spec()
        provider.create_instance(spec)
        return spec, provider.wait_running(spec.ref, self.wait_timeout)

    @staticmethod
    def _ref(spec, info) -> InstanceRef:
        return InstanceRef(spec.instance_id, spec.region, info.zone, info.cloud_id)

    def test_stop_keeps_the_disk_and_start_reports_current_addresses(self, provider, make_spec, disk_identity):
        spec, running = self._running(provider, make_spec)
        ref = self._ref(spec, running)
        disk = disk_identity(ref)
        stopped = provider.stop_instance(ref, self.wait_timeout)
        assert stopped.state == InstanceState.STOPPED
        assert stopped.cloud_id == running.cloud_id
        assert provider.get_instance(ref).state == InstanceState.STOPPED
        listed = [r for r in provider.list_managed() if r.kind == "instance" and r.instance_id == spec.instance_id]
        # still listed (it holds disks); the listing's state is the cloud's word where it has one for it
        # (Azure lists provisioning states, not power states)
        assert len(listed) == 1 and listed[0].state not in ("terminated", "deleted", "running"), listed
        assert disk_identity(ref) == disk, "the disk is kept while stopped"

        started = provider.start_instance(ref, self.wait_timeout)
        assert started.state == InstanceState.RUNNING
        assert started.cloud_id == running.cloud_id
        assert started.public_ip, "a started instance has a public address"
        assert started.public_ip == provider.get_instance(ref).public_ip, "start returns the cloud's current IP"
        if self.public_ip_kept_on_stop:
            assert started.public_ip == running.public_ip
        else:
            assert started.public_ip != running.public_ip, "this cloud gives a new public IP on start"
        assert started.private_ip == running.private_ip, "the private IP survives a stop"
        assert disk_identity(ref) == disk, "the same disk after a start"
        provider.delete_instance(ref)

    def test_stop_twice_start_twice(self, provider, make_spec):
        spec, running = self._running(provider, make_spec)
        ref = self._ref(spec, running)
        assert provider.stop_instance(ref, self.wait_timeout).state == InstanceState.STOPPED
        again = provider.stop_instance(ref, self.wait_timeout)
        assert again.state == InstanceState.STOPPED and again.cloud_id == running.cloud_id
        first = provider.start_instance(ref, self.wait_timeout)
        second = provider.start_instance(ref, self.wait_timeout)
        assert first.state == second.state == InstanceState.RUNNING
        assert second.cloud_id == running.cloud_id
        assert second.public_ip == first.public_ip, "starting a running instance changes nothing"
        mine = [r for r in provider.list_managed() if r.kind == "instance" and r.instance_id == spec.instance_id]
        assert len(mine) == 1 and mine[0].state not in ("terminated", "deleted", "stopped"), mine
        provider.delete_instance(ref)

    def test_delete_a_stopped_instance(self, provider, make_spec):
        spec, running = self._running(provider, make_spec)
        ref = self._ref(spec, running)
        provider.stop_instance(ref, self.wait_timeout)
        provider.delete_instance(ref)
        with pytest.raises(NotFound):
            provider.get_instance(ref)
        assert not [r for r in provider.list_managed() if r.instance_id == spec.instance_id
                    and r.state not in ("terminated", "deleted")]

    def test_reboot_running_and_stopped(self, provider, make_spec, disk_identity):
        spec, running = self._running(provider, make_spec)
        ref = self._ref(spec, running)
        disk = disk_identity(ref)
        rebooted = provider.reboot_instance(ref, self.wait_timeout)
        assert rebooted.state == InstanceState.RUNNING
        assert rebooted.cloud_id == running.cloud_id
        assert rebooted.public_ip == provider.get_instance(ref).public_ip
        assert disk_identity(ref) == disk
        provider.stop_instance(ref, self.wait_timeout)
        restarted = provider.reboot_instance(ref, self.wait_timeout)  # a stopped VM is started
        assert restarted.state == InstanceState.RUNNING and restarted.public_ip
        assert provider.get_instance(ref).state == InstanceState.RUNNING
        provider.delete_instance(ref)

    def test_power_verbs_on_an_unknown_instance_are_not_found(self, provider, make_spec):
        spec = make_spec()
        for verb in (provider.stop_instance, provider.start_instance, provider.reboot_instance):
            with pytest.raises(NotFound):
                verb(spec.ref, self.wait_timeout)


class ProviderContract(PowerContract):
    """Inherit this in tests/providers/test_<cloud>.py."""

    wait_timeout = 60.0

    def test_is_a_provider(self, provider):
        assert isinstance(provider, Provider)
        catalog = provider.catalog()
        assert catalog.regions, "a provider offers at least one region"
        for region in catalog.regions.values():
            assert region.machine_types, f"region {region.name} offers machine types"

    def test_create_wait_get_delete(self, provider, make_spec):
        spec = make_spec()
        created = provider.create_instance(spec)
        assert created.instance_id == spec.instance_id
        assert created.cloud_id
        running = provider.wait_running(spec.ref, self.wait_timeout)
        assert running.state == InstanceState.RUNNING
        assert running.public_ip, "a running instance has a public address"
        assert running.cloud_id == created.cloud_id
        got = provider.get_instance(spec.ref)
        assert got.cloud_id == created.cloud_id
        provider.delete_instance(spec.ref)
        with pytest.raises(NotFound):
            provider.get_instance(spec.ref)

    def test_create_is_idempotent(self, provider, make_spec):
        spec = make_spec()
        first = provider.create_instance(spec)
        second = provider.create_instance(spec)
        assert second.cloud_id == first.cloud_id
        mine = [r for r in provider.list_managed() if r.kind == "instance" and r.instance_id == spec.instance_id
                and r.state not in ("terminated", "deleted")]
        assert len(mine) == 1, mine
        provider.delete_instance(spec.ref)

    def test_get_unknown_is_not_found(self, provider, make_spec):
        spec = make_spec()
        with pytest.raises(NotFound):
            provider.get_instance(spec.ref)

    def test_delete_twice_and_unknown_is_fine(self, provider, make_spec):
        spec = make_spec()
        provider.delete_instance(spec.ref)  # never existed
        provider.create_instance(spec)
        provider.wait_running(spec.ref, self.wait_timeout)
        provider.delete_instance(spec.ref)
        provider.delete_instance(spec.ref)
        assert not [r for r in provider.list_managed() if r.instance_id == spec.instance_id
                    and r.state not in ("terminated", "deleted")]

    def test_list_managed_sees_instance_and_snapshot(self, provider, make_spec):
        spec = make_spec()
        info = provider.create_instance(spec)
        info = provider.wait_running(spec.ref, self.wait_timeout)
        snap_spec = _snapshot_spec(spec, info, "s-" + spec.instance_id[2:])
        snap = provider.create_snapshot(snap_spec)
        assert snap.state == SnapshotState.AVAILABLE
        managed = provider.list_managed()
        assert any(r.kind == "instance" and r.instance_id == spec.instance_id for r in managed)
        assert any(r.snapshot_id == snap_spec.snapshot_id for r in managed)
        provider.delete_instance(spec.ref)
        sref = SnapshotRef(snap_spec.snapshot_id, spec.region, snap.cloud_id)
        provider.delete_snapshot(sref)
        with pytest.raises(NotFound):
            provider.get_snapshot(sref)
        provider.delete_snapshot(sref)  # gone already is fine
        managed = provider.list_managed()
        assert not [r for r in managed if r.instance_id == spec.instance_id and r.state not in ("terminated", "deleted")]
        assert not [r for r in managed if r.snapshot_id == snap_spec.snapshot_id]

    def test_instance_from_snapshot(self, provider, make_spec):
        spec = make_spec()
        provider.create_instance(spec)
        info = provider.wait_running(spec.ref, self.wait_timeout)
        snap_spec = _snapshot_spec(spec, info, "s-" + spec.instance_id[2:])
        snap = provider.create_snapshot(snap_spec)
        again = provider.create_snapshot(snap_spec)
        assert again.cloud_id == snap.cloud_id, "create_snapshot is idempotent"
        assert provider.get_snapshot(SnapshotRef(snap_spec.snapshot_id, spec.region, snap.cloud_id)).state == SnapshotState.AVAILABLE
        sref = SnapshotRef(snap_spec.snapshot_id, spec.region, snap.cloud_id)
        child = make_spec(image=None, snapshot=sref)
        provider.create_instance(child)
        child_info = provider.wait_running(child.ref, self.wait_timeout)
        assert child_info.state == InstanceState.RUNNING
        provider.delete_instance(child.ref)
        provider.delete_instance(spec.ref)
        provider.delete_snapshot(sref)
