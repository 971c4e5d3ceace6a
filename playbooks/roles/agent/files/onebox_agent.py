#!/usr/bin/env python3
"""onebox monitoring agent.

What it is
    A small, dependency-free (Python 3.8+ standard library only) daemon that
    samples host metrics -- CPU, load average, memory, root-disk usage,
    network and disk I/O byte counters, the number of logged-in SSH sessions,
    uptime and, when ``nvidia-smi`` is present, per-GPU utilisation/memory/
    temperature/power (and power limit) -- and posts them to the onebox
    service that provisioned the machine.  onebox decides from them whether
    an instance is idle (idle autostop), so nothing is left out quietly: a
    value that cannot be read is sent as null.

Where it runs
    On every VM onebox provisions.  The ``agent`` Ansible role copies this one
    file onto the VM, writes its JSON config (mode 0600, it holds the agent
    token) and runs it as a service.  It only needs to read ``/proc``, call
    ``os.statvfs`` and optionally run ``nvidia-smi``; it does not need root
    apart from writing its log file.

How it is configured
    ``python3 onebox_agent.py --config /etc/onebox-agent.json [--once]``

    The config file is a JSON object::

        {
          "url": "http://onebox.example:8000",   # required, http:// or https://
          "token": "<JWT>",                      # required, sent as a Bearer token
          "instance_id": "i-0123",               # required
          "interval": 30,                        # seconds between samples
          "buffer_size": 120,                    # samples kept while onebox is unreachable
          "timeout": 10,                         # HTTP timeout, seconds
          "max_backoff": 300,                    # cap for retry delays, seconds
          "initial_backoff": 1,                  # first retry delay, seconds
          "log_file": "/var/log/onebox-agent.log",
          "log_level": "INFO",
          "proc_root": "/proc",                  # for tests
          "disk_path": "/",                      # filesystem whose usage is reported
          "nvidia_smi": "nvidia-smi",            # name (looked up on PATH) or path
          "nvidia_smi_timeout": 5,               # seconds
          "ca_file": null,                       # extra CA bundle for https onebox
          "sshd_pid_file": null                  # count only the SSH sessions of this sshd
        }                                        # (a onebox local instance; a VM counts all)

    Every ``interval`` seconds one sample is collected and appended to a
    bounded in-memory buffer; the buffer is posted, oldest first, at most 100
    samples per request, to ``POST {url}/v1/agent/metrics`` as
    ``{"instance_id": ..., "samples": [...]}``.  Samples are dropped from the
    buffer only once onebox answered 2xx for them (or 400/413/422, which mean
    the batch would never be accepted).  Other failures are retried with
    exponential backoff and jitter, honouring ``Retry-After``.

    ``--once`` collects a single sample, posts it and exits 0 if onebox
    accepted it, 1 otherwise (used by Ansible to check connectivity).
    Configuration errors exit 2.  SIGTERM/SIGINT make the agent try once more
    to deliver what is buffered, then exit 0.

    The token is never written to the log.
"""

import argparse
import base64
import datetime
import email.utils
import http.client
import json
import logging
import logging.handlers
import math
import os
import random
import select
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque, namedtuple
from typing import Any, Callable, Dict, List, Optional, Tuple

__version__ = "0.1.0"

USER_AGENT = "onebox-agent/" + __version__
METRICS_PATH = "/v1/agent/metrics"
MAX_BATCH = 100
# Statuses that mean "this batch will never be accepted": drop it, move on.
DROP_STATUSES = frozenset({400, 413, 422})
AUTH_STATUSES = frozenset({401, 403})
DEFAULT_CPU_WINDOW = 0.5  # seconds between the two /proc/stat reads of the first sample
SHUTDOWN_TIMEOUT = 3.0  # HTTP timeout for the final flush on SIGTERM
EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2

LOG = logging.getLogger("onebox_agent")


# --------------------------------------------------------------------------
# Pure parsers.  Each raises ValueError on input it cannot make sense of.
# --------------------------------------------------------------------------

CpuTimes = namedtuple("CpuTimes", ["idle", "total"])


