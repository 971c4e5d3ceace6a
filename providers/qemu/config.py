"""Settings of the qemu provider: where its VMs and images live, how they run and connect.

``QemuConfig`` is plain data the app builds from its own settings
(``ONEBOX_QEMU_*``) and hands to ``QemuProvider``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from providers.qemu.mapping import private_addresses

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class QemuConfig:
    """How the qemu provider runs its VMs."""

    # instances/<id>/ and snapshots/<id>/ live here (.data/qemu for `make run`).
    root: Path
    # Built guest images, one directory per alias; shared by every onebox on the machine that
    # points here (the tests point at the repository's .data/qemu/images, built once).
    image_dir: Path | None = None  # None = root / "images"
    # kvm when it really runs a guest (probed with a trial boot), else tcg; or forced.
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    tb_size_mb: int = 128  # TCG translation cache per VM
    # SSH of instance N is forwarded from 127.0.0.1:<port>, a free port of this range.
    ssh_port_first: int = 10022
    ssh_port_last: int = 10221
    # The private network between instances: a multicast group on loopback every VM's second NIC
    # joins (one L2 segment), and the subnet their static addresses come from. Two onebox
    # deployments on one machine must not share a group:port.
    private_mcast: str = "230.0.77.1:17701"
    private_network: str = "10.77.0.0/24"
    qemu_binary: str | None = None  # found on PATH when None
    build_script: Path = REPO_ROOT / "tools" / "qemu-image" / "build.sh"
    build_timeout: float = 1800.0  # a first image build downloads ~150 MB of packages
    command_timeout: float = 600.0  # qemu-img, genisoimage, copies of snapshot disks
    shutdown_grace: float = 60.0  # how long a stop waits for the guest to power off before ending QEMU
    poll_interval: float = 0.5
    deployment: str | None = None  # written into each VM's and snapshot's tags; list_managed skips other deployments'

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))
        if self.image_dir is None:
            object.__setattr__(self, "image_dir", self.root / "images")
        else:
            object.__setattr__(self, "image_dir", Path(self.image_dir))
        if self.accel not in ("auto", "kvm", "tcg"):
            raise ValueError("QemuConfig.accel must be auto, kvm or tcg")
        if not 1024 <= self.ssh_port_first <= self.ssh_port_last <= 65535:
            raise ValueError("QemuConfig SSH ports must be a range within 1024-65535")
        group, _, port = self.private_mcast.rpartition(":")
        if not ipaddress.ip_address(group).is_multicast or not port.isdigit():
            raise ValueError("QemuConfig.private_mcast must be <multicast address>:<port>")
        if not private_addresses(self.private_network):
            raise ValueError("QemuConfig.private_network is too small")

    @property
    def private_prefix(self) -> int:
        return ipaddress.ip_network(self.private_network).prefixlen
