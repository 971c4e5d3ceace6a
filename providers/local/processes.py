"""Finding and ending the processes of one local instance, from /proc.

A local instance is a set of processes, not a VM: its sshd, the sessions sshd
starts and whatever those start (the agent, a user's jobs). They are found by
the instance marker (``mapping.MARKER_ENV``) in their environment, by sshd's
config path in its command line (sshd writes its process title over its
environment), and as descendants of those (sshd's per-connection processes
carry no marker). Stopping an instance ends all of them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time

from providers.local.mapping import MARKER_ENV


def find_binary(*candidates: str) -> str | None:
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


def marked_pids(instance_id: str, sshd_config: str) -> list[int]:
    """Every live process carrying the instance's marker, or running sshd with its config."""
    needle = f"{MARKER_ENV}={instance_id}".encode()
    config = sshd_config.encode()
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
        if (needle in env or config in cmdline) and process_running(int(entry.name)):
            pids.append(int(entry.name))
    return pids


def descendants(roots: list[int]) -> list[int]:
    """roots and every process below them."""
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


def end_processes(pids: list[int], grace: float = 3.0) -> list[int]:
    """SIGTERM, then after ``grace`` seconds SIGKILL, ``pids``; those still alive after both."""
    remaining = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while True:
            remaining = [p for p in remaining if process_running(p)]
            if not remaining or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if not remaining:
            break
    return remaining