def _r2(value: Optional[float]) -> Optional[float]:
    """Round to 2 decimals; None for None/NaN/inf (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return round(value, 2)


def parse_stat(text: str) -> CpuTimes:
    """Aggregate CPU times from /proc/stat: idle (idle+iowait) and total jiffies.

    total = user+nice+system+idle+iowait+irq+softirq+steal; guest/guest_nice
    are already included in user/nice and are not added again.
    """
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == "cpu":
            fields = parts[1:9]
            if len(fields) < 4:
                raise ValueError("/proc/stat 'cpu' line has %d fields, need >= 4" % len(fields))
            try:
                values = [int(f) for f in fields]
            except ValueError:
                raise ValueError("/proc/stat 'cpu' line has non-integer fields") from None
            if any(v < 0 for v in values):
                raise ValueError("/proc/stat 'cpu' line has negative fields")
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            return CpuTimes(idle=idle, total=sum(values))
    raise ValueError("/proc/stat has no aggregate 'cpu' line")


def cpu_percent(prev: Optional[CpuTimes], cur: Optional[CpuTimes]) -> Optional[float]:
    """Busy percentage (0-100) between two parse_stat() readings, or None.

    None when either reading is missing or no time elapsed / counters were
    reset between the readings.
    """
    if prev is None or cur is None:
        return None
    total = cur.total - prev.total
    if total <= 0:
        return None
    idle = cur.idle - prev.idle
    busy = min(max(total - idle, 0), total)  # iowait may go backwards on NO_HZ kernels
    return _r2(100.0 * busy / total)


def parse_meminfo(text: str) -> Dict[str, int]:
    """/proc/meminfo as {key: kB}.  Malformed lines are skipped."""
    info = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        parts = rest.split()
        if not parts:
            continue
        try:
            value = int(parts[0])
        except ValueError:
            continue
        if value >= 0:
            info[key.strip()] = value
    return info


def memory_percent(info: Dict[str, int]) -> float:
    """Used memory percentage from parse_meminfo() output.

    used = MemTotal - MemAvailable; without MemAvailable (kernels < 3.14)
    available is approximated as MemFree + Buffers + Cached.
    """
    total = info.get("MemTotal")
    if not total:
        raise ValueError("/proc/meminfo: MemTotal missing, malformed or zero")
    available = info.get("MemAvailable")
    if available is None:
        try:
            available = info["MemFree"] + info["Buffers"] + info["Cached"]
        except KeyError:
            raise ValueError(
                "/proc/meminfo: neither MemAvailable nor MemFree+Buffers+Cached usable"
            ) from None
    used = min(max(total - available, 0), total)
    return _r2(100.0 * used / total)


def parse_loadavg(text: str) -> List[float]:
    """[1, 5, 15] minute load averages from /proc/loadavg."""
    parts = text.split()
    if len(parts) < 3:
        raise ValueError("/proc/loadavg: expected 3 load averages, got %r" % text[:80])
    try:
        values = [float(p) for p in parts[:3]]
    except ValueError:
        raise ValueError("/proc/loadavg: malformed load averages %r" % text[:80]) from None
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError("/proc/loadavg: out-of-range load averages %r" % text[:80])
    return [_r2(v) for v in values]


def parse_net_dev(text: str) -> Tuple[int, int]:
    """(rx_bytes, tx_bytes) summed over all interfaces of /proc/net/dev except lo.

    These are counters since boot (per interface, so they can go down when an
    interface disappears).  Any malformed interface line makes the whole
    result invalid: a partial sum would look like a counter reset.
    """
    rx = tx = 0
    seen_header = False
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, rest = line.partition(":")
        if not sep:
            if "|" in line:
                seen_header = True
                continue
            raise ValueError("/proc/net/dev: malformed line %r" % line[:80])
        name = name.strip()
        fields = rest.split()
        if len(fields) < 9:
            raise ValueError("/proc/net/dev: too few fields for interface %r" % name)
        try:
            if_rx, if_tx = int(fields[0]), int(fields[8])
        except ValueError:
            raise ValueError("/proc/net/dev: non-integer counters for interface %r" % name) from None
        if if_rx < 0 or if_tx < 0:
            raise ValueError("/proc/net/dev: negative counters for interface %r" % name)
        if name == "lo":
            continue
        rx += if_rx
        tx += if_tx
    if not seen_header:
        raise ValueError("/proc/net/dev: header missing")
    return rx, tx


def parse_uptime(text: str) -> float:
    """Seconds since boot from /proc/uptime."""
    parts = text.split()
    if not parts:
        raise ValueError("/proc/uptime is empty")
    try:
        value = float(parts[0])
    except ValueError:
        raise ValueError("/proc/uptime: malformed %r" % text[:80]) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError("/proc/uptime: out of range %r" % text[:80])
    return _r2(value)


SECTOR_BYTES = 512  # /proc/diskstats counts 512-byte sectors whatever the device's own sector size
# Devices layered on others (device mapper, software RAID) or not disks at all: their I/O is counted once,
# on the disks below them.
_NOT_DISKS = ("loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd")


def _is_partition(name: str, names: "set") -> bool:
    """sda1 of sda, nvme0n1p1 of nvme0n1, mmcblk0p2 of mmcblk0: a parent ending in a digit takes a 'p'."""
    for cut in range(len(name) - 1, 0, -1):
        if not name[cut:].isdigit():
            break
        parent = name[:cut]
        if parent.endswith("p") and parent[:-1] in names and parent[-2:-1].isdigit():
            return True
        if parent in names and not parent[-1].isdigit():
            return True
    return False


def parse_diskstats(text: str) -> Tuple[int, int]:
    """(read_bytes, written_bytes) since boot, summed over whole disks of /proc/diskstats.

    Partitions (their I/O is their disk's) and layered or virtual devices (loop,
    device mapper, md, RAM disks, CD-ROMs) are left out, so nothing is counted
    twice.  Lines of fewer than 14 fields (partitions on 2.6.x kernels) are
    partitions too.  A machine without disks gives (0, 0).
    """
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 7:
            raise ValueError("/proc/diskstats: malformed line %r" % line[:80])
        rows.append(fields)
    names = {f[2] for f in rows}
    read = written = 0
    for fields in rows:
        name = fields[2]
        if len(fields) < 14 or name.startswith(_NOT_DISKS) or _is_partition(name, names):
            continue
        try:
            sectors_read, sectors_written = int(fields[5]), int(fields[9])
        except ValueError:
            raise ValueError("/proc/diskstats: non-integer counters for %r" % name) from None
        if sectors_read < 0 or sectors_written < 0:
            raise ValueError("/proc/diskstats: negative counters for %r" % name)
        read += sectors_read * SECTOR_BYTES
        written += sectors_written * SECTOR_BYTES
    return read, written


def is_ssh_session(cmdline: bytes) -> bool:
    """Whether a process's command line is an SSH session's: sshd titles the process that serves one
    logged-in connection ``sshd: USER@pts/N`` (or ``USER@notty`` for commands, sftp, editors' remote
    servers), ``sshd-session: ...`` since OpenSSH 9.8.  The listener, privileged monitors
    (``USER [priv]``) and connections not yet logged in (``[preauth]``, ``[net]``) are not sessions."""
    title = cmdline.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    for prefix in ("sshd: ", "sshd-session: "):
        if title.startswith(prefix):
            words = title[len(prefix):].split()
            return bool(words) and "@" in words[0] and not words[0].startswith("/")
    return False


def _parent_pid(stat_text: str) -> int:
    return int(stat_text.rsplit(")", 1)[1].split()[1])


def count_ssh_sessions(proc_root: str = "/proc", under_pid: Optional[int] = None) -> int:
    """Logged-in SSH sessions on this machine, from the process table (interactive or not: utmp would
    miss every session without a terminal).  With ``under_pid``, only the sessions of that sshd (a
    onebox local instance shares the host's process table with the host's own sshd)."""
    sessions = []
    parents = {}  # type: Dict[int, int]
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "cmdline"), "rb") as f:
                cmdline = f.read()
            if under_pid is not None:
                with open(os.path.join(proc_root, entry, "stat"), encoding="utf-8", errors="replace") as f:
                    parents[int(entry)] = _parent_pid(f.read())
        except (OSError, ValueError, IndexError):
            continue  # it ended meanwhile, or cannot be read (another user's, hidepid)
        if is_ssh_session(cmdline):
            sessions.append(int(entry))
    if under_pid is None:
        return len(sessions)
    count = 0
    for pid in sessions:
        for _ in range(64):  # up the tree to the sshd (its direct child, unless privilege separation)
            pid = parents.get(pid, 0)
            if pid == under_pid:
                count += 1
                break
            if pid <= 1:
                break
    return count


def disk_percent(st: Any) -> float:
    """Used percentage of a filesystem from an os.statvfs() result, as df(1) shows it.

    used / (used + available to unprivileged users), so reserved blocks count
    as unavailable and 100% means "non-root users cannot write".
    """
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    if st.f_blocks <= 0 or used + avail <= 0:
        raise ValueError("filesystem reports no blocks")
    return _r2(100.0 * max(used, 0) / (used + avail))


NVIDIA_SMI_FIELDS = (
    "index,name,utilization.gpu,memory.used,memory.total,temperature.gpu,power.draw,power.limit"
)
NVIDIA_SMI_ARGS = ["--query-gpu=" + NVIDIA_SMI_FIELDS, "--format=csv,noheader,nounits"]
_GPU_NUMERIC_KEYS = (
    "utilization_percent",
    "memory_used_mib",
    "memory_total_mib",
    "temperature_c",
    "power_draw_w",
    "power_limit_w",
)


def _gpu_number(raw: str) -> Optional[float]:
    """A numeric nvidia-smi field; None for [N/A], [Not Supported], [Unknown Error], ..."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return _r2(value)


