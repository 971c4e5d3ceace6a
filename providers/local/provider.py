"""``LocalProvider``: the ``providers.base.Provider`` contract on this machine.

An instance is a real ``sshd`` listening on its own loopback address
(``127.0.0.N``, port 2222 by default), with its own host key and its own
directory as root disk. It lets everything above the provider contract — the
API, the worker, Ansible, the agent — run for real without a cloud account.

Layout under ``root`` (``.data/local`` for ``make run``)::

    instances/<instance-id>/
        etc/      sshd_config, host key, authorized_keys, tags.json, address, session.sh
        disk/     the root disk; home directories live in disk/home/<ssh_user>;
                  disk/etc/onebox/boot.d/ holds what starts with the instance (the agent)
        run/      sshd.pid, power.lock
        log/      sshd.log, boot.log
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
carries ``ONEBOX_LOCAL_INSTANCE=<id>`` (``processes``); that is how a restarted
onebox finds them again (instead of starting a second sshd) and how stop and
delete find every one of them.

Power: ``stop_instance`` ends every process of the instance and keeps its
directory (disk, address, host key); ``start_instance`` starts sshd again on
the same address and port, then runs what the instance's disk says starts at
boot (``disk/etc/onebox/boot.d/*``, as systemd would start enabled units on a
VM; the agent role puts the agent there), detached, without waiting for it;
``reboot_instance`` is a stop then a start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import shlex
import shutil
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from providers.base import (
    DEPLOYMENT_TAG,
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
    Region,
    SnapshotInfo,
    SnapshotRef,
    SnapshotSpec,
    SnapshotState,
    listed_for,
    managed_tags,
)
from providers.local import errors
from providers.local.config import LocalConfig
from providers.local.mapping import (
    BOOT_DIR,
    IMAGES,
    LOCAL_MACHINE_TYPE,
    LOCAL_REGION,
    MARKER_ENV,
    check_id,
    state_of,
)
from providers.local.processes import descendants, end_processes, find_binary, marked_pids


@contextlib.contextmanager
def _host_address_lock():
    """One allocation of a loopback address at a time on this host, across processes and data roots."""
    with open(Path(tempfile.gettempdir()) / "onebox-local-addresses.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class LocalProvider:
    """Instances as sshd processes on loopback addresses; see the module docstring."""

    name = "local"

    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.root = Path(config.root).resolve()
        self.instances_dir = self.root / "instances"
        self.snapshots_dir = self.root / "snapshots"
        self.sshd = config.sshd or find_binary("sshd")
        self.sftp_server = config.sftp_server or find_binary(
            "/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server", "sftp-server"
        )

    # --- catalog -------------------------------------------------------------
    def catalog(self) -> Catalog:
        machine = MachineType(LOCAL_MACHINE_TYPE, vcpus=1, memory_gb=1.0, hourly_usd=0.0)  # this machine: free
        return Catalog(
            regions={LOCAL_REGION: Region(LOCAL_REGION, (LOCAL_REGION,), {LOCAL_MACHINE_TYPE: machine})},
            images=IMAGES,
        )

    # --- paths and bookkeeping -------------------------------------------
    def _dir(self, instance_id: str) -> Path:
        try:
            return self.instances_dir / check_id("instance", instance_id)
        except ValueError as exc:
            raise errors.bad_id(str(exc)) from None

    def _existing(self, ref: InstanceRef) -> Path:
        """The directory of a fully made instance; NotFound otherwise."""
        inst = self._dir(ref.instance_id)
        if self._address(inst) is None:
            raise errors.instance_not_found(ref.instance_id)
        return inst

    @contextlib.contextmanager
    def _lock(self):
        """Held while instance directories are made or addresses handed out."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _power_lock(self, inst: Path):
        """One start, stop or delete of an instance at a time (a stop must not race an sshd start)."""
        (inst / "run").mkdir(parents=True, exist_ok=True)
        with open(inst / "run" / "power.lock", "w") as lock:
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
                    used.add(address)  # a stopped instance keeps its address
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
        raise errors.no_address()

    # --- processes -----------------------------------------------------------
    def _marked_pids(self, instance_id: str) -> list[int]:
        """The instance's marked processes: its sshd listener and its sessions' (tests look at them)."""
        inst = self._dir(instance_id)
        return marked_pids(inst.name, str(inst / "etc" / "sshd_config"))

    def _pids(self, inst: Path) -> list[int]:
        """Every live process of the instance (see ``processes``)."""
        return descendants(self._marked_pids(inst.name))

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
        (etc / "tags.json").write_text(json.dumps({**spec.labels, **managed_tags(spec.instance_id, spec.owner,
                                                                                 self.config.deployment),
                                                   "name": spec.name, "ssh_user": spec.ssh_user}))
        # Written last: an instance directory without it is a half-made one to redo.
        (etc / "address").write_text(address + "\n")

    def _tags(self, inst: Path) -> dict[str, str]:
        try:
            return json.loads((inst / "etc" / "tags.json").read_text())
        except (OSError, ValueError):
            return {}

    def _env(self, inst: Path) -> dict[str, str]:
        """The environment of the instance's own processes: never onebox's own (it holds secrets)."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), MARKER_ENV: inst.name, "LANG": "C.UTF-8"}

    def _start_sshd(self, inst: Path) -> None:
        if not self.sshd:
            raise errors.sshd_missing()
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        result = subprocess.run(
            [self.sshd, "-f", str(inst / "etc" / "sshd_config"), "-E", str(inst / "log" / "sshd.log")],
            env=self._env(inst), start_new_session=True, capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            tail = ""
            with contextlib.suppress(OSError):
                tail = (inst / "log" / "sshd.log").read_text()[-500:]
            raise errors.sshd_failed(result.stderr or tail)

    def _boot(self, inst: Path) -> None:
        """Run what the instance's disk starts at boot, detached, as systemd starts a VM's enabled units.

        Each program must be safe to run again (the agent's "start" is "start unless it runs"): a
        start repeated after a crash runs them again. They run with the instance's marker, so a
        stop ends them and whatever they started.
        """
        disk = inst / "disk"
        boot = disk.joinpath(*BOOT_DIR)
        if not boot.is_dir():
            return
        user = self._tags(inst).get("ssh_user") or ""
        home = disk / "home" / user if user else disk
        env = {**self._env(inst), "ONEBOX_DISK": str(disk), "HOME": str(home)}
        with open(inst / "log" / "boot.log", "ab") as log:
            for program in sorted(boot.iterdir()):
                if not program.is_file() or not os.access(program, os.X_OK):
                    continue
                log.write(f"{dt.datetime.now(dt.timezone.utc).isoformat()} starting {program.name}\n".encode())
                log.flush()
                try:
                    proc = subprocess.Popen([str(program)], env=env, cwd=str(home if home.is_dir() else disk),
                                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                            start_new_session=True)
                except OSError as exc:  # a broken boot program must not keep the instance from starting
                    log.write(f"  could not start {program.name}: {exc}\n".encode())
                    continue
                threading.Thread(target=proc.wait, name=f"boot-{inst.name}", daemon=True).start()  # reap it

    def _info(self, inst: Path, state: InstanceState) -> InstanceInfo:
        address = self._address(inst)  # kept while stopped: a local instance's address is its own
        return InstanceInfo(
            instance_id=inst.name, cloud_id=str(inst), state=state, region=LOCAL_REGION, zone=LOCAL_REGION,
            public_ip=address, private_ip=address, ssh_port=self.config.ssh_port,
            extra={"os_user": self.config.os_user},
        )

    # --- the contract: instances ------------------------------------------
    def create_instance(self, spec: InstanceSpec) -> InstanceInfo:
        inst = self._dir(spec.instance_id)
        # Addresses are this host's, not this root's: another onebox (or another test process) on the machine
        # may be handing out 127.0.0.N at the same moment, so a new address is held host-wide until its sshd
        # has bound it (sshd binds before it returns).
        with _host_address_lock(), self._lock():
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
            with self._power_lock(inst):
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
                raise errors.instance_not_found(ref.instance_id)
            if self._listening(address):
                return self._info(inst, InstanceState.RUNNING)
            if time.monotonic() > deadline:
                raise errors.timeout(f"sshd of {ref.instance_id} did not answer", timeout)
            time.sleep(0.1)

    def get_instance(self, ref: InstanceRef) -> InstanceInfo:
        inst = self._existing(ref)
        return self._info(inst, state_of(self._sshd_pid(inst) is not None))

    def delete_instance(self, ref: InstanceRef) -> None:
        inst = self._dir(ref.instance_id)
        if inst.is_dir():
            with self._power_lock(inst):
                end_processes(self._pids(inst))
                shutil.rmtree(inst)
        end_processes(self._pids(inst))  # anything a half-made instance started
        if inst.exists() or self._pids(inst):
            raise errors.not_gone(ref.instance_id)

    # --- the contract: power -------------------------------------------------
    def stop_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        inst = self._existing(ref)
        deadline = time.monotonic() + timeout
        with self._power_lock(inst):
            # Again until none is left: a process may fork while its parent is being ended.
            while pids := self._pids(inst):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise errors.timeout(f"{len(pids)} process(es) of {ref.instance_id} did not end", timeout)
                end_processes(pids, grace=min(3.0, remaining))
        return self._info(inst, InstanceState.STOPPED)

    def start_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        inst = self._existing(ref)
        deadline = time.monotonic() + timeout
        with self._power_lock(inst):
            if self._sshd_pid(inst) is None:
                self._start_sshd(inst)
            self._boot(inst)
        return self.wait_running(ref, max(0.0, deadline - time.monotonic()))

    def reboot_instance(self, ref: InstanceRef, timeout: float) -> InstanceInfo:
        deadline = time.monotonic() + timeout
        self.stop_instance(ref, timeout)
        return self.start_instance(ref, max(0.0, deadline - time.monotonic()))

    # --- snapshots -----------------------------------------------------------
    def _snapshot_paths(self, snapshot_id: str) -> tuple[Path, Path]:
        try:
            check_id("snapshot", snapshot_id)
        except ValueError as exc:
            raise errors.bad_id(str(exc)) from None
        return self.snapshots_dir / f"{snapshot_id}.tar.gz", self.snapshots_dir / f"{snapshot_id}.json"

    def _snapshot_info(self, snapshot_id: str) -> SnapshotInfo:
        archive, meta = self._snapshot_paths(snapshot_id)
        if not meta.exists() or not archive.exists():
            raise errors.snapshot_not_found(snapshot_id)
        return SnapshotInfo(snapshot_id, str(archive), SnapshotState.AVAILABLE, LOCAL_REGION)

    def create_snapshot(self, spec: SnapshotSpec) -> SnapshotInfo:
        with contextlib.suppress(NotFound):
            return self._snapshot_info(spec.snapshot_id)
        disk = self._dir(spec.instance.instance_id) / "disk"
        if not disk.is_dir():
            raise errors.instance_not_found(spec.instance.instance_id)
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
        tags = {**managed_tags(spec.instance.instance_id, spec.owner, self.config.deployment),
                SNAPSHOT_ID_TAG: spec.snapshot_id,
                "name": spec.name, "created_at": dt.datetime.now(dt.timezone.utc).isoformat()}
        meta.write_text(json.dumps(tags))
        return self._snapshot_info(spec.snapshot_id)

    def _restore(self, ref: SnapshotRef, disk: Path) -> None:
        archive, _ = self._snapshot_paths(ref.snapshot_id)
        if not archive.exists():
            raise errors.snapshot_not_found(ref.snapshot_id)
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
        mine = self.config.deployment
        if self.instances_dir.exists():
            for inst in sorted(self.instances_dir.iterdir()):
                # half-made (no tags yet): ours, as only this provider writes its root
                tags = self._tags(inst) or {MANAGED_BY_TAG: "onebox", INSTANCE_ID_TAG: inst.name, DEPLOYMENT_TAG: mine}
                if not listed_for(tags.get(DEPLOYMENT_TAG), mine):
                    continue
                state = state_of(self._sshd_pid(inst) is not None)
                found.append(ManagedResource("instance", str(inst), LOCAL_REGION,
                                             instance_id=tags.get(INSTANCE_ID_TAG, inst.name), state=state.value,
                                             deployment=tags.get(DEPLOYMENT_TAG)))
        if self.snapshots_dir.exists():
            for meta in sorted(self.snapshots_dir.glob("*.json")):
                with contextlib.suppress(OSError, ValueError):
                    tags = json.loads(meta.read_text())
                    if not listed_for(tags.get(DEPLOYMENT_TAG), mine):
                        continue
                    found.append(ManagedResource("snapshot", str(meta.with_suffix("").with_suffix(".tar.gz")),
                                                 LOCAL_REGION, instance_id=tags.get(INSTANCE_ID_TAG),
                                                 snapshot_id=tags.get(SNAPSHOT_ID_TAG), state="available",
                                                 deployment=tags.get(DEPLOYMENT_TAG)))
        return found
