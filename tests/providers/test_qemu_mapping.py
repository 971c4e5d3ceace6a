"""The qemu provider's pure parts: sizes, names, addresses, documents and QEMU's command line.

No VM runs here; ``tests/vm`` boots real ones.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from providers.base import InstanceState
from providers.qemu.config import QemuConfig
from providers.qemu.mapping import (
    FAILED_RUN_STATES,
    MACHINE_TYPES,
    STATUS_MAP,
    Accelerator,
    LaunchPlan,
    guest_url,
    mac_address,
    memory_mib,
    meta_data,
    network_config,
    private_addresses,
    qemu_argv,
)
from providers.qemu.provider import qcow2_backing


def test_machine_types_are_sizes_a_laptop_can_run():
    assert {(m.vcpus, memory_mib(m)) for m in MACHINE_TYPES.values()} == {(1, 1024), (2, 2048), (4, 4096), (8, 8192)}
    assert all(m.hourly_usd == 0.0 and m.gpu_count == 0 for m in MACHINE_TYPES.values())


def test_macs_are_stable_unicast_and_differ_per_nic_and_instance():
    mac = mac_address("i-abc", "user")
    assert mac == mac_address("i-abc", "user")
    assert mac.startswith("52:54:00:") and len(mac.split(":")) == 6
    assert len({mac, mac_address("i-abc", "private"), mac_address("i-abd", "user")}) == 3


@pytest.mark.parametrize("url, seen", [
    ("http://127.0.0.1:8000", "http://10.0.2.2:8000"),
    ("http://localhost:8000/", "http://10.0.2.2:8000/"),
    ("http://127.0.0.5:9000/onebox", "http://10.0.2.2:9000/onebox"),
    ("http://[::1]:8000", "http://10.0.2.2:8000"),
    ("https://onebox.example.com", "https://onebox.example.com"),
    ("http://192.168.1.20:8000", "http://192.168.1.20:8000"),
])
def test_the_guest_reaches_the_hosts_loopback_at_the_gateway(url, seen):
    assert guest_url(url) == seen


def test_private_addresses_leave_the_first_ten_out():
    addresses = private_addresses("10.77.0.0/24")
    assert addresses[0] == "10.77.0.10" and addresses[-1] == "10.77.0.254" and len(addresses) == 245


def test_nocloud_documents():
    assert json.loads(meta_data("i-1", "box")) == {"instance-id": "i-1", "local-hostname": "box"}
    doc = json.loads(network_config("52:54:00:00:00:01", "52:54:00:00:00:02", "10.77.0.12", 24))
    assert doc["version"] == 2
    assert doc["ethernets"]["user"] == {"match": {"macaddress": "52:54:00:00:00:01"}, "set-name": "eth0",
                                        "dhcp4": True}
    assert doc["ethernets"]["private"]["addresses"] == ["10.77.0.12/24"]


def test_run_states():
    assert STATUS_MAP["running"] == InstanceState.RUNNING
    assert STATUS_MAP["prelaunch"] == InstanceState.PENDING
    assert STATUS_MAP["shutdown"] == InstanceState.STOPPING
    assert not FAILED_RUN_STATES & set(STATUS_MAP), "a failed state is never mapped to a live one"


def plan(tmp_path: Path) -> LaunchPlan:
    return LaunchPlan(instance_id="i-1", vcpus=2, memory_mib=2048, kernel=tmp_path / "vmlinuz",
                      initrd=tmp_path / "initrd.img", disk=tmp_path / "disk.qcow2", seed=tmp_path / "seed.iso",
                      ssh_port=10022, user_mac="52:54:00:00:00:01", private_mac="52:54:00:00:00:02",
                      private_mcast="230.0.77.1:17701", pidfile=tmp_path / "qemu.pid",
                      console=tmp_path / "console.log", qmp="qmp.sock")


def test_command_line_under_tcg(tmp_path):
    argv = qemu_argv("/usr/bin/qemu-system-x86_64", plan(tmp_path), Accelerator("tcg", "no KVM", 128))
    line = " ".join(argv)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=multi,tb-size=128"
    assert argv[argv.index("-cpu") + 1] == "qemu64"
    assert argv[argv.index("-smp") + 1] == "2" and argv[argv.index("-m") + 1] == "2048"
    assert "mitigations=off" in argv[argv.index("-append") + 1]
    assert "hostfwd=tcp:127.0.0.1:10022-:22" in line, "SSH only on the host's loopback"
    assert "mcast=230.0.77.1:17701,localaddr=127.0.0.1" in line
    assert f"-pidfile {tmp_path / 'qemu.pid'}" in line, "the pidfile path is how the process is found again"
    assert argv[-1] == "-daemonize"


def test_command_line_under_kvm(tmp_path):
    argv = qemu_argv("qemu", plan(tmp_path), Accelerator("kvm"))
    assert argv[argv.index("-accel") + 1] == "kvm" and argv[argv.index("-cpu") + 1] == "host"


def test_config_refuses_what_cannot_work(tmp_path):
    QemuConfig(root=tmp_path)
    for bad in ({"accel": "xen"}, {"ssh_port_first": 80}, {"ssh_port_first": 2000, "ssh_port_last": 1999},
                {"private_mcast": "10.0.0.1:1234"}, {"private_mcast": "230.0.0.1"},
                {"private_network": "10.77.0.0/29"}):
        with pytest.raises(ValueError):
            QemuConfig(root=tmp_path, **bad)
    assert QemuConfig(root=tmp_path).image_dir == tmp_path / "images"


def qcow2_header(backing: bytes) -> bytes:
    header = b"QFI\xfb" + struct.pack(">I", 3) + struct.pack(">QI", 104 if backing else 0, len(backing))
    return header.ljust(104, b"\0") + backing


def test_backing_file_is_read_from_the_qcow2_header(tmp_path):
    (tmp_path / "top.qcow2").write_bytes(qcow2_header(b"/images/base.qcow2"))
    (tmp_path / "rel.qcow2").write_bytes(qcow2_header(b"disk.qcow2"))
    (tmp_path / "base.qcow2").write_bytes(qcow2_header(b""))
    assert qcow2_backing(tmp_path / "top.qcow2") == Path("/images/base.qcow2")
    assert qcow2_backing(tmp_path / "rel.qcow2") == tmp_path / "disk.qcow2"
    assert qcow2_backing(tmp_path / "base.qcow2") is None


def test_configuration_sees_a_qemu_guest_as_it_is():
    from app.configure.service import KEYSCAN_TIMEOUT, agent_url, ssh_patience
    from app.settings import Settings

    settings = Settings(public_url="http://127.0.0.1:8000", qemu_boot_timeout_seconds=900)
    assert agent_url(settings, "qemu") == "http://10.0.2.2:8000", "the agent posts through the user network"
    assert agent_url(settings, "aws") == "http://127.0.0.1:8000"
    assert agent_url(settings.model_copy(update={"qemu_agent_url": "http://gw:8000"}), "qemu") == "http://gw:8000"
    assert ssh_patience(settings, "qemu").wait == 900 and ssh_patience(settings, "qemu").connect >= 60
    assert ssh_patience(settings, "gcp").wait == KEYSCAN_TIMEOUT and ssh_patience(settings, "gcp").connect == 15
