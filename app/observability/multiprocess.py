"""Prometheus counters shared by every onebox process of one host.

onebox runs as several processes (API processes, ``onebox worker`` processes), and Prometheus
scrapes one of them through ``GET /metrics``; that answer must count what every process did,
each thing once. prometheus-client's multiprocess mode does exactly this: each process writes
its counters and histograms to memory-mapped files in one shared directory (the kernel keeps
the pages, so a process killed by SIGKILL loses nothing it counted), and ``/metrics`` adds the
files up.

One refinement: a process does not name its files by its pid (pids collide between containers
sharing a volume, and a file per pid ever started grows without bound) but by a *slot*: the
first ``slot-N.lock`` in the directory it can hold an exclusive ``flock`` on. The kernel
releases the lock when the process dies, however it dies; the next process to start takes that
slot over and carries on from the counts its predecessor left. Counters therefore never go
back, never count twice, and the directory holds one set of files per process running at once.

``enable`` must run before ``app.observability.metrics`` is imported (the CLI does it first
thing); without it (tests, embedding) metrics live in the process's memory as usual.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

MAX_SLOTS = 4096
_held: dict[str, int] = {}  # slot name → the descriptor holding its lock (kept open for the process's life)


def take_slot(directory: Path) -> str:
    """Lock the first free slot in ``directory``; its name identifies this process's files."""
    for n in range(MAX_SLOTS):
        path = directory / f"slot-{n}.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.set_inheritable(fd, False)  # a child process (Ansible, sshd) must not hold the slot after we die
        name = f"slot{n}"  # no "_": prometheus-client splits file names on it
        _held[name] = fd
        return name
    raise RuntimeError(f"more than {MAX_SLOTS} onebox processes share {directory}")


def enable(directory: Path) -> str:
    """Count into ``directory`` from now on; returns this process's slot."""
    if "app.observability.metrics" in sys.modules:
        raise RuntimeError("enable multiprocess metrics before app.observability.metrics is imported")
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == str(directory) and _held:
        return next(iter(_held))
    directory.mkdir(parents=True, exist_ok=True)
    slot = take_slot(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(lambda: slot)
    return slot


def shared_directory() -> str | None:
    """The directory this process counts into, when multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") if _held else None
