"""Is an instance idle? A pure judgement over its agent's samples in the idle window.

Idle means *every* signal stayed below its threshold for the *whole* window, so that neither a busy GPU
behind an idle CPU nor a stalled job spinning one CPU core in a loop that moves no data (busy CPU) is taken
for the other. The signals, from each sample (``app.metrics.models``):

* CPU use (``cpu_percent``);
* for every GPU: utilisation, memory in use (as a share of its total) and power draw (as a share of its
  power limit);
* network traffic and disk I/O, as rates between consecutive samples of the agent's byte counters;
* logged-in SSH sessions (interactive or not: an editor's remote session counts).

Missing data is never taken for idleness: a window whose samples do not cover it — a gap of more than
``MAX_GAP_INTERVALS`` agent intervals anywhere, at either edge included (a VM that just started, an agent
that stopped reporting, a stop in between) — is busy, and so is a sample without CPU use, SSH sessions or
byte counters, or a GPU without utilisation (an agent too old to send them counts as busy). A GPU field the
card cannot report (memory total, power limit) leaves that one signal out. Byte counters that go down (a
reboot) make that interval busy.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from app.clock import as_utc

MAX_GAP_INTERVALS = 1.5  # one missed sample (a gap of two intervals) makes the window busy
ROUNDING_SECONDS = 1.0  # agents stamp samples to the second


@dataclass(frozen=True)
class Thresholds:
    """Busy at or above any of these (``ONEBOX_IDLE_*`` settings)."""

    cpu_percent: float = 10.0
    gpu_percent: float = 5.0
    gpu_memory_percent: float = 10.0
    gpu_power_percent: float = 30.0
    network_bytes_per_second: float = 50_000
    disk_bytes_per_second: float = 100_000
    ssh_sessions: int = 1

    @classmethod
    def from_settings(cls, settings) -> "Thresholds":
        return cls(cpu_percent=settings.idle_cpu_percent, gpu_percent=settings.idle_gpu_percent,
                   gpu_memory_percent=settings.idle_gpu_memory_percent,
                   gpu_power_percent=settings.idle_gpu_power_percent,
                   network_bytes_per_second=settings.idle_network_bytes_per_second,
                   disk_bytes_per_second=settings.idle_disk_bytes_per_second,
                   ssh_sessions=settings.idle_ssh_sessions)


@dataclass(frozen=True)
class Verdict:
    idle: bool
    reason: str  # why not, or a summary of the window when idle

    def __bool__(self) -> bool:
        return self.idle


def _busy(reason: str) -> Verdict:
    return Verdict(False, reason)


def _sample_busy(sample: dict[str, Any], t: Thresholds) -> str | None:
    """Why one sample shows activity (or tells too little), or None when it is quiet."""
    cpu = sample.get("cpu_percent")
    if cpu is None:
        return "a sample without CPU use"
    if cpu >= t.cpu_percent:
        return f"CPU at {cpu:g}% (busy from {t.cpu_percent:g}%)"
    sessions = sample.get("ssh_sessions")
    if sessions is None:
        return "a sample without the count of SSH sessions (agent too old?)"
    if sessions >= t.ssh_sessions:
        return f"{sessions} SSH session(s) logged in"
    for gpu in sample.get("gpus") or []:
        name = f"GPU {gpu.get('index')}"
        util = gpu.get("utilization_percent")
        if util is None:
            return f"{name} without utilisation"
        if util >= t.gpu_percent:
            return f"{name} at {util:g}% (busy from {t.gpu_percent:g}%)"
        used, total = gpu.get("memory_used_mib"), gpu.get("memory_total_mib")
        if used is not None and total:
            share = 100.0 * used / total
            if share >= t.gpu_memory_percent:
                return f"{name} memory {share:.0f}% in use (busy from {t.gpu_memory_percent:g}%)"
        power, limit = gpu.get("power_draw_w"), gpu.get("power_limit_w")
        if power is not None and limit:
            share = 100.0 * power / limit
            if share >= t.gpu_power_percent:
                return f"{name} drawing {share:.0f}% of its power limit (busy from {t.gpu_power_percent:g}%)"
    return None


def _rate(prev: dict, cur: dict, keys: tuple[str, ...], seconds: float) -> float | None:
    """Bytes per second of the summed counters ``keys``; None when unknown or reset."""
    before = [prev.get(k) for k in keys]
    after = [cur.get(k) for k in keys]
    if None in before or None in after:
        return None
    delta = sum(after) - sum(before)
    if delta < 0 or seconds <= 0:
        return None
    return delta / seconds


def judge(samples: list[dict[str, Any]], window_start: dt.datetime, now: dt.datetime,
          interval_seconds: float, thresholds: Thresholds) -> Verdict:
    """Idle over [``window_start``, ``now``]? ``samples``: oldest first, from at least one agent interval
    before ``window_start`` (the baseline of the first rates) up to ``now``."""
    max_gap = interval_seconds * MAX_GAP_INTERVALS + ROUNDING_SECONDS
    points = sorted(((as_utc(s["at"]), s) for s in samples if s.get("at") is not None), key=lambda p: p[0])
    points = [p for p in points if p[0] <= now]
    # The baseline: the last sample at or before the window's start (if close enough to it), then the window.
    before = [p for p in points if p[0] <= window_start]
    inside = [p for p in points if p[0] > window_start]
    baseline = before[-1] if before and (window_start - before[-1][0]).total_seconds() <= max_gap else None
    if not inside:
        return _busy("no samples in the window")
    chain = ([baseline] if baseline else []) + inside
    edge = chain[0][0]
    if (edge - window_start).total_seconds() > max_gap:
        return _busy(f"no samples for the first {(edge - window_start).total_seconds():.0f}s of the window")
    if (now - chain[-1][0]).total_seconds() > max_gap:
        return _busy(f"no sample for the last {(now - chain[-1][0]).total_seconds():.0f}s")
    for (t0, s0), (t1, s1) in zip(chain, chain[1:]):
        gap = (t1 - t0).total_seconds()
        if gap > max_gap:
            return _busy(f"a gap of {gap:.0f}s in the samples at {t0.isoformat()}")
        seconds = max(gap, 1e-9)
        net = _rate(s0, s1, ("net_rx_bytes", "net_tx_bytes"), seconds)
        if net is None:
            return _busy("network byte counters missing or reset")
        if net >= thresholds.network_bytes_per_second:
            return _busy(f"network at {net:.0f} B/s (busy from {thresholds.network_bytes_per_second:g})")
        disk = _rate(s0, s1, ("disk_read_bytes", "disk_write_bytes"), seconds)
        if disk is None:
            return _busy("disk byte counters missing or reset")
        if disk >= thresholds.disk_bytes_per_second:
            return _busy(f"disk I/O at {disk:.0f} B/s (busy from {thresholds.disk_bytes_per_second:g})")
    for at, sample in inside:
        why = _sample_busy(sample, thresholds)
        if why is not None:
            return _busy(f"{why} at {at.isoformat()}")
    window = (now - window_start).total_seconds()
    return Verdict(True, f"idle on every signal for {window:.0f}s ({len(inside)} samples)")
