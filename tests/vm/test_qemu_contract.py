"""The provider contract, run against the qemu provider: real QEMU processes and qcow2 disks.

"running" is QEMU's run state, as on the clouds, so these checks do not wait for guests to boot:
each VM is ended seconds after it starts. Booted guests are in ``test_qemu_flow.py``.
"""

from __future__ import annotations

import pytest

from app.ids import new_instance_id
from providers.base import InstanceRef, InstanceSpec
from providers.qemu import QemuProvider
from providers.qemu.provider import qcow2_backing
from tests.providers.contract import ProviderContract
from tests.vm.conftest import qemu_config


@pytest.fixture
def provider(tmp_path, qemu_image, qemu_network):
    # These guests never get far enough into their boot to hear the power button: stop ends QEMU soon.
    qemu = QemuProvider(qemu_config(tmp_path / "qemu", qemu_network, shutdown_grace=2.0))
    yield qemu
    for resource in qemu.list_managed():
        if resource.kind == "instance":
            qemu.delete_instance(InstanceRef(resource.instance_id, resource.region))


@pytest.fixture
def deployed(provider, tmp_path, qemu_network):
    # One root, several deployments' VMs in it: what each one lists is decided by their tags alone.
    return lambda deployment: QemuProvider(qemu_config(tmp_path / "qemu", qemu_network, shutdown_grace=2.0,
                                                       deployment=deployment))


@pytest.fixture
def make_spec(ssh_keypair):
    def make(**overrides):
        values = dict(instance_id=new_instance_id(), owner="alice", name="box", region="local", zone=None,
                      machine_type="small", ssh_user="alice", ssh_public_key=ssh_keypair.public, disk_gb=20,
                      image="debian-12")
        values.update(overrides)
        return InstanceSpec(**values)

    return make


@pytest.fixture
def disk_identity(provider):
    """The instance's disk as the host sees it: its base layer (path and inode) and the image below."""
    def identity(ref):
        disk = provider.instances_dir / ref.instance_id / "disk.qcow2"
        return str(disk), disk.stat().st_ino, qcow2_backing(disk)

    return identity


class TestQemuContract(ProviderContract):
    wait_timeout = 120.0