def parse_nvidia_smi_csv(text: str) -> List[Dict[str, Any]]:
    """Parse the output of ``nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits``.

    Returns one dict per GPU.  Fields nvidia-smi cannot report ("[N/A]",
    "[Not Supported]", ...) become None.  Raises ValueError when the text is
    not that CSV at all (wrong column count, non-integer index, ...).
    """
    gpus = []
    for line in text.splitlines():
        if not line.strip():
            continue
        cols = [c.strip() for c in line.split(",")]
        count = len(_GPU_NUMERIC_KEYS)
        if len(cols) < count + 2:
            raise ValueError("nvidia-smi: expected %d columns, got %d in %r" % (count + 2, len(cols), line[:120]))
        index_raw, numeric = cols[0], cols[-count:]
        name = ", ".join(cols[1:-count])  # tolerate commas inside the product name
        try:
            index = int(index_raw)
        except ValueError:
            raise ValueError("nvidia-smi: GPU index is not an integer in %r" % line[:120]) from None
        if index < 0 or not name:
            raise ValueError("nvidia-smi: malformed line %r" % line[:120])
        gpu = {"index": index, "name": name}  # type: Dict[str, Any]
        for key, raw in zip(_GPU_NUMERIC_KEYS, numeric):
            gpu[key] = _gpu_number(raw)
        gpus.append(gpu)
    return gpus


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def format_timestamp(epoch: float) -> str:
    """UTC ISO-8601 with seconds precision and a 'Z', e.g. 2026-11-22T01:00:00Z."""
    dt = datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def jwt_expiry(token: str) -> Optional[float]:
    """The 'exp' claim of a JWT (unverified, only used to explain a 401), or None."""
    try:
        payload = token.split(".")[1]
        payload += "=" * (-len(payload) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
        exp = claims.get("exp")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            return float(exp)
    except Exception:
        pass
    return None


# --------------------------------------------------------------------------
# Collection
# --------------------------------------------------------------------------


class _ProblemLog:
    """Log a recurring problem once per distinct message, and its recovery.

    Keeps the log readable over months: a missing field every 30 s produces
    one line, not 2880 a day.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._active = {}  # type: Dict[str, str]

    def report(self, key: str, message: str, level: int = logging.WARNING) -> None:
        if self._active.get(key) != message:
            self._active[key] = message
            self.logger.log(level, "%s", message)

    def clear(self, key: str) -> None:
        if self._active.pop(key, None) is not None:
            self.logger.info("%s: OK again", key)


class Collector:
    """Collects one sample dict from /proc, statvfs and nvidia-smi."""

    def __init__(
        self,
        proc_root: str = "/proc",
        disk_path: str = "/",
        nvidia_smi: str = "nvidia-smi",
        nvidia_smi_timeout: float = 5.0,
        sshd_pid_file: Optional[str] = None,
        cpu_window: float = DEFAULT_CPU_WINDOW,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        logger: logging.Logger = LOG,
    ) -> None:
        self.proc_root = proc_root
        self.disk_path = disk_path
        self.nvidia_smi = nvidia_smi
        self.nvidia_smi_timeout = nvidia_smi_timeout
        self.sshd_pid_file = sshd_pid_file
        self.cpu_window = cpu_window
        self.clock = clock
        self.sleep = sleep
        self.logger = logger
        self.problems = _ProblemLog(logger)
        self._prev_cpu = None  # type: Optional[CpuTimes]
        self._stuck_gpu_proc = None  # type: Optional[subprocess.Popen]

    # -- helpers -----------------------------------------------------------

    def _read(self, relpath: str) -> str:
        with open(os.path.join(self.proc_root, relpath), encoding="utf-8", errors="replace") as f:
            return f.read()

    def _field(self, key: str, relpath: str, parse: Callable[[str], Any]) -> Any:
        """parse(read(relpath)), or None with a (de-duplicated) log line."""
        try:
            value = parse(self._read(relpath))
        except (OSError, ValueError) as exc:
            self.problems.report(key, "%s unavailable (%s): %s" % (key, relpath, exc))
            return None
        self.problems.clear(key)
        return value

    def _read_cpu(self) -> Optional[CpuTimes]:
        return self._field("cpu_percent", "stat", parse_stat)

    def prime(self) -> None:
        """Take the initial /proc/stat reading CPU deltas are computed against."""
        self._prev_cpu = self._read_cpu()

    # -- the sample ----------------------------------------------------------

    def collect(self) -> Dict[str, Any]:
        if self._prev_cpu is None:
            self.prime()
            if self._prev_cpu is not None and self.cpu_window > 0:
                self.sleep(self.cpu_window)
        cur = self._read_cpu()
        cpu = cpu_percent(self._prev_cpu, cur)
        if cur is not None:
            self._prev_cpu = cur
        sample = {
            "at": format_timestamp(self.clock()),
            "cpu_percent": cpu,
            "load_avg": self._field("load_avg", "loadavg", parse_loadavg),
            "memory_percent": self._field(
                "memory_percent", "meminfo", lambda t: memory_percent(parse_meminfo(t))
            ),
            "disk_percent": self._disk(),
            "net_rx_bytes": None,
            "net_tx_bytes": None,
            "disk_read_bytes": None,
            "disk_write_bytes": None,
            "ssh_sessions": self._ssh_sessions(),
            "uptime_seconds": self._field("uptime_seconds", "uptime", parse_uptime),
            "gpus": self._gpus(),
        }  # type: Dict[str, Any]
        net = self._field("net_bytes", os.path.join("net", "dev"), parse_net_dev)
        if net is not None:
            sample["net_rx_bytes"], sample["net_tx_bytes"] = net
        disk_io = self._field("disk_io_bytes", "diskstats", parse_diskstats)
        if disk_io is not None:
            sample["disk_read_bytes"], sample["disk_write_bytes"] = disk_io
        return sample

    def _ssh_sessions(self) -> Optional[int]:
        key = "ssh_sessions"
        under = None
        try:
            if self.sshd_pid_file:
                with open(self.sshd_pid_file, encoding="utf-8") as f:
                    under = int(f.read().strip())
            value = count_ssh_sessions(self.proc_root, under)
        except (OSError, ValueError) as exc:
            self.problems.report(key, "ssh_sessions unavailable: %s" % exc)
            return None
        self.problems.clear(key)
        return value

    def _disk(self) -> Optional[float]:
        try:
            value = disk_percent(os.statvfs(self.disk_path))
        except (OSError, ValueError) as exc:
            self.problems.report(
                "disk_percent", "disk_percent unavailable (statvfs %s): %s" % (self.disk_path, exc)
            )
            return None
        self.problems.clear("disk_percent")
        return value

    def _gpus(self) -> List[Dict[str, Any]]:
        key = "gpus"
        if self._stuck_gpu_proc is not None:
            if self._stuck_gpu_proc.poll() is None:
                self.problems.report(
                    key,
                    "nvidia-smi (pid %d) from an earlier run is still stuck; "
                    "not starting another, GPU metrics skipped" % self._stuck_gpu_proc.pid,
                )
                return []
            self._stuck_gpu_proc = None
        exe = shutil.which(self.nvidia_smi)
        if exe is None:
            self.problems.report(
                key, "%s not found on PATH; no GPU metrics until it appears" % self.nvidia_smi,
                level=logging.INFO,
            )
            return []
        try:
            proc = subprocess.Popen(
                [exe] + NVIDIA_SMI_ARGS,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # so a timeout can kill its whole process group
                env=dict(os.environ, LC_ALL="C"),
            )
        except OSError as exc:
            self.problems.report(key, "could not run %s: %s" % (exe, exc))
            return []
        try:
            out, err = proc.communicate(timeout=self.nvidia_smi_timeout)
        except subprocess.TimeoutExpired:
            self._kill(proc)
            self.problems.report(
                key, "%s did not answer within %gs; killed it, no GPU metrics"
                % (exe, self.nvidia_smi_timeout),
            )
            return []
        if proc.returncode != 0:
            detail = (err or out or b"").decode("utf-8", "replace").strip().splitlines()
            self.problems.report(
                key, "%s exited with status %d: %s"
                % (exe, proc.returncode, detail[0][:200] if detail else "(no output)"),
            )
            return []
        try:
            gpus = parse_nvidia_smi_csv(out.decode("utf-8", "replace"))
        except ValueError as exc:
            self.problems.report(key, "unexpected output from %s: %s" % (exe, exc))
            return []
        self.problems.clear(key)
        return gpus

    def _kill(self, proc: "subprocess.Popen") -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            try:
                proc.kill()
            except OSError:
                pass
        try:
            proc.communicate(timeout=1.0)
        except subprocess.TimeoutExpired:
            # Stuck in the kernel (driver hang, D state): don't wait for it and
            # don't start another one until it is gone.
            self._stuck_gpu_proc = proc


# --------------------------------------------------------------------------
# Buffer and backoff
# --------------------------------------------------------------------------

Batch = namedtuple("Batch", ["first_seq", "last_seq", "samples"])


class Buffer:
    """Bounded FIFO of samples.  When full, the oldest sample is dropped.

    Each sample gets a sequence number; peek() hands out a Batch and ack()
    removes exactly the samples of that batch that are still buffered, so a
    sample appended (or dropped by overflow) in between is never lost or
    acknowledged by mistake.
    """

    def __init__(self, maxlen: int) -> None:
        if maxlen < 1:
            raise ValueError("buffer size must be >= 1")
        self.maxlen = maxlen
        self._items = deque()  # type: deque
        self._next_seq = 0
        self.dropped_total = 0  # overflow drops since start
        self.dropped_since_report = 0

    def __len__(self) -> int:
        return len(self._items)

    def append(self, sample: Any) -> int:
        """Add a sample; returns how many old samples were dropped (0 or 1)."""
        dropped = 0
        if len(self._items) >= self.maxlen:
            self._items.popleft()
            dropped = 1
            self.dropped_total += 1
            self.dropped_since_report += 1
        self._items.append((self._next_seq, sample))
        self._next_seq += 1
        return dropped

    def peek(self, n: int = MAX_BATCH) -> Batch:
        items = [self._items[i] for i in range(min(n, len(self._items)))]
        if not items:
            return Batch(None, None, [])
        return Batch(items[0][0], items[-1][0], [s for _, s in items])

    def ack(self, batch: Batch) -> int:
        """Remove the samples of batch that are still buffered; returns how many."""
        if batch.last_seq is None:
            return 0
        n = 0
        while self._items and self._items[0][0] <= batch.last_seq:
            self._items.popleft()
            n += 1
        return n

    def samples(self) -> List[Any]:
        return [s for _, s in self._items]


class Backoff:
    """Exponential backoff with jitter: delay k is uniform in [b/2, b], b = min(cap, initial*2**k).

    Delays grow (until b reaches cap) and never exceed cap.
    A Retry-After from the server replaces the computed delay (bounded by
    [initial, cap]: never spin, never go silent longer than cap).
    """

    def __init__(
        self, initial: float = 1.0, cap: float = 300.0, rand: Callable[[], float] = random.random
    ) -> None:
        self.initial = max(float(initial), 0.001)
        self.cap = max(float(cap), self.initial)
        self.rand = rand
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self, retry_after: Optional[float] = None) -> float:
        base = min(self.cap, self.initial * (2.0 ** min(self.attempt, 60)))
        self.attempt += 1
        if retry_after is not None:
            return min(max(retry_after, self.initial), self.cap)
        return base * (0.5 + 0.5 * self.rand())


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------


class PostResult(namedtuple("PostResult", ["status", "retry_after", "detail"])):
    """status: HTTP status or None (no HTTP answer); retry_after: seconds or None."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: urllib would resend the Authorization header
    to wherever it points, and turn the POST into a GET."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D401
        return None


def _printable(data: bytes, limit: int = 200) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


class Poster:
    """POSTs batches of samples to onebox."""

    def __init__(
        self,
        url: str,
        token: str,
        instance_id: str,
        timeout: float = 10.0,
        ca_file: Optional[str] = None,
    ) -> None:
        self.endpoint = url.rstrip("/") + METRICS_PATH
        self._token = token
        self.instance_id = instance_id
        self.timeout = timeout
        handlers = [_NoRedirect()]  # type: List[Any]
        if ca_file:
            handlers.append(
                urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca_file))
            )
        self._opener = urllib.request.build_opener(*handlers)

    def post(self, samples: List[Dict[str, Any]], timeout: Optional[float] = None) -> PostResult:
        body = json.dumps(
            {"instance_id": self.instance_id, "samples": samples},
            separators=(",", ":"),
            allow_nan=False,
        ).encode("utf-8")
        req = urllib.request.Request(
            self.endpoint,
            data=body,
            method="POST",
            headers={
                "Authorization": "Bearer " + self._token,
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
            },
        )
        try:
            with self._opener.open(req, timeout=self.timeout if timeout is None else timeout) as resp:
                resp.read(65536)
                return PostResult(resp.status, None, "HTTP %d" % resp.status)
        except urllib.error.HTTPError as exc:
            try:
                snippet = _printable(exc.read(400))
            except Exception:
                snippet = ""
            finally:
                exc.close()
            retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            detail = "HTTP %d %s" % (exc.code, exc.reason)
            if 300 <= exc.code < 400:
                detail += " (redirect to %s not followed; check the url)" % (
                    exc.headers.get("Location") if exc.headers else "?")
            if snippet:
                detail += ": " + snippet
            return PostResult(exc.code, retry_after, detail)
        except urllib.error.URLError as exc:
            return PostResult(None, None, "cannot reach onebox: %s" % (exc.reason,))
        except (OSError, ValueError, http.client.HTTPException) as exc:
            return PostResult(None, None, "request failed: %s: %s" % (type(exc).__name__, exc))


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


