"""The qemu provider: real Linux VMs on this machine, one QEMU process each.

Layout under ``root`` (``.data/qemu`` for ``make run``)::

    images/<alias>/                  the base image (see ``image``), shared, never written
    instances/<instance-id>/         one VM (mode 0700: its disk is the user's data)
        instance.json                tags and everything the VM is started with; written last
        disk.qcow2                   its disk: an overlay on the base image, or a copy of a snapshot
        disk-<snapshot-id>.qcow2     the layer written to after that live snapshot (the top one is live)
        vmlinuz, initrd.img          what it boots (direct kernel boot)
        seed.iso                     the NoCloud seed: ``providers.cloudinit``'s user data
        qemu.pid, qmp.sock, console.log
    snapshots/<snapshot-id>/         disk.qcow2 (flattened), vmlinuz, initrd.img, snapshot.json (last)

Every VM is its own daemonized QEMU process in a session of its own, so it
outlives onebox like a cloud VM outlives a crashed control plane. It is found
again by the ``-pidfile`` path in its command line (which names the instance),
never by a recorded pid alone, so a restarted onebox resumes it instead of
starting a second one. Creates take the provider's lock (``.lock``) while
they allocate a port and an address and start the process.

Networking: the first NIC is QEMU's user-mode network, with the guest's port
22 forwarded from ``127.0.0.1:<ssh_port>`` (``public_ip``/``ssh_port``), and the
host's loopback reachable from the guest at 10.0.2.2 (how the agent reaches
onebox). The second NIC joins a multicast socket on loopback shared by every
instance: a private L2 network, with a static ``private_ip`` per instance.

"running" means what it means on the clouds: QEMU runs the VM and its
addresses are known. The guest's sshd comes up later (a boot under TCG takes
about a minute); the configure step waits for it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from providers.base import (
    DEPLOYMENT_TAG,
    INSTANCE_ID_TAG,
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
    SNAPSHOT_ID_TAG,
    Catalog,
    CapacityError,
    InstanceInfo,
    InstanceRef,
    InstanceSpec,
    InstanceState,
    InvalidRequest,
    ManagedResource,
    NotFound,
    ProviderError,
    Region,
    SnapshotInfo,
    SnapshotRef,
    SnapshotSpec,
    SnapshotState,
    listed_for,
    managed_tags,
)
from providers.cloudinit import cloud_config
from providers.qemu import accel as accel_probe
from providers.qemu import image as images
from providers.qemu.config import QemuConfig
from providers.qemu.errors import QmpError, QmpUnavailable, ToolMissing, command_failed, os_failed, tail
from providers.qemu.mapping import (
    DEFAULT_IMAGE,
    FAILED_RUN_STATES,
    IMAGE_ALIASES,
    MACHINE_TYPES,
    REGION,
    STATUS_MAP,
    ZONE,
    Accelerator,
    LaunchPlan,
    mac_address,
    memory_mib,
    meta_data,
    network_config,
    private_addresses,
    qemu_argv,
)
from providers.qemu.qmp import Qmp
from providers.qemu.seed import write_seed

log = logging.getLogger("onebox.qemu")

META = "instance.json"
SNAPSHOT_META = "snapshot.json"
PIDFILE = "qemu.pid"
QMP_SOCKET = "qmp.sock"
CONSOLE = "console.log"
PUBLIC_IP = "127.0.0.1"
LAUNCH_ATTEMPTS = 5  # a port found free may be taken before QEMU binds it


def _write_json(path: Path, data: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(partial, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def qcow2_backing(path: Path) -> Path | None:
    """The backing file named in a qcow2 header (read directly: cheap, and no image lock needed)."""
    with open(path, "rb") as f:
        header = f.read(20)
        if len(header) < 20 or header[:4] != b"QFI\xfb":
            raise ProviderError(f"{path.name} is not a qcow2 image")
        offset, size = struct.unpack(">QI", header[8:20])
        if not offset or not size:
            return None
        f.seek(offset)
        name = Path(f.read(size).decode())
    return name if name.is_absolute() else path.parent / name


def process_running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


class QemuProvider:
    """Instances as QEMU processes on this machine; see the module docstring."""

    name = "qemu"

    def __init__(self, config: QemuConfig) -> None:
        self.config = config
        self.root = Path(config.root).resolve()
        self.instances_dir = self.root / "instances"
        self.snapshots_dir = self.root / "snapshots"
        self.image_dir = Path(config.image_dir).resolve()
        self._accel: Accelerator | None = None
        self._accel_lock = threading.Lock()

    # --- catalog -------------------------------------------------------------
    def catalog(self) -> Catalog:
        self.qemu_binary()  # not installed: the catalog says so, and nothing is queued
        return Catalog(regions={REGION: Region(REGION, (ZONE,), MACHINE_TYPES)}, images=IMAGE_ALIASES)

    def qemu_binary(self) -> str:
        if self.config.qemu_binary:
            if not os.access(self.config.qemu_binary, os.X_OK):
                raise ToolMissing(f"{self.config.qemu_binary} is not an executable QEMU; `make qemu` installs one")
            return self.config.qemu_binary
        return images.tool("qemu-system-x86_64")

    # --- paths, locks and bookkeeping ----------------------------------------
    def _dir(self, instance_id: str) -> Path:
        if not instance_id or "/" in instance_id or instance_id.startswith("."):
            raise InvalidRequest(f"bad instance id {instance_id!r}")
        return self.instances_dir / instance_id

    def _snapshot_dir(self, snapshot_id: str) -> Path:
        if not snapshot_id or "/" in snapshot_id or snapshot_id.startswith("."):
            raise InvalidRequest(f"bad snapshot id {snapshot_id!r}")
        return self.snapshots_dir / snapshot_id

    @contextlib.contextmanager
    def _lock(self):
        with images.file_lock(self.root / ".lock"):
            yield

    def _meta(self, inst: Path) -> dict[str, Any] | None:
        return _read_json(inst / META)

    def _pids(self, inst: Path) -> list[int]:
        """Every QEMU process of this instance, by the pidfile path in its command line."""
        return self._pidfiles().get(str(inst / PIDFILE), [])

    @staticmethod
    def _pidfiles() -> dict[str, list[int]]:
        """The live QEMU processes on this host by their ``-pidfile`` argument (one pass over /proc)."""
        found: dict[str, list[int]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if b"-pidfile" in args[:-1] and process_running(int(entry.name)):
                pidfile = args[args.index(b"-pidfile") + 1].decode(errors="replace")
                found.setdefault(pidfile, []).append(int(entry.name))
        return found

    def _recorded(self, key: str) -> set:
        """``key`` of every instance's metadata (ports and addresses are theirs even while stopped)."""
        if not self.instances_dir.exists():
            return set()
        return {(self._meta(inst) or {}).get(key) for inst in self.instances_dir.iterdir()}

    def _ports_taken(self) -> set:
        return self._recorded("ssh_port")

    def _allocate(self) -> tuple[int, str]:
        """A free SSH port and a free private address (called under the lock)."""
        addresses = self._recorded("private_ip")
        address = next((a for a in private_addresses(self.config.private_network) if a not in addresses), None)
        if address is None:
            raise CapacityError(f"no free address left on the private network {self.config.private_network}")
        return self._free_port(self._ports_taken()), address

    @staticmethod
    def _port_free(port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((PUBLIC_IP, port))
            except OSError:
                return False  # something else listens there
        return True

    def _free_port(self, taken: set) -> int:
        for port in range(self.config.ssh_port_first, self.config.ssh_port_last + 1):
            if port not in taken and self._port_free(port):
                return port
        raise CapacityError(f"no free port for SSH in {self.config.ssh_port_first}-{self.config.ssh_port_last}")

    # --- the accelerator -----------------------------------------------------
    def accelerator(self, kernel: Path) -> Accelerator:
        """KVM if it runs a guest (probed once), else TCG; ``ONEBOX_QEMU_ACCEL`` may force either."""
        with self._accel_lock:
            if self._accel is not None:
                return self._accel
            tb = self.config.tb_size_mb
            if self.config.accel == "tcg":
                chosen = Accelerator("tcg", "TCG was asked for (ONEBOX_QEMU_ACCEL=tcg)", tb)
            else:
                found = accel_probe.cached_probe(self.root / "accel.json", self.qemu_binary(), kernel)
                if found.works:
                    chosen = Accelerator("kvm", "", tb)
                elif self.config.accel == "kvm":
                    raise ProviderError(f"KVM was asked for (ONEBOX_QEMU_ACCEL=kvm) but cannot run a guest here: "
                                        f"{found.reason}", code="kvm_unusable")
                else:
                    chosen = Accelerator("tcg", f"KVM cannot run a guest here: {found.reason}", tb)
            log.info("qemu: accelerator %s %s", chosen.name, chosen.reason)
            self._accel = chosen
            return chosen

    @staticmethod
    def _notice(accel: Accelerator) -> str:
        if accel.name == "kvm":
            return "the VM runs with KVM (hardware virtualization)"
        return (f"the VM runs under TCG software emulation, which is slow: a boot takes a minute or more "
                f"({accel.reason})")

    # --- creating and starting ----------------------------------------------
    def create_instance(self, spec: InstanceSpec) -> InstanceInfo:
        machine = MACHINE_TYPES.get(spec.machine_type)
        if machine is None:
            raise InvalidRequest(f"unknown machine type {spec.machine_type!r}; known: {', '.join(MACHINE_TYPES)}")
        if spec.region != REGION or spec.zone not in (None, ZONE):
            raise InvalidRequest(f"the qemu provider has one region and zone: {REGION}")
        if spec.snapshot is None and (spec.image or DEFAULT_IMAGE) not in IMAGE_ALIASES:
            raise InvalidRequest(f"unknown image {spec.image!r} for qemu; known: {', '.join(IMAGE_ALIASES)}")
        if "\n" in spec.ssh_public_key.strip():
            raise InvalidRequest("ssh_public_key must be one OpenSSH key line")
        inst = self._dir(spec.instance_id)
        base, built = None, ""
        if self._meta(inst) is not None:
            kernel = inst / images.KERNEL
        elif spec.snapshot is not None:
            kernel = images.BootFiles(self._snapshot_dir(spec.snapshot.snapshot_id)).kernel
        else:
            # Minutes the first time on a machine (outside the provider's lock: other VMs keep going).
            started = time.monotonic()
            base = images.base_image(self.image_dir, spec.image or DEFAULT_IMAGE, self.config.build_script,
                                     self.config.build_timeout)
            if time.monotonic() - started > 10:
                built = f"the {spec.image or DEFAULT_IMAGE} guest image was built first " \
                        f"({time.monotonic() - started:.0f}s, once per machine and recipe)"
            kernel = base.kernel
        accel = self.accelerator(kernel) if kernel.exists() else None
        with self._lock():
            meta = self._meta(inst)
            if meta is None:
                if inst.exists():
                    shutil.rmtree(inst)  # a create that died half-way: redo it from scratch
                self.instances_dir.mkdir(parents=True, exist_ok=True)
                try:
                    meta = self._make_instance(inst, spec, machine, base)
                except BaseException:
                    shutil.rmtree(inst, ignore_errors=True)
                    raise
            accel = accel or self.accelerator(inst / images.KERNEL)
            if not self._pids(inst):
                meta = self._launch(inst, meta, accel)
        return self._info(inst, meta, InstanceState.PENDING, accel, built=built)

    def _make_instance(self, inst: Path, spec: InstanceSpec, machine, base: images.BootFiles | None) -> dict[str, Any]:
        inst.mkdir(mode=0o700)
        timeout = self.config.command_timeout
        try:
            if spec.snapshot is not None:
                source = images.BootFiles(self._snapshot_dir(spec.snapshot.snapshot_id))
                if not (source.directory / SNAPSHOT_META).is_file():
                    raise NotFound(f"qemu snapshot {spec.snapshot.snapshot_id} does not exist")
                images.copy_disk(source.disk, inst / images.DISK, spec.disk_gb, timeout)
                origin = {"snapshot": spec.snapshot.snapshot_id}
            else:
                assert base is not None
                source = base
                images.create_overlay(base.disk, inst / images.DISK, spec.disk_gb, timeout)
                origin = {"image": spec.image or DEFAULT_IMAGE, "base": str(base.disk)}
            images.link_or_copy(source.kernel, inst / images.KERNEL)
            images.link_or_copy(source.initrd, inst / images.INITRD)
        except OSError as exc:
            raise os_failed("prepare the instance's disk", exc) from exc
        ssh_port, private_ip = self._allocate()
        user_mac, private_mac = mac_address(spec.instance_id, "user"), mac_address(spec.instance_id, "private")
        write_seed(inst / "seed.iso", cloud_config(spec), meta_data(spec.instance_id, spec.name),
                   network_config(user_mac, private_mac, private_ip, self.config.private_prefix))
        meta = {
            "tags": {**spec.labels, **managed_tags(spec.instance_id, spec.owner, self.config.deployment)},
            "name": spec.name,
            "ssh_user": spec.ssh_user,
            "machine_type": spec.machine_type,
            "vcpus": machine.vcpus,
            "memory_mib": memory_mib(machine),
            "disk_gb": spec.disk_gb,
            "origin": origin,
            "ssh_port": ssh_port,
            "private_ip": private_ip,
            "user_mac": user_mac,
            "private_mac": private_mac,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        }
        _write_json(inst / META, meta)  # last: an instance directory without it is a half-made one
        return meta

    def active_disk(self, inst: Path) -> Path:
        """The top of the instance's chain of disk layers: the one no other layer is backed by."""
        layers = sorted(inst.glob("disk*.qcow2"))
        below = {qcow2_backing(layer) for layer in layers}
        tops = [layer for layer in layers if layer not in below]
        if len(tops) != 1:
            raise ProviderError(f"the disk layers of {inst.name} do not form one chain: {[p.name for p in tops]}")
        return tops[0]

    def _launch(self, inst: Path, meta: dict[str, Any], accel: Accelerator,
                reallocate_port: bool = False) -> dict[str, Any]:
        """Start the instance's QEMU process (called under the lock); returns the metadata it used.

        ``reallocate_port``: a stopped instance's port may have been taken meanwhile; it gets a
        free one (start returns it, and the engine records it)."""
        with contextlib.suppress(FileNotFoundError):
            (inst / QMP_SOCKET).unlink()  # a stale socket from a process that died
        if reallocate_port and not self._port_free(meta["ssh_port"]):
            meta = {**meta, "ssh_port": self._free_port(self._ports_taken() | {meta["ssh_port"]})}
            _write_json(inst / META, meta)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
        for attempt in range(LAUNCH_ATTEMPTS):
            plan = LaunchPlan(
                instance_id=inst.name, vcpus=meta["vcpus"], memory_mib=meta["memory_mib"],
                kernel=inst / images.KERNEL, initrd=inst / images.INITRD, disk=self.active_disk(inst),
                seed=inst / "seed.iso", ssh_port=meta["ssh_port"], user_mac=meta["user_mac"],
                private_mac=meta["private_mac"], private_mcast=self.config.private_mcast,
                pidfile=inst / PIDFILE, console=inst / CONSOLE, qmp=QMP_SOCKET,
            )
            try:
                # -daemonize: QEMU returns once the VM runs (or says why it cannot); its child lives
                # on in a session of its own, outliving this worker.
                subprocess.run(qemu_argv(self.qemu_binary(), plan, accel), cwd=inst, env=env, check=True,
                               capture_output=True, text=True, timeout=120, start_new_session=True,
                               stdin=subprocess.DEVNULL)
            except subprocess.CalledProcessError as exc:
                if "host forwarding" in (exc.stderr or "") and attempt + 1 < LAUNCH_ATTEMPTS:
                    meta = {**meta, "ssh_port": self._free_port(self._ports_taken() | {meta["ssh_port"]})}
                    _write_json(inst / META, meta)
                    continue
                raise command_failed("start the VM", exc) from exc
            except subprocess.TimeoutExpired as exc:
                raise command_failed("start the VM", exc) from exc
            meta = {**meta, "accelerator": accel.name}
            _write_json(inst / META, meta)
            return meta
        raise ProviderError("could not start the VM: no free SSH port could be bound", retryable=True)

    # --- reading -------------------------------------------------------------
    def run_state(self, inst: Path) -> str | None:
        """QEMU's run state ("running", "shutdown", …); None when no process runs the instance."""
        if not self._pids(inst):
            return None
        try:
            with Qmp(inst, QMP_SOCKET) as qmp:
                return str(qmp.execute("query-status")["status"])
        except QmpUnavailable:
            return "starting" if self._pids(inst) else None

    def _info(self, inst: Path, meta: dict[str, Any], state: InstanceState, accel: Accelerator | None = None,
              run_state: str | None = None, built: str = "") -> InstanceInfo:
        """``accel`` is given by a create: its notice (and ``built``, an image built on the way) becomes
        an instance event."""
        extra = {"accelerator": (accel.name if accel else meta.get("accelerator")) or "", "run_state": run_state or ""}
        if accel is not None:
            extra["notice"] = "; ".join(filter(None, (built, self._notice(accel))))
        return InstanceInfo(
            instance_id=inst.name, cloud_id=str(inst), state=state, region=REGION, zone=ZONE,
            public_ip=PUBLIC_IP, private_ip=meta["private_ip"], ssh_port=meta["ssh_port"],
            extra={k: v for k, v in extra.items() if v},
        )

    def get_instance(self, ref: InstanceRef) -> InstanceInfo:
        inst = self._dir(ref.instance_id)
        meta = self._meta(inst)
        if meta is None:
            raise NotFound(f"qemu instance {ref.instance_id} does not exist")
        run_state = self.run_state(inst)
        if run_state is None:
            state = InstanceState.STOPPED
        elif run_state == "starting":
            state = InstanceState.PENDING
        else:
            state = STATUS_MAP.get(run_state, InstanceState.UNKNOWN)
        return self._info(inst, meta, state, run_state=run_state)

    def wait_running(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        inst = self._dir(ref.instance_id)
        deadline = time.monotonic() + timeout
        while True:
            info = self.get_instance(ref)
            if info.state == InstanceState.RUNNING:
                return info
            run_state = info.extra.get("run_state")
            if run_state in FAILED_RUN_STATES or run_state is None:
                what = f"stopped in QEMU's state {run_state}" if run_state else "has no QEMU process"
                raise ProviderError(f"the VM {what}; its console ended with: {self.console_tail(inst)}",
                                    code="vm_failed")
            if time.monotonic() > deadline:
                raise ProviderError(f"the VM of {ref.instance_id} did not run within {timeout:.0f}s "
                                    f"(QEMU says {run_state})", retryable=True)
            time.sleep(self.config.poll_interval)

    def console_tail(self, inst: Path, limit: int = 400) -> str:
        try:
            with open(inst / CONSOLE, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(f.tell() - 4 * limit, 0))
                return tail(f.read(), limit) or "(nothing)"
        except OSError:
            return "(no console log)"

    # --- deleting ------------------------------------------------------------
    def delete_instance(self, ref: InstanceRef) -> None:
        inst = self._dir(ref.instance_id)
        with self._lock():
            self._end_processes(inst)
            if inst.exists():
                shutil.rmtree(inst, ignore_errors=True)
        if inst.exists() or self._pids(inst):
            raise ProviderError(f"qemu instance {ref.instance_id} is not gone yet", retryable=True)

    def _end_processes(self, inst: Path, grace: float = 10.0) -> None:
        """End every QEMU process of the instance (the emulator only: the guest gets no shutdown)."""
        pids = self._pids(inst)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                pids = [p for p in pids if process_running(p)]
                if not pids:
                    return
                time.sleep(0.05)

    # --- power ---------------------------------------------------------------
    def _existing(self, ref: InstanceRef) -> tuple[Path, dict[str, Any]]:
        inst = self._dir(ref.instance_id)
        meta = self._meta(inst)
        if meta is None:
            raise NotFound(f"qemu instance {ref.instance_id} does not exist")
        return inst, meta

    @contextlib.contextmanager
    def _power_lock(self, inst: Path):
        """One power verb at a time per instance (across processes), never the provider-wide lock:
        a stop may wait a minute for the guest to shut down."""
        with images.file_lock(inst / "power.lock"):
            yield

    def stop_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        """The guest is asked to power off (ACPI power button) and given ``shutdown_grace`` to do so,
        then QEMU is ended (a power cut); the disk, addresses and SSH port stay the instance's."""
        inst, meta = self._existing(ref)
        deadline = time.monotonic() + timeout
        with self._power_lock(inst):
            grace_until = min(deadline, time.monotonic() + self.config.shutdown_grace)
            pressed = 0.0
            while self._pids(inst) and time.monotonic() < grace_until:
                if time.monotonic() - pressed > 15:  # again: a press early in the boot goes unheard
                    with contextlib.suppress(QmpError):
                        with Qmp(inst, QMP_SOCKET) as qmp:
                            qmp.execute("system_powerdown")
                    pressed = time.monotonic()
                time.sleep(self.config.poll_interval)
            if self._pids(inst):
                log.warning("qemu: %s did not power off within %.0fs; ending its process", ref.instance_id,
                            self.config.shutdown_grace)
                self._end_processes(inst, grace=max(1.0, min(10.0, deadline - time.monotonic())))
            if self._pids(inst):
                raise ProviderError(f"the VM of {ref.instance_id} did not stop within {timeout:.0f}s",
                                    retryable=True, code="timeout")
        return self._info(inst, meta, InstanceState.STOPPED)

    def start_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        """QEMU is started again on the same disk chain; the guest boots what it has (the agent's
        unit included), without cloud-init's first boot (same instance id in the seed)."""
        inst, meta = self._existing(ref)
        deadline = time.monotonic() + timeout
        accel = self.accelerator(inst / images.KERNEL)
        with self._power_lock(inst):
            while self.run_state(inst) == "shutdown":  # being stopped: let that end first
                if time.monotonic() > deadline:
                    raise ProviderError(f"the VM of {ref.instance_id} is still shutting down", retryable=True,
                                        code="timeout")
                time.sleep(self.config.poll_interval)
            with self._lock():
                if not self._pids(inst):
                    meta = self._launch(inst, meta, accel, reallocate_port=True)
        return self.wait_running(ref, max(0.0, deadline - time.monotonic()))

    def reboot_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        """A stop (the guest shuts down cleanly when it can) then a start: a new QEMU process, so
        the VM has booted since the call began whenever it returns."""
        deadline = time.monotonic() + timeout
        self.stop_instance(ref, timeout)
        return self.start_instance(ref, max(0.0, deadline - time.monotonic()))

    # --- snapshots -----------------------------------------------------------
    def _snapshot_info(self, snapshot_id: str) -> SnapshotInfo:
        sdir = self._snapshot_dir(snapshot_id)
        if (sdir / SNAPSHOT_META).is_file():
            return SnapshotInfo(snapshot_id, str(sdir), SnapshotState.AVAILABLE, REGION)
        if sdir.exists():
            return SnapshotInfo(snapshot_id, str(sdir), SnapshotState.CREATING, REGION)
        raise NotFound(f"qemu snapshot {snapshot_id} does not exist")

    def create_snapshot(self, spec: SnapshotSpec) -> SnapshotInfo:
        """A live, crash-consistent snapshot: QEMU moves the VM's writes to a new layer (QMP
        ``blockdev-snapshot-sync``, well under a second), then the frozen layers below it are
        flattened into one standalone qcow2 file while the VM runs on."""
        sdir = self._snapshot_dir(spec.snapshot_id)
        if (sdir / SNAPSHOT_META).is_file():
            return self._snapshot_info(spec.snapshot_id)
        inst = self._dir(spec.instance.instance_id)
        if self._meta(inst) is None:
            raise NotFound(f"qemu instance {spec.instance.instance_id} does not exist")
        layer = inst / f"disk-{spec.snapshot_id}.qcow2"
        with self._lock():
            self._freeze(inst, layer)
            frozen = qcow2_backing(layer)
        assert frozen is not None
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        sdir.mkdir(mode=0o700, exist_ok=True)
        timeout = self.config.command_timeout
        try:
            images.flatten(frozen, sdir / images.DISK, timeout)
            images.link_or_copy(inst / images.KERNEL, sdir / images.KERNEL)
            images.link_or_copy(inst / images.INITRD, sdir / images.INITRD)
        except OSError as exc:
            raise os_failed("copy the disk into the snapshot", exc) from exc
        meta = self._meta(inst) or {}
        tags = {**managed_tags(spec.instance.instance_id, spec.owner, self.config.deployment),
                SNAPSHOT_ID_TAG: spec.snapshot_id}
        _write_json(sdir / SNAPSHOT_META, {"tags": tags, "name": spec.name, "origin": meta.get("origin"),
                                           "created_at": dt.datetime.now(dt.timezone.utc).isoformat()})
        (sdir / images.IMAGE_META).write_text(json.dumps({"snapshot": spec.snapshot_id}))
        return self._snapshot_info(spec.snapshot_id)

    def _freeze(self, inst: Path, layer: Path) -> None:
        """Make ``layer`` the instance's new top layer, so that everything below it stops changing."""
        running = bool(self._pids(inst))
        if layer.exists():
            chain = self._chain(self._live_disk(inst) if running else self.active_disk(inst))
            if layer in chain:
                return  # done before a crash
            layer.unlink()  # made by a call that failed before QEMU switched to it
        if running:
            try:
                with Qmp(inst, QMP_SOCKET, timeout=60) as qmp:
                    qmp.execute("blockdev-snapshot-sync", device="disk0", format="qcow2",
                                **{"snapshot-file": str(layer)})
            except QmpError as exc:
                with contextlib.suppress(FileNotFoundError):
                    if layer not in self._chain(self._live_disk(inst)):
                        layer.unlink()
                raise ProviderError(f"could not snapshot the running VM: {exc.message}",
                                    retryable=isinstance(exc, QmpUnavailable)) from exc
        else:
            top = self.active_disk(inst)
            images.run([images.tool("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(top),
                        str(layer)], "add a layer to the stopped VM's disk", self.config.command_timeout)

    def _live_disk(self, inst: Path) -> Path:
        """The file the running VM writes to, as QEMU says."""
        with Qmp(inst, QMP_SOCKET) as qmp:
            for block in qmp.execute("query-block"):
                if block.get("device") == "disk0" and block.get("inserted"):
                    return Path(block["inserted"]["file"])
        raise ProviderError(f"QEMU of {inst.name} has no disk0")

    @staticmethod
    def _chain(top: Path) -> list[Path]:
        chain, layer = [], top
        while layer is not None and layer.exists():
            chain.append(layer)
            layer = qcow2_backing(layer)
        return chain

    def get_snapshot(self, ref: SnapshotRef) -> SnapshotInfo:
        return self._snapshot_info(ref.snapshot_id)

    def delete_snapshot(self, ref: SnapshotRef) -> None:
        sdir = self._snapshot_dir(ref.snapshot_id)
        shutil.rmtree(sdir, ignore_errors=True)
        if sdir.exists():
            raise ProviderError(f"qemu snapshot {ref.snapshot_id} is not gone yet", retryable=True)

    # --- garbage collection --------------------------------------------------
    def list_managed(self) -> list[ManagedResource]:
        found: list[ManagedResource] = []
        mine = self.config.deployment
        running = self._pidfiles()
        if self.instances_dir.exists():
            for inst in sorted(self.instances_dir.iterdir()):
                if not inst.is_dir():
                    continue
                tags = (self._meta(inst) or {}).get("tags") or {MANAGED_BY_TAG: MANAGED_BY_VALUE,
                                                                 INSTANCE_ID_TAG: inst.name,
                                                                 DEPLOYMENT_TAG: mine}  # half-made, ours
                if not listed_for(tags.get(DEPLOYMENT_TAG), mine):
                    continue
                state = "running" if running.get(str(inst / PIDFILE)) else "stopped"
                found.append(ManagedResource("instance", str(inst), REGION,
                                             instance_id=tags.get(INSTANCE_ID_TAG, inst.name), state=state,
                                             deployment=tags.get(DEPLOYMENT_TAG)))
        if self.snapshots_dir.exists():
            for sdir in sorted(self.snapshots_dir.iterdir()):
                if not sdir.is_dir():
                    continue
                meta = _read_json(sdir / SNAPSHOT_META)
                tags = (meta or {}).get("tags") or {DEPLOYMENT_TAG: mine}  # being made: ours
                if not listed_for(tags.get(DEPLOYMENT_TAG), mine):
                    continue
                found.append(ManagedResource("snapshot", str(sdir), REGION, instance_id=tags.get(INSTANCE_ID_TAG),
                                             snapshot_id=tags.get(SNAPSHOT_ID_TAG, sdir.name),
                                             state="available" if meta else "creating",
                                             deployment=tags.get(DEPLOYMENT_TAG)))
        return found
