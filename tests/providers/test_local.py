"""The provider contract, run against the local provider (real sshd processes)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest

from app.ids import new_instance_id
from providers.base import InstanceSpec, InstanceState
from providers.local import LocalConfig, LocalProvider
from providers.local.processes import process_running
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


@pytest.fixture
def disk_identity(provider):
    """The disk directory's inode and every file in it with a hash of its content."""
    def identity(ref):
        disk = provider.instances_dir / ref.instance_id / "disk"
        files = {str(p.relative_to(disk)): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in sorted(disk.rglob("*")) if p.is_file()}
        return disk.stat().st_ino, files

    return identity


class TestLocalContract(ProviderContract):
    wait_timeout = 20.0
    public_ip_kept_on_stop = True  # the instance keeps its loopback address and port


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


def _marked(instance_id: str) -> list[int]:
    needle = f"ONEBOX_LOCAL_INSTANCE={instance_id}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") and process_running(int(pid)):
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_stop_ends_every_process_and_start_serves_the_same_disk(provider, make_spec, ssh_keypair):
    spec = make_spec()
    provider.create_instance(spec)
    running = provider.wait_running(spec.ref, 20)
    host, port = running.public_ip, running.ssh_port
    ssh_keypair.run(host, port, "echo kept > ~/note.txt")
    # something a session left running, as a user's job would be (detached from the session)
    ssh_keypair.run(host, port, "nohup sleep 600 >/dev/null 2>&1 </dev/null & echo $! > ~/job.pid")
    job = int((Path(running.cloud_id) / "disk" / "home" / "alice" / "job.pid").read_text())
    assert process_running(job)

    started_at = time.monotonic()
    stopped = provider.stop_instance(spec.ref, 20)
    took = time.monotonic() - started_at
    assert stopped.state == InstanceState.STOPPED
    assert not process_running(job), "a session's job ends with the instance"
    assert _marked(spec.instance_id) == [], "no process of the instance is left"
    assert ssh_keypair.run(host, port, "true", check=False).returncode != 0, "no sshd while stopped"
    assert (Path(running.cloud_id) / "disk" / "home" / "alice" / "note.txt").read_text() == "kept\n"
    assert took < 2.0, f"stop took {took:.2f}s"

    started = provider.start_instance(spec.ref, 20)
    assert (started.public_ip, started.ssh_port) == (host, port), "the same address and port"
    assert ssh_keypair.run(host, port, "cat ~/note.txt").stdout == "kept\n"
    provider.delete_instance(spec.ref)


def test_start_runs_what_the_disk_starts_at_boot(provider, make_spec, tmp_path):
    """disk/etc/onebox/boot.d/* runs on every start, detached, with the instance's marker and disk."""
    spec = make_spec()
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 20)
    disk = Path(info.cloud_id) / "disk"
    boot = disk / "etc" / "onebox" / "boot.d"
    boot.mkdir(parents=True)
    leak = "ONEBOX_JWT_SECRET"
    os.environ[leak] = "must-not-reach-the-instance"
    try:
        (boot / "service").write_text(
            "#!/bin/sh\n"
            'echo "$ONEBOX_LOCAL_INSTANCE $ONEBOX_DISK $HOME ${ONEBOX_JWT_SECRET:-none}" >> "$ONEBOX_DISK/boots.txt"\n'
            "exec sleep 600\n")
        (boot / "service").chmod(0o755)
        (boot / "not-executable").write_text("#!/bin/sh\ntouch \"$ONEBOX_DISK/wrong\"\n")
        provider.stop_instance(spec.ref, 20)
        provider.start_instance(spec.ref, 20)
    finally:
        del os.environ[leak]
    boots = disk / "boots.txt"
    deadline = time.monotonic() + 20
    while not boots.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert boots.read_text() == f"{spec.instance_id} {disk} {disk / 'home' / 'alice'} none\n"
    assert not (disk / "wrong").exists()
    service = [p for p in _marked(spec.instance_id) if b"sleep" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert service, "the boot program runs in the background"
    provider.stop_instance(spec.ref, 20)
    assert not any(process_running(p) for p in service), "stop ends what boot started"
    provider.delete_instance(spec.ref)


def test_reboot_restarts_sshd(provider, make_spec):
    spec = make_spec()
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 20)
    pid_file = Path(info.cloud_id) / "run" / "sshd.pid"
    before = int(pid_file.read_text())
    rebooted = provider.reboot_instance(spec.ref, 20)
    assert rebooted.state == InstanceState.RUNNING
    assert int(pid_file.read_text()) != before and not process_running(before)
    provider.delete_instance(spec.ref)