class ConfigError(Exception):
    pass


class Config:
    """Validated agent configuration (see the module docstring for the keys)."""

    REQUIRED = ("url", "token", "instance_id")
    DEFAULTS = {
        "interval": 30.0,
        "buffer_size": 120,
        "timeout": 10.0,
        "max_backoff": 300.0,
        "initial_backoff": 1.0,
        "log_file": "/var/log/onebox-agent.log",
        "log_level": "INFO",
        "proc_root": "/proc",
        "disk_path": "/",
        "nvidia_smi": "nvidia-smi",
        "nvidia_smi_timeout": 5.0,
        "ca_file": None,
        "sshd_pid_file": None,
    }
    _POSITIVE = ("interval", "timeout", "max_backoff", "initial_backoff", "nvidia_smi_timeout")
    _STRINGS = ("log_file", "log_level", "proc_root", "disk_path", "nvidia_smi")

    def __init__(self, **values: Any) -> None:
        self.unknown_keys = sorted(set(values) - set(self.REQUIRED) - set(self.DEFAULTS))
        for key in self.REQUIRED:
            value = values.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError("%r is required and must be a non-empty string" % key)
        self.url = values["url"].strip()  # type: str
        self.token = values["token"].strip()  # type: str
        self.instance_id = values["instance_id"]  # type: str
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError("'url' must look like http://host:port or https://host")
        merged = dict(self.DEFAULTS)
        merged.update({k: v for k, v in values.items() if k in self.DEFAULTS and v is not None})
        for key in self._POSITIVE:
            v = merged[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise ConfigError("%r must be a positive number" % key)
            merged[key] = float(v)
        v = merged["buffer_size"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError("'buffer_size' must be a positive integer")
        for key in self._STRINGS:
            if not isinstance(merged[key], str) or not merged[key]:
                raise ConfigError("%r must be a non-empty string" % key)
        if merged["ca_file"] is not None and not isinstance(merged["ca_file"], str):
            raise ConfigError("'ca_file' must be a string")
        if merged["sshd_pid_file"] is not None and not isinstance(merged["sshd_pid_file"], str):
            raise ConfigError("'sshd_pid_file' must be a string")
        if not isinstance(logging.getLevelName(merged["log_level"].upper()), int):
            raise ConfigError("'log_level' must be DEBUG, INFO, WARNING or ERROR")
        self.interval = merged["interval"]  # type: float
        self.buffer_size = merged["buffer_size"]  # type: int
        self.timeout = merged["timeout"]  # type: float
        self.max_backoff = merged["max_backoff"]  # type: float
        self.initial_backoff = min(merged["initial_backoff"], self.max_backoff)  # type: float
        self.log_file = merged["log_file"]  # type: str
        self.log_level = merged["log_level"].upper()  # type: str
        self.proc_root = merged["proc_root"]  # type: str
        self.disk_path = merged["disk_path"]  # type: str
        self.nvidia_smi = merged["nvidia_smi"]  # type: str
        self.nvidia_smi_timeout = merged["nvidia_smi_timeout"]  # type: float
        self.ca_file = merged["ca_file"]  # type: Optional[str]
        self.sshd_pid_file = merged["sshd_pid_file"]  # type: Optional[str]

    def safe_url(self) -> str:
        """The url without any user:password part, for logging."""
        p = urllib.parse.urlsplit(self.url)
        netloc = p.netloc.rpartition("@")[2]
        return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))


