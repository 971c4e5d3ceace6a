"""The local provider: onebox's embedded default, a "cloud" made of this machine.

An instance is a real ``sshd`` listening on its own loopback address
(``127.0.0.N``, port 2222 by default), with its own host key and its own
directory as root disk. It lets everything above the provider contract — the
API, the worker, Ansible, the agent — run for real without a cloud account.

Layout under ``root`` (``.data/local`` for ``make run``)::

    instances/<instance-id>/
        etc/      sshd_config, host key, authorized_keys, tags.json, address, session.sh
        disk/     the root disk; home directories live in disk/home/<ssh_user>
        run/      sshd.pid
        log/      sshd.log
    snapshots/<snapshot-id>.tar.gz   an archive of one instance's disk/
    snapshots/<snapshot-id>.json     its tags

How ``ssh_user`` maps to an OS account: sshd cannot log anyone in as an
account the OS does not have, so every local instance accepts exactly one OS
account: the one running onebox (``os_user``). ``ssh_user`` names the home
directory inside the instance's disk (``disk/home/<ssh_user>``), and every
SSH session — interactive, command or sftp — runs through ``session.sh``,
which sets ``HOME`` to it and starts there. So ``~`` is the instance's own
disk: a file written to ``~`` in one instance is absent from every other one,
and present in an instance created from its snapshot.

Instances outlive onebox, as VMs outlive a crashed control plane: sshd is
started in its own session and daemonizes. Every process of an instance
carries ``ONEBOX_LOCAL_INSTANCE=<id>`` in its environment (sshd's listener is
known by its config path as well); that is how a
restarted onebox finds them again (instead of starting a second sshd) and how
``delete_instance`` finds every one of them to stop.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from providers.base import (
    IMAGE_ALIASES,
    INSTANCE_ID_TAG,
    MANAGED_BY_TAG,
    SNAPSHOT_ID_TAG,
    Catalog,
    InstanceInfo,
    InstanceRef,
    InstanceSpec,
    InstanceState,
    MachineType,
    ManagedResource,
    NotFound,
    ProviderError,
    Region,
    SnapshotInfo,
    SnapshotRef,
    SnapshotSpec,
    SnapshotState,
    managed_tags,
)

MARKER_ENV = "ONEBOX_LOCAL_INSTANCE"
LOCAL_REGION = "local"
LOCAL_MACHINE_TYPE = "local"
LOCAL_IMAGE = "local"


def _find_binary(*candidates: str) -> str | None:
    for candidate in candidates:
        if os.path.isabs(candidate) and os.access(candidate, os.X_OK):
            return candidate
        found = shutil.which(candidate, path="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin")
        if found:
            return found
    return None


def process_running(pid: int) -> bool:
    """Alive and not a zombie (a killed session's process may wait a while to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


@dataclass(frozen=True)
class LocalConfig:
    root: Path  # where instances and snapshots live
    ssh_port: int = 2222
    address_first: int = 10  # instances get 127.0.0.<first>..127.0.0.<last>
    address_last: int = 250
    create_delay: float = 0.0  # pretend the cloud takes this long after starting sshd
    os_user: str = field(default_factory=getpass.getuser)
    sshd: str | None = None  # path; found on PATH when None
    sftp_server: str | None = None


class LocalProvider:
    """Instances as sshd processes on loopback addresses; see the module docstring."""

    name = "local"

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.root = Path(config.root).resolve()
        self.instances_dir = self.root / "instances"
        self.snapshots_dir = self.root / "snapshots"
        self.sshd = config.sshd or _find_binary("sshd")
        self.sftp_server = config.sftp_server or _find_binary(
            "/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "sftp-server"
        )

    # --- catalog -------------------------------------------------------------
    def catalog(self) -> Catalog:
        machine = MachineType(LOCAL_MACHINE_TYPE, vcpus=1, memory_gb=1.0, hourly_usd=0.0)  # this machine: free
        return Catalog(
            regions={LOCAL_REGION: Region(LOCAL_REGION, (LOCAL_REGION,), {LOCAL_MACHINE_TYPE: machine})},
            images=(LOCAL_IMAGE, *IMAGE_ALIASES),
        )

    # --- paths and bookkeeping -------------------------------------------
    def _dir(self, instance_id: str) -> Path:
        if not instance_id or "/" in instance_id or instance_id.startswith("."):
            raise ProviderError(f"bad instance id {instance_id!r}")
        return self.instances_dir / instance_id

    @contextlib.contextmanager
    def _lock(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _address(self, inst: Path) -> str | None:
        try:
            return (inst / "etc" / "address").read_text().strip()
        except FileNotFoundError:
            return None

    def _allocate_address(self) -> str:
        used = set()
        if self.instances_dir.exists():
            for inst in self.instances_dir.iterdir():
                address = self._address(inst)
                if address:
                    used.add(address)
        for n in range(self.config.address_first, self.config.address_last + 1):
            address = f"127.0.0.{n}"
            if address in used:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((address, self.config.ssh_port))
                except OSError:
                    continue  # something else (another onebox's instance?) listens there
            return address
        raise ProviderError("no free loopback address for a new local instance", code="capacity")

    # --- processes -----------------------------------------------------------
    def _marked_pids(self, instance_id: str) -> list[int]:
        """Every process of this instance: its sshd, the sessions and whatever they started.

        Sessions and their children carry the marker in their environment. The
        sshd listener is matched by its config path in its command line too:
        sshd writes its process title over its original environment.
        """
        needle = f"{MARKER_ENV}={instance_id}".encode()
        config = str(self._dir(instance_id) / "etc" / "sshd_config").encode()
        pids = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    env = f.read().split(b"\0")
            except OSError:
                continue
            if needle in env or config in cmdline:
                pids.append(int(entry.name))
        return pids

    def _sshd_pid(self, inst: Path) -> int | None:
        try:
            pid = int((inst / "run" / "sshd.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if pid in self._marked_pids(inst.name) else None

    def _listening(self, address: str, timeout: float = 1.0) -> bool:
        try:
            with socket.create_connection((address, self.config.ssh_port), timeout=timeout) as conn:
                conn.settimeout(timeout)
                return conn.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    # --- instance files ----------------------------------------------------
    def _write_instance(self, inst: Path, spec: InstanceSpec, address: str) -> None:
        etc, disk = inst / "etc", inst / "disk"
        for d in (etc, disk, inst / "run", inst / "log"):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(inst, 0o755)
        os.chmod(etc, 0o700)
        if spec.snapshot is not None:
            self._restore(spec.snapshot, disk)
        home = disk / "home" / spec.ssh_user
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"onebox-{spec.instance_id}",
             "-f", str(etc / "ssh_host_ed25519_key")],
            check=True, capture_output=True,
        )
        authorized = etc / "authorized_keys"
        keys = [spec.ssh_public_key.strip()] + ([spec.admin_ssh_public_key.strip()] if spec.admin_ssh_public_key else [])
        authorized.write_text("\n".join(keys) + "\n")
        os.chmod(authorized, 0o600)
        session = etc / "session.sh"
        session.write_text(
            "#!/bin/sh\n"
            f"# onebox local instance {spec.instance_id}: every SSH session runs on this instance's own disk.\n"
            f"{MARKER_ENV}={shlex.quote(spec.instance_id)}; export {MARKER_ENV}\n"
            f"HOME={shlex.quote(str(home))}; export HOME\n"
            f"ONEBOX_DISK={shlex.quote(str(disk))}; export ONEBOX_DISK\n"
            'cd "$HOME" || exit 1\n'
            'if [ -n "$SSH_ORIGINAL_COMMAND" ]; then exec "${SHELL:-/bin/sh}" -c "$SSH_ORIGINAL_COMMAND"; fi\n'
            'exec "${SHELL:-/bin/sh}" -l\n'
        )
        os.chmod(session, 0o755)
        lines = [
            f"ListenAddress {address}:{self.config.ssh_port}",
            f"HostKey {etc / 'ssh_host_ed25519_key'}",
            f"PidFile {inst / 'run' / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            f"AllowUsers {self.config.os_user}",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            "UsePAM no",
            "StrictModes no",
            "PrintMotd no",
            "X11Forwarding no",
            "MaxStartups 50:30:100",
            f"ForceCommand {session}",
        ]
        if self.sftp_server:
            lines.append(f"Subsystem sftp {self.sftp_server}")
        (etc / "sshd_config").write_text("\n".join(lines) + "\n")
        (etc / "tags.json").write_text(json.dumps({**managed_tags(spec.instance_id, spec.owner), **spec.labels,
                                                   "name": spec.name, "ssh_user": spec.ssh_user}))
        # Written last: an instance directory without it is a half-made one to redo.
        (etc / "address").write_text(address + "\n")

    def _start_sshd(self, inst: Path) -> None:
        if not self.sshd:
            raise ProviderError("sshd is not installed; install openssh-server (make does it)", code="sshd_missing")
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MARKER_ENV: inst.name, "LANG": "C.UTF-8"}
        result = subprocess.run(
            [self.sshd, "-f", str(inst / "etc" / "sshd_config"), "-E", str(inst / "log" / "sshd.log")],
            env=env, start_new_session=True, capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = (inst / "log" / "sshd.log").read_text()[-500:]
            raise ProviderError(f"sshd did not start: {(result.stderr or tail).strip()[-500:]}", retryable=True)

    def _info(self, inst: Path, state: InstanceState) -> InstanceInfo:
        address = self._address(inst)
        return InstanceInfo(
            instance_id=inst.name, cloud_id=str(inst), state=state, region=LOCAL_REGION, zone=LOCAL_REGION,
            public_ip=address, private_ip=address, ssh_port=self.config.ssh_port,
            extra={"os_user": self.config.os_user},
        )

    # --- the contract ------------------------------------------------------
    def create_instance(self, spec: InstanceSpec) -> InstanceInfo:
        inst = self._dir(spec.instance_id)
        with self._lock():
            if inst.exists() and self._address(inst) is None:
                shutil.rmtree(inst)  # a create that died half-way: redo it from scratch
            if not inst.exists():
                self.instances_dir.mkdir(parents=True, exist_ok=True)
                address = self._allocate_address()
                try:
                    self._write_instance(inst, spec, address)
                except Exception:
                    shutil.rmtree(inst, ignore_errors=True)
                    raise
            if self._sshd_pid(inst) is None:
                self._start_sshd(inst)
        if self.config.create_delay:
            time.sleep(self.config.create_delay)
        return self._info(inst, InstanceState.PENDING)

    def wait_running(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        inst = self._dir(ref.instance_id)
        deadline = time.monotonic() + timeout
        while True:
            address = self._address(inst)
            if address is None:
                raise NotFound(f"local instance {ref.instance_id} does not exist")
            if self._listening(address):
                return self._info(inst, InstanceState.RUNNING)
            if time.monotonic() > deadline:
                raise ProviderError(f"sshd of {ref.instance_id} did not answer within {timeout:.0f}s", retryable=True)
            time.sleep(0.1)

    def get_instance(self, ref: InstanceRef) -> InstanceInfo:
        inst = self._dir(ref.instance_id)
        if self._address(inst) is None:
            raise NotFound(f"local instance {ref.instance_id} does not exist")
        state = InstanceState.RUNNING if self._sshd_pid(inst) else InstanceState.STOPPED
        return self._info(inst, state)

    def delete_instance(self, ref: InstanceRef) -> None:
        inst = self._dir(ref.instance_id)
        self._stop_processes(ref.instance_id)
        if inst.exists():
            shutil.rmtree(inst)
        if inst.exists() or self._marked_pids(ref.instance_id):
            raise ProviderError(f"local instance {ref.instance_id} is not gone yet", retryable=True)

    @staticmethod
    def _descendants(roots: list[int]) -> list[int]:
        """roots and every process below them (sshd's per-connection processes carry no marker)."""
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    with open(f"/proc/{entry.name}/stat") as f:
                        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                except (OSError, ValueError, IndexError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], list(roots)
        while todo:
            pid = todo.pop()
            if pid not in found:
                found.append(pid)
                todo.extend(children.get(pid, []))
        return found

    def _stop_processes(self, instance_id: str, grace: float = 3.0) -> None:
        pids = self._descendants(self._marked_pids(instance_id))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                remaining = [p for p in pids if process_running(p)]
                if not remaining:
                    return
                time.sleep(0.05)
            pids = remaining

    # --- snapshots -----------------------------------------------------------
    def _snapshot_paths(self, snapshot_id: str) -> tuple[Path, Path]:
        if not snapshot_id or "/" in snapshot_id or snapshot_id.startswith("."):
            raise ProviderError(f"bad snapshot id {snapshot_id!r}")
        return self.snapshots_dir / f"{snapshot_id}.tar.gz", self.snapshots_dir / f"{snapshot_id}.json"

    def _snapshot_info(self, snapshot_id: str) -> SnapshotInfo:
        archive, meta = self._snapshot_paths(snapshot_id)
        if not meta.exists() or not archive.exists():
            raise NotFound(f"local snapshot {snapshot_id} does not exist")
        return SnapshotInfo(snapshot_id, str(archive), SnapshotState.AVAILABLE, LOCAL_REGION)

    def create_snapshot(self, spec: SnapshotSpec) -> SnapshotInfo:
        with contextlib.suppress(NotFound):
            return self._snapshot_info(spec.snapshot_id)
        disk = self._dir(spec.instance.instance_id) / "disk"
        if not disk.is_dir():
            raise NotFound(f"local instance {spec.instance.instance_id} does not exist")
        archive, meta = self._snapshot_paths(spec.snapshot_id)
        self.snapshots_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.snapshots_dir, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
                tar.add(disk, arcname=".")
            os.replace(tmp, archive)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        tags = {**managed_tags(spec.instance.instance_id, spec.owner), SNAPSHOT_ID_TAG: spec.snapshot_id,
                "name": spec.name, "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        meta.write_text(json.dumps(tags))
        return self._snapshot_info(spec.snapshot_id)

    def _restore(self, ref: SnapshotRef, disk: Path) -> None:
        archive, _ = self._snapshot_paths(ref.snapshot_id)
        if not archive.exists():
            raise NotFound(f"local snapshot {ref.snapshot_id} does not exist")
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(disk, filter="data")

    def get_snapshot(self, ref: SnapshotRef) -> SnapshotInfo:
        return self._snapshot_info(ref.snapshot_id)

    def delete_snapshot(self, ref: SnapshotRef) -> None:
        for path in self._snapshot_paths(ref.snapshot_id):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    # --- garbage collection ------------------------------------------------
    def list_managed(self) -> list[ManagedResource]:
        found: list[ManagedResource] = []
        if self.instances_dir.exists():
            for inst in sorted(self.instances_dir.iterdir()):
                try:
                    tags = json.loads((inst / "etc" / "tags.json").read_text())
                except (OSError, ValueError):
                    tags = {MANAGED_BY_TAG: "onebox", INSTANCE_ID_TAG: inst.name}  # half-made, still ours
                state = "running" if self._sshd_pid(inst) else "stopped"
                found.append(ManagedResource("instance", str(inst), LOCAL_REGION,
                                             instance_id=tags.get(INSTANCE_ID_TAG, inst.name), state=state))
        if self.snapshots_dir.exists():
            for meta in sorted(self.snapshots_dir.glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    tags = json.loads(meta.read_text())
                    found.append(ManagedResource("snapshot", str(meta.with_suffix("").with_suffix(".tar.gz")),
                                                 LOCAL_REGION, instance_id=tags.get(INSTANCE_ID_TAG),
                                                 snapshot_id=tags.get(SNAPSHOT_ID_TAG), state="available"))
        return found
