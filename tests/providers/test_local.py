"""The provider contract, run against the local provider (real sshd processes)."""

from __future__ import annotations

import subprocess

import pytest

from app.ids import new_instance_id
from providers.base import InstanceSpec
from providers.local import LocalConfig, LocalProvider
from tests.conftest import _remove_local_instances
from tests.providers.contract import ProviderContract


@pytest.fixture
def provider(tmp_path, ssh_keypair):
    yield LocalProvider(LocalConfig(root=tmp_path / "local"))
    _remove_local_instances(tmp_path)


@pytest.fixture
def make_spec(ssh_keypair):
    def make(**overrides):
        values = dict(
            instance_id=new_instance_id(), owner="alice", name="box", region="local", zone=None,
            machine_type="local", ssh_user="alice", ssh_public_key=ssh_keypair.public, disk_gb=20, image=None,
        )
        values.update(overrides)
        return InstanceSpec(**values)

    return make


class TestLocalContract(ProviderContract):
    wait_timeout = 20.0


def test_home_is_the_instance_disk(provider, make_spec, ssh_keypair):
    a, b = make_spec(), make_spec()
    for spec in (a, b):
        provider.create_instance(spec)
    ia = provider.wait_running(a.ref, 20)
    ib = provider.wait_running(b.ref, 20)
    assert ia.public_ip != ib.public_ip
    ssh_keypair.run(ia.public_ip, ia.ssh_port, "echo hi > ~/note.txt")
    assert ssh_keypair.run(ia.public_ip, ia.ssh_port, "cat ~/note.txt").stdout.strip() == "hi"
    result = ssh_keypair.run(ib.public_ip, ib.ssh_port, "cat ~/note.txt", check=False)
    assert result.returncode != 0
    assert "note.txt" not in subprocess.run(["ls", "-R", str(ib.cloud_id)], capture_output=True, text=True).stdout
