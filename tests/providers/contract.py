"""The one contract every provider keeps, checked the same way for each cloud.

A provider's test module subclasses ``ProviderContract`` and supplies two
fixtures:

* ``provider`` – a ready ``Provider`` talking to its local stand-in (the local
  provider itself, moto's EC2 server, the GCE fake, the ARM fake);
* ``make_spec`` – a callable ``make_spec(**overrides) -> InstanceSpec`` giving a
  valid spec with a fresh ``instance_id`` for that provider.

The checks are what the lifecycle engine relies on: idempotent create, typed
NotFound, delete that returns only once everything is gone, snapshots that a
new instance can start from, and ``list_managed`` seeing all of it.
"""

from __future__ import annotations

import pytest

from providers.base import (
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


class ProviderContract:
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