def load_config(path: str) -> Tuple[Config, Optional[str]]:
    """Read and validate the config file.  Returns (config, permission warning or None)."""
    try:
        with open(path, encoding="utf-8") as f:
            st = os.fstat(f.fileno())
            raw = f.read()
    except OSError as exc:
        raise ConfigError("cannot read config file %s: %s" % (path, exc.strerror or exc)) from None
    except UnicodeDecodeError:
        raise ConfigError("config file %s is not UTF-8 text" % path) from None
    try:
        values = json.loads(raw)
    except ValueError as exc:
        raise ConfigError("config file %s is not valid JSON: %s" % (path, exc)) from None
    if not isinstance(values, dict):
        raise ConfigError("config file %s must contain a JSON object" % path)
    try:
        config = Config(**{str(k): v for k, v in values.items()})
    except ConfigError as exc:
        raise ConfigError("config file %s: %s" % (path, exc)) from None
    warning = None
    if st.st_mode & 0o077:
        warning = (
            "config file %s is accessible by group/others (mode %04o) and contains the "
            "agent token; it should be mode 0600" % (path, st.st_mode & 0o7777)
        )
    return config, warning


# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------


class RedactingFormatter(logging.Formatter):
    """Formats in UTC and replaces any secret (the token) with '***', tracebacks included."""

    converter = time.gmtime

    def __init__(self, secrets: List[str]) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        self.secrets = [s for s in secrets if s]

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def setup_logging(
    log_file: str, secrets: List[str], level: str = "INFO", also_stderr: bool = False,
    logger: logging.Logger = LOG,
) -> List[logging.Handler]:
    """Rotating log file (1 MB x 3), falling back to stderr.  Returns the handlers added."""
    formatter = RedactingFormatter(secrets)
    handlers = []  # type: List[logging.Handler]
    file_error = None
    try:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_file, maxBytes=1000000, backupCount=3, encoding="utf-8"
            )
        )
    except OSError as exc:
        file_error = exc
    if file_error is not None or also_stderr:
        handlers.append(logging.StreamHandler(sys.stderr))
    for h in handlers:
        h.setFormatter(formatter)
        logger.addHandler(h)
    logger.setLevel(getattr(logging, level, logging.INFO))
    logger.propagate = False
    if file_error is not None:
        logger.warning("cannot open log file %s (%s); logging to stderr", log_file, file_error)
    return handlers


