"""The qemu provider's vocabulary, as pure data and functions (no process, no file).

Machine types as vCPUs and memory, the image aliases it can build, QEMU's run
states mapped to onebox's, the guest's addresses and MACs derived from the
instance id, the NoCloud meta-data and network-config documents, and the
QEMU command line itself. Everything here is unit-tested without a VM
(``tests/providers/test_qemu_mapping.py``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from providers.base import InstanceState, MachineType

REGION = "local"
ZONE = "local"
DEFAULT_IMAGE = "debian-12"
# Aliases the image builder (tools/qemu-image/build.sh) knows; other portable aliases are refused.
IMAGE_ALIASES: tuple[str, ...] = ("debian-12",)

# name -> size. Memory is what the guest sees; the host pays about 370 MiB of it under TCG
# once booted (README), the rest only when the guest touches it.
MACHINE_TYPES: dict[str, MachineType] = {
    m.name: m for m in (
        MachineType("small", vcpus=1, memory_gb=1.0, hourly_usd=0.0),
        MachineType("medium", vcpus=2, memory_gb=2.0, hourly_usd=0.0),
        MachineType("large", vcpus=4, memory_gb=4.0, hourly_usd=0.0),
        MachineType("xlarge", vcpus=8, memory_gb=8.0, hourly_usd=0.0),
    )
}

# QEMU's RunState (QMP query-status) -> onebox state. A VM whose process is gone is STOPPED.
STATUS_MAP: dict[str, InstanceState] = {
    "prelaunch": InstanceState.PENDING,
    "inmigrate": InstanceState.PENDING,
    "restore-vm": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "paused": InstanceState.STOPPED,
    "suspended": InstanceState.STOPPED,
    "save-vm": InstanceState.STOPPING,
    "finish-migrate": InstanceState.STOPPING,
    "postmigrate": InstanceState.STOPPED,
    "shutdown": InstanceState.STOPPING,
    "debug": InstanceState.UNKNOWN,
    "watchdog": InstanceState.UNKNOWN,
    "colo": InstanceState.UNKNOWN,
}
# Run states the guest never leaves by itself: a VM in one has failed.
FAILED_RUN_STATES = frozenset({"internal-error", "io-error", "guest-panicked"})

# User-mode networking (slirp): the guest is 10.0.2.15 and reaches the host's loopback at the
# gateway, 10.0.2.2; 10.0.2.3 answers DNS. Every VM has its own such network.
USER_NET_GATEWAY = "10.0.2.2"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]", "0.0.0.0"})
KERNEL_ARGS = ("root=/dev/vda", "rw", "console=ttyS0", "mitigations=off", "quiet", "net.ifnames=0")


def memory_mib(machine: MachineType) -> int:
    return int(round(machine.memory_gb * 1024))


def mac_address(instance_id: str, nic: str) -> str:
    """A stable, locally administered unicast MAC for one NIC of one instance."""
    digest = hashlib.sha256(f"{instance_id}/{nic}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def private_addresses(network: str) -> list[str]:
    """The addresses instances may get on the private network (the first ten are left out)."""
    net = ipaddress.ip_network(network)
    hosts = [str(h) for h in net.hosts()]
    return hosts[9:]


def guest_url(url: str, gateway: str = USER_NET_GATEWAY) -> str:
    """``url`` as a guest on user-mode networking reaches it: the host's loopback is the gateway.

    Any other host is left alone: the guest reaches it through the user network's NAT as the
    host itself would.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host not in LOOPBACK_HOSTS and not host.startswith("127."):
        return url
    netloc = gateway + (f":{parts.port}" if parts.port else "")
    if parts.username:
        netloc = parts.username + (f":{parts.password}" if parts.password else "") + "@" + netloc
    return urlunsplit(parts._replace(netloc=netloc))


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data: a new instance id makes cloud-init run its first boot (JSON is YAML)."""
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}) + "\n"


def network_config(user_mac: str, private_mac: str, private_ip: str, private_prefix: int) -> str:
    """NoCloud network-config (version 2): DHCP on the user network, a static private address."""
    doc = {
        "version": 2,
        "ethernets": {
            "user": {"match": {"macaddress": user_mac}, "set-name": "eth0", "dhcp4": True},
            "private": {"match": {"macaddress": private_mac}, "set-name": "eth1",
                        "addresses": [f"{private_ip}/{private_prefix}"]},
        },
    }
    return json.dumps(doc, indent=2) + "\n"


@dataclass(frozen=True)
class Accelerator:
    """How QEMU runs the guest's code."""

    name: str  # "kvm" or "tcg"
    reason: str = ""  # why TCG was chosen, when it was a fallback
    tb_size_mb: int = 128  # TCG's translation cache (QEMU's default of 1 GiB costs that much RSS per VM)

    def args(self) -> list[str]:
        if self.name == "kvm":
            return ["-accel", "kvm", "-cpu", "host"]
        # qemu64: the baseline x86-64 CPU. Cheapest to emulate, and it spares the guest's udev the
        # seconds of loading modules for features it cannot use (measured: 48 s vs 112 s to SSH).
        return ["-accel", f"tcg,thread=multi,tb-size={self.tb_size_mb}", "-cpu", "qemu64"]


@dataclass(frozen=True)
class LaunchPlan:
    """Everything one QEMU process of one instance is started with; paths are absolute."""

    instance_id: str
    vcpus: int
    memory_mib: int
    kernel: Path
    initrd: Path
    disk: Path  # the active (top) qcow2 layer
    seed: Path  # the NoCloud ISO
    ssh_port: int  # on 127.0.0.1, forwarded to the guest's port 22
    user_mac: str
    private_mac: str
    private_mcast: str  # "group:port" of the private network's multicast socket
    pidfile: Path
    console: Path  # the guest's serial console, for diagnostics
    qmp: str  # the QMP socket, relative to the process's working directory (socket paths are short)


def marker(instance_id: str) -> str:
    """The ``-name`` of an instance's QEMU process: how it is found again after a restart."""
    return f"onebox:{instance_id}"


def qemu_argv(binary: str, plan: LaunchPlan, accel: Accelerator) -> list[str]:
    """The QEMU command line of one instance (daemonized: the call returns once the VM runs)."""
    return [
        binary,
        "-name", f"{marker(plan.instance_id)},process=onebox-qemu",
        "-nodefaults", "-no-user-config",
        "-machine", "q35",
        *accel.args(),
        "-smp", str(plan.vcpus),
        "-m", str(plan.memory_mib),
        # Direct kernel boot: no boot loader, no firmware menu, a small initrd.
        "-kernel", str(plan.kernel), "-initrd", str(plan.initrd), "-append", " ".join(KERNEL_ARGS),
        "-drive", f"file={plan.disk},if=virtio,format=qcow2,id=disk0,discard=unmap",
        "-drive", f"file={plan.seed},if=virtio,format=raw,readonly=on,id=seed",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{plan.ssh_port}-:22",
        "-device", f"virtio-net-pci,netdev=net0,mac={plan.user_mac}",
        "-netdev", f"socket,id=net1,mcast={plan.private_mcast},localaddr=127.0.0.1",
        "-device", f"virtio-net-pci,netdev=net1,mac={plan.private_mac}",
        "-display", "none",
        "-serial", f"file:{plan.console}",
        "-qmp", f"unix:{plan.qmp},server=on,wait=off",
        "-pidfile", str(plan.pidfile),
        "-daemonize",
    ]
