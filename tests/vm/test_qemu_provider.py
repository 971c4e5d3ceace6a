"""The qemu provider beyond the shared contract: what a real QEMU and real files do to it.

Guests are not waited for here (``test_qemu_flow.py`` boots them); these checks are about the host's
side: processes found again after a restart, half-made instances, ports taken at the wrong moment,
snapshots of a stopped VM, a VM whose QEMU died, the accelerator's choice and the image recipe.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess

import pytest

from app.ids import new_instance_id
from providers.base import InstanceRef, InstanceSpec, InstanceState, ProviderError, SnapshotRef, SnapshotSpec
from providers.qemu import QemuProvider, accel
from providers.qemu.config import QemuConfig
from providers.qemu.image import recipe
from providers.qemu.provider import qcow2_backing
from tests.vm.conftest import qemu_config


@pytest.fixture
def qemu(tmp_path, qemu_image, qemu_network):
    provider = QemuProvider(qemu_config(tmp_path / "qemu", qemu_network, shutdown_grace=1.0))
    yield provider
    for resource in provider.list_managed():
        if resource.kind == "instance":
            provider.delete_instance(InstanceRef(resource.instance_id, resource.region))


def spec(ssh_keypair, **overrides) -> InstanceSpec:
    values = dict(instance_id=new_instance_id(), owner="alice", name="box", region="local", zone=None,
                  machine_type="small", ssh_user="alice", ssh_public_key=ssh_keypair.public, disk_gb=20,
                  image="debian-12")
    values.update(overrides)
    return InstanceSpec(**values)


def test_a_restarted_onebox_finds_the_vm_again(qemu, ssh_keypair):
    s = spec(ssh_keypair)
    qemu.create_instance(s)
    inst = qemu.instances_dir / s.instance_id
    (pid,) = qemu._pids(inst)
    again = QemuProvider(qemu.config)  # a new process would build a new provider on the same directory
    assert again.get_instance(s.ref).state == InstanceState.RUNNING
    assert again.create_instance(s).cloud_id == str(inst)
    assert again._pids(inst) == [pid], "resumed, not started twice"
    assert os.getsid(pid) != os.getsid(0), "the VM runs in a session of its own: it outlives onebox"


def test_a_half_made_instance_is_made_again(qemu, ssh_keypair):
    s = spec(ssh_keypair)
    inst = qemu.instances_dir / s.instance_id
    inst.mkdir(parents=True)
    (inst / "disk.qcow2.partial").write_bytes(b"left by a killed create")
    assert [r.instance_id for r in qemu.list_managed()] == [s.instance_id], "listed, so the reaper can remove it"
    qemu.create_instance(s)
    assert not (inst / "disk.qcow2.partial").exists()
    assert qemu.wait_running(s.ref, 60).state == InstanceState.RUNNING


def test_a_port_taken_before_qemu_binds_it_is_replaced(qemu, ssh_keypair, monkeypatch):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = qemu._free_port
    calls = []

    def racy(ports):  # the port looked free when it was picked; someone took it before QEMU started
        calls.append(ports)
        return taken if len(calls) == 1 else real(ports)

    monkeypatch.setattr(qemu, "_free_port", racy)
    try:
        s = spec(ssh_keypair)
        info = qemu.create_instance(s)
        assert info.ssh_port != taken and len(calls) == 2
        assert json.loads((qemu.instances_dir / s.instance_id / "instance.json").read_text())["ssh_port"] == info.ssh_port
        assert qemu.wait_running(s.ref, 60).ssh_port == info.ssh_port
    finally:
        squatter.close()


def test_snapshot_of_a_stopped_vm_then_start_it_on_its_new_top_layer(qemu, ssh_keypair):
    s = spec(ssh_keypair)
    qemu.create_instance(s)
    qemu.stop_instance(s.ref, 60)
    inst = qemu.instances_dir / s.instance_id
    snap = qemu.create_snapshot(SnapshotSpec("s-" + s.instance_id[2:], "alice", "cold", s.ref))
    layer = inst / f"disk-{snap.snapshot_id}.qcow2"
    assert qcow2_backing(layer) == inst / "disk.qcow2" and qemu.active_disk(inst) == layer
    started = qemu.start_instance(s.ref, 60)
    assert started.state == InstanceState.RUNNING
    (pid,) = qemu._pids(inst)
    assert f"file={layer}," in open(f"/proc/{pid}/cmdline").read().replace("\0", " "), "it runs on the top layer"
    child = spec(ssh_keypair, image=None, snapshot=SnapshotRef(snap.snapshot_id, "local", snap.cloud_id))
    qemu.create_instance(child)
    assert qcow2_backing(qemu.instances_dir / child.instance_id / "disk.qcow2") is None, "a standalone copy"
    qemu.delete_snapshot(SnapshotRef(snap.snapshot_id, "local"))
    assert qemu.wait_running(child.ref, 60).state == InstanceState.RUNNING, "deleting the snapshot breaks nothing"


def test_a_vm_whose_qemu_died_fails_to_run_with_its_console(qemu, ssh_keypair):
    s = spec(ssh_keypair)
    qemu.create_instance(s)
    inst = qemu.instances_dir / s.instance_id
    (pid,) = qemu._pids(inst)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ProviderError) as failed:
        qemu.wait_running(s.ref, 60)
    assert failed.value.code == "vm_failed" and not failed.value.retryable
    assert "console" in failed.value.message
    assert qemu.get_instance(s.ref).state == InstanceState.STOPPED


def seed_probe(provider: QemuProvider, kernel, works: bool, reason: str = "") -> None:
    key = accel.probe_key(provider.qemu_binary(), kernel)
    (provider.root).mkdir(parents=True, exist_ok=True)
    (provider.root / "accel.json").write_text(json.dumps({"key": key, "works": works, "reason": reason}))


def test_the_accelerator_follows_the_probe_and_the_setting(tmp_path, qemu_image, qemu_network):
    kernel = qemu_image.kernel
    auto = QemuProvider(qemu_config(tmp_path / "a", qemu_network, accel="auto"))
    seed_probe(auto, kernel, False, "KVM internal error")
    chosen = auto.accelerator(kernel)
    assert (chosen.name, chosen.reason) == ("tcg", "KVM cannot run a guest here: KVM internal error")
    assert "TCG" in auto._notice(chosen) and "KVM internal error" in auto._notice(chosen)

    forced = QemuProvider(qemu_config(tmp_path / "b", qemu_network, accel="kvm"))
    seed_probe(forced, kernel, False, "no /dev/kvm")
    with pytest.raises(ProviderError) as refused:
        forced.accelerator(kernel)
    assert refused.value.code == "kvm_unusable" and "no /dev/kvm" in refused.value.message

    working = QemuProvider(qemu_config(tmp_path / "c", qemu_network, accel="auto"))
    seed_probe(working, kernel, True)
    assert working.accelerator(kernel).name == "kvm"
    assert QemuProvider(qemu_config(tmp_path / "d", qemu_network, accel="tcg")).accelerator(kernel).name == "tcg"


def test_the_probe_tells_a_running_guest_kernel_from_none(qemu_image):
    qemu = shutil.which("qemu-system-x86_64")
    # TCG always runs the kernel (slowly): what a working KVM looks like to the probe.
    assert accel.probe(qemu, qemu_image.kernel, "tcg", timeout=600) == accel.Probe(True, "")
    assert not accel.probe(qemu, qemu_image.kernel, "kvm", device="/nonexistent/kvm").works
    not_a_kernel = qemu_image.directory / "image.json"
    assert not accel.probe(qemu, not_a_kernel, "tcg", timeout=60).works


def test_the_image_recipe_names_the_image(tmp_path):
    scripts = tmp_path / "recipe"
    shutil.copytree(QemuConfig(root=tmp_path).build_script.parent, scripts)
    before = recipe(scripts / "build.sh")
    assert recipe(scripts / "build.sh") == before
    with open(scripts / "customize.sh", "a") as f:
        f.write("# one more package\n")
    assert recipe(scripts / "build.sh") != before, "a changed recipe builds a new image next to the old one"
    result = subprocess.run([str(scripts / "build.sh"), "windows-95", str(tmp_path / "out")], capture_output=True,
                            text=True)
    assert result.returncode == 2 and "unknown image alias" in result.stderr


def test_the_seed_carries_the_shared_cloud_config_verbatim(qemu, ssh_keypair):
    from providers.cloudinit import cloud_config

    admin = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOneboxAdminKeyForConfigurationOnly000000000 onebox-configure"
    s = spec(ssh_keypair, admin_ssh_public_key=admin, name="seeded")
    qemu.create_instance(s)
    iso = str(qemu.instances_dir / s.instance_id / "seed.iso")
    assert "Volume id: cidata" in subprocess.run(["isoinfo", "-d", "-i", iso], capture_output=True, text=True).stdout

    def read(name: str) -> str:
        return subprocess.run(["isoinfo", "-R", "-i", iso, "-x", f"/{name}"], capture_output=True, text=True,
                              check=True).stdout

    assert read("user-data") == cloud_config(s)
    assert json.loads(read("meta-data")) == {"instance-id": s.instance_id, "local-hostname": "seeded"}
    private = json.loads(read("network-config"))["ethernets"]["private"]
    assert private["addresses"] == [qemu.get_instance(s.ref).private_ip + "/24"]