# --------------------------------------------------------------------------
# The agent
# --------------------------------------------------------------------------


class StopFlag:
    """Stop request that a signal handler can set and a sleeper can wait on.

    Uses a self-pipe (not threading.Event, whose lock a signal handler could
    deadlock on) so that a SIGTERM cuts the current sleep short.
    """

    def __init__(self) -> None:
        self.requested = False
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)

    def set(self) -> None:
        self.requested = True
        try:
            os.write(self._w, b"x")
        except OSError:
            pass

    def wait(self, timeout: float) -> bool:
        if not self.requested and timeout > 0:
            try:
                select.select([self._r], [], [], timeout)
            except (OSError, ValueError):
                pass
        return self.requested

    def close(self) -> None:
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


class Agent:
    """The collect/buffer/post loop.

    step() does whatever is due (collect a sample every `interval`, post the
    buffer unless backing off) and returns how long to sleep; run() loops
    over it.  Time comes from the injectable `monotonic` clock and `sleep`.
    """

    def __init__(
        self,
        config: Config,
        collector: Any = None,
        poster: Optional[Poster] = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Optional[Callable[[float], Any]] = None,
        rand: Callable[[], float] = random.random,
        logger: logging.Logger = LOG,
    ) -> None:
        self.config = config
        self.logger = logger
        self.collector = collector if collector is not None else Collector(
            proc_root=config.proc_root,
            disk_path=config.disk_path,
            nvidia_smi=config.nvidia_smi,
            nvidia_smi_timeout=config.nvidia_smi_timeout,
            sshd_pid_file=config.sshd_pid_file,
            logger=logger,
        )
        self.poster = poster if poster is not None else Poster(
            config.url, config.token, config.instance_id, config.timeout, config.ca_file
        )
        self.buffer = Buffer(config.buffer_size)
        self.backoff = Backoff(config.initial_backoff, config.max_backoff, rand)
        self.monotonic = monotonic
        self.stop_flag = StopFlag()
        self.sleep = sleep if sleep is not None else self.stop_flag.wait
        self.next_collect = None  # type: Optional[float]
        self.retry_at = None  # type: Optional[float]  # monotonic time before which we don't post
        self.failures = 0  # consecutive failed posts
        self.delivered_total = 0
        self.rejected_total = 0

    # -- control -------------------------------------------------------------

    def stop(self) -> None:
        self.stop_flag.set()

    @property
    def stopping(self) -> bool:
        return self.stop_flag.requested

    # -- one iteration -------------------------------------------------------

    def step(self) -> float:
        now = self.monotonic()
        if self.next_collect is None:
            self.next_collect = now
        if now >= self.next_collect:
            self.collect_once()
            self._schedule_next_collect()
        now = self.monotonic()
        if len(self.buffer) and (self.retry_at is None or now >= self.retry_at):
            self.flush()
        now = self.monotonic()
        wake = self.next_collect
        if len(self.buffer) and self.retry_at is not None:
            wake = min(wake, self.retry_at)
        return max(0.0, wake - now)

    def _schedule_next_collect(self) -> None:
        # Fixed grid start + k*interval: no drift; missed ticks (suspend, a
        # slow nvidia-smi) are skipped, not made up in a burst.
        interval = self.config.interval
        self.next_collect += interval
        now = self.monotonic()
        if self.next_collect <= now:
            missed = int((now - self.next_collect) // interval) + 1
            self.next_collect += missed * interval
            self.logger.warning("collection fell behind; skipped %d sample(s)", missed)

    def collect_once(self) -> Optional[Dict[str, Any]]:
        try:
            sample = self.collector.collect()
        except Exception:
            self.logger.exception("collecting a sample failed")
            return None
        if self.buffer.append(sample) and self.buffer.dropped_since_report == 1:
            self.logger.warning(
                "buffer full (%d samples): dropping the oldest samples until onebox "
                "accepts metrics again", self.buffer.maxlen,
            )
        return sample

    def flush(self, timeout: Optional[float] = None, retry: bool = True) -> bool:
        """Post the buffer, oldest first, MAX_BATCH at a time, until it is empty
        or a post fails.  Returns True if everything buffered was accepted."""
        all_accepted = True
        while len(self.buffer):
            batch = self.buffer.peek(MAX_BATCH)
            try:
                result = self.poster.post(batch.samples, timeout=timeout)
            except Exception as exc:  # a bug must not kill the agent
                self.logger.exception("posting metrics failed unexpectedly")
                result = PostResult(None, None, "internal error: %s" % type(exc).__name__)
            if result.ok:
                self.buffer.ack(batch)
                self.delivered_total += len(batch.samples)
                self._recovered()
                continue
            if result.status in DROP_STATUSES:
                n = self.buffer.ack(batch)
                self.rejected_total += n
                all_accepted = False
                self.logger.error(
                    "onebox refused %d sample(s) for good (%s); dropped them", n, result.detail
                )
                self._recovered()
                continue
            self._failed(result, retry)
            return False
        return all_accepted

    def _recovered(self) -> None:
        if self.failures:
            self.logger.info("onebox accepts metrics again after %d failed attempt(s)", self.failures)
        if self.buffer.dropped_since_report:
            self.logger.warning(
                "%d sample(s) were dropped because the buffer was full (%d dropped since start)",
                self.buffer.dropped_since_report, self.buffer.dropped_total,
            )
            self.buffer.dropped_since_report = 0
        self.failures = 0
        self.backoff.reset()
        self.retry_at = None

    def _failed(self, result: PostResult, retry: bool) -> None:
        self.failures += 1
        if retry:
            delay = self.backoff.next_delay(
                result.retry_after if result.status in (429, 503) else None
            )
            self.retry_at = self.monotonic() + delay
            then = "keeping them, retrying in %.1fs" % delay
        else:
            then = "giving up"
        if result.status in AUTH_STATUSES:
            why = "the agent token was rejected (invalid, revoked or rotated)"
            exp = jwt_expiry(self.config.token)
            if exp is not None and exp < time.time():
                why = "the agent token expired at %s" % format_timestamp(exp)
            self.logger.error(
                "onebox answered %s: %s; re-run the onebox agent role to install a new "
                "token. %d sample(s) not delivered, %s",
                result.detail, why, len(self.buffer), then,
            )
        else:
            self.logger.warning(
                "could not deliver %d sample(s) (%s); %s", len(self.buffer), result.detail, then
            )

    # -- modes ---------------------------------------------------------------

    def run(self) -> int:
        self.logger.info(
            "onebox-agent %s starting: instance_id=%s url=%s interval=%gs buffer=%d",
            __version__, self.config.instance_id, self.config.safe_url(),
            self.config.interval, self.config.buffer_size,
        )
        while not self.stopping:
            try:
                delay = self.step()
            except Exception:  # never die on a bug in one iteration
                self.logger.exception("unexpected error in the agent loop")
                delay = self.config.interval
            if self.stopping:
                break
            self.sleep(delay)
        return self.shutdown()

    def shutdown(self) -> int:
        pending = len(self.buffer)
        if pending:
            self.logger.info("stopping: trying once to deliver %d buffered sample(s)", pending)
            self.flush(timeout=min(self.config.timeout, SHUTDOWN_TIMEOUT), retry=False)
        if len(self.buffer):
            self.logger.warning("stopped; %d undelivered sample(s) lost", len(self.buffer))
        else:
            self.logger.info("stopped")
        return EXIT_OK

    def run_once(self) -> int:
        if self.collect_once() is None:
            return EXIT_FAILED
        ok = self.flush(retry=False)
        if ok:
            self.logger.info("posted 1 sample to %s%s", self.config.safe_url(), METRICS_PATH)
            return EXIT_OK
        return EXIT_FAILED


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onebox_agent.py", description="onebox monitoring agent (%s)" % __version__
    )
    parser.add_argument("--config", required=True, help="path of the JSON config file")
    parser.add_argument("--once", action="store_true",
                        help="collect and post one sample; exit 0 if onebox accepted it, else 1")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    args = parser.parse_args(argv)

    try:
        config, perm_warning = load_config(args.config)
    except ConfigError as exc:
        sys.stderr.write("onebox-agent: %s\n" % exc)
        return EXIT_CONFIG

    handlers = setup_logging(config.log_file, [config.token], config.log_level, also_stderr=args.once)
    agent = None
    previous = {}
    try:
        if perm_warning:
            LOG.warning("%s", perm_warning)
        if config.unknown_keys:
            LOG.warning("ignoring unknown config keys: %s", ", ".join(config.unknown_keys))
        try:
            agent = Agent(config)
        except OSError as exc:  # e.g. an unreadable or invalid ca_file
            LOG.error("cannot start: %s", exc)
            sys.stderr.write("onebox-agent: cannot start: %s\n" % exc)
            return EXIT_CONFIG
        if args.once:
            return agent.run_once()

        def on_signal(signum: int, frame: Any) -> None:
            if agent.stopping:  # second signal: give up on the final flush
                raise SystemExit(EXIT_OK)
            LOG.info("received signal %d, stopping", signum)
            agent.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)
        return agent.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if agent is not None:
            agent.stop_flag.close()
        for h in handlers:
            LOG.removeHandler(h)
            h.close()
        LOG.propagate = True


if __name__ == "__main__":
    sys.exit(main())
