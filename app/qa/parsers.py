"""Tool output → numbers: every QA measurement comes from a tool's machine-readable output.

iperf3 ``-J``, fio ``--output-format=json``, the JSON line the suite's sysbench
scripts print from their report hook (``playbooks/roles/qa_tools/files``),
nvidia-smi ``--format=csv,noheader,nounits`` and the JSON of onebox's own probe
(``onebox_qa_probe.py``: TCP round trips, smoke facts). Nothing is scraped from
prose. Pure functions, tested on real outputs captured from the tools
(``tests/qa/fixtures``). Units: Mbit/s and MB/s are decimal (10^6), latencies
are milliseconds.

A tool that reports an error in its own output, or output that is not what the
tool writes, raises ``ToolOutputError`` with a message for the user.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


class ToolOutputError(ValueError):
    """The tool failed (its own error message), or its output is not what it writes."""


def _json(text: str, tool: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        tail = " ".join(text.strip().splitlines()[-3:])[-300:]
        raise ToolOutputError(f"{tool} did not print JSON: {tail or 'no output'}") from None


def percentile(values: list[float], pct: float) -> float:
    """The ``pct``-th percentile by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# --- iperf3 -------------------------------------------------------------------------------------

@dataclass
class StreamSeries:
    """One TCP stream's throughput per reporting interval."""

    socket: int
    points: list[tuple[float, float]]  # (seconds since start, Mbit/s) at each interval's end


@dataclass
class TcpResult:
    mbps: float  # received by the far end: what crossed the network
    sent_mbps: float
    retransmits: int | None  # None when the sender's kernel does not say (reverse tests on old servers)
    seconds: float
    streams: list[StreamSeries]
    reverse: bool


@dataclass
class UdpResult:
    mbps: float
    jitter_ms: float
    lost_percent: float
    packets: int
    lost_packets: int


def _iperf3_doc(text: str, protocol: str) -> dict[str, Any]:
    doc = _json(text, "iperf3")
    if not isinstance(doc, dict):
        raise ToolOutputError("iperf3 printed JSON that is not its report")
    if doc.get("error"):
        raise ToolOutputError(f"iperf3: {doc['error']}")
    if "end" not in doc or "intervals" not in doc:
        raise ToolOutputError("iperf3's report has no results")
    if doc.get("start", {}).get("test_start", {}).get("protocol") != protocol:
        other = "UDP" if protocol == "TCP" else "TCP"
        raise ToolOutputError(f"iperf3's report has no {protocol} totals (was it a {other} test?)")
    return doc


def parse_iperf3_tcp(text: str) -> TcpResult:
    doc = _iperf3_doc(text, "TCP")
    end = doc["end"]
    received, sent = end.get("sum_received"), end.get("sum_sent")
    if not received or not sent:
        raise ToolOutputError("iperf3's report has no TCP totals")
    series: dict[int, list[tuple[float, float]]] = {}
    for interval in doc["intervals"]:
        for stream in interval.get("streams", []):
            if stream.get("omitted"):
                continue
            series.setdefault(stream["socket"], []).append(
                (round(stream["end"], 3), stream["bits_per_second"] / 1e6))
    reverse = bool(doc.get("start", {}).get("test_start", {}).get("reverse"))
    retransmits = sent.get("retransmits")
    return TcpResult(mbps=received["bits_per_second"] / 1e6, sent_mbps=sent["bits_per_second"] / 1e6,
                     retransmits=int(retransmits) if retransmits is not None else None,
                     seconds=received["seconds"], reverse=reverse,
                     streams=[StreamSeries(sock, points) for sock, points in sorted(series.items())])


def parse_iperf3_udp(text: str) -> UdpResult:
    doc = _iperf3_doc(text, "UDP")
    total = doc["end"].get("sum")
    if not total or "jitter_ms" not in total:
        raise ToolOutputError("iperf3's report has no UDP totals")
    return UdpResult(mbps=total["bits_per_second"] / 1e6, jitter_ms=float(total["jitter_ms"]),
                     lost_percent=float(total.get("lost_percent") or 0.0), packets=int(total.get("packets", 0)),
                     lost_packets=int(total.get("lost_packets", 0)))


# --- fio ----------------------------------------------------------------------------------------

@dataclass
class FioSide:
    """One direction (read or write) of one fio job."""

    iops: float
    mb_s: float
    clat_ms: dict[float, float]  # completion latency percentiles: {99.0: 1.2, …}


@dataclass
class FioJob:
    name: str
    rw: str
    block_size: str
    read: FioSide
    write: FioSide

    @property
    def main(self) -> FioSide:
        return self.write if "write" in self.rw else self.read


def _side(data: dict[str, Any]) -> FioSide:
    clat = data.get("clat_ns") or {}
    percentiles = {float(p): ns / 1e6 for p, ns in (clat.get("percentile") or {}).items()}
    return FioSide(iops=float(data.get("iops", 0.0)), mb_s=float(data.get("bw_bytes", 0)) / 1e6, clat_ms=percentiles)


def parse_fio(text: str) -> dict[str, FioJob]:
    """fio's JSON report → its jobs by name. A job that reports an error fails the whole parse."""
    start = text.find("{")  # fio may print a note ("fio: ... ") before the JSON on stdout
    doc = _json(text[start:] if start >= 0 else text, "fio")
    if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
        raise ToolOutputError("fio printed JSON that is not its report")
    jobs: dict[str, FioJob] = {}
    for job in doc["jobs"]:
        if job.get("error"):
            raise ToolOutputError(f"fio job {job.get('jobname')} failed with error {job['error']}")
        options = {**doc.get("global options", {}), **job.get("job options", {})}
        jobs[job["jobname"]] = FioJob(name=job["jobname"], rw=options.get("rw", "read"),
                                      block_size=str(options.get("bs", "")).lower(),
                                      read=_side(job.get("read", {})), write=_side(job.get("write", {})))
    if not jobs:
        raise ToolOutputError("fio ran no job")
    return jobs


# --- sysbench (the suite's Lua scripts) ---------------------------------------------------------

@dataclass
class SysbenchResult:
    test: str  # "cpu" or "memory"
    threads: int
    events: int
    seconds: float
    latency_pct_ms: float
    percentile: int
    block_bytes: int = 0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def copy_mb_s(self) -> float:
        """STREAM's convention for copy: bytes read plus bytes written."""
        return 2 * self.block_bytes * self.events_per_second / 1e6


def parse_sysbench(text: str) -> SysbenchResult:
    """The JSON line printed by the report hook of ``onebox_qa_cpu.lua`` / ``onebox_qa_memory.lua``."""
    lines = [line for line in text.splitlines() if line.startswith('{"onebox_qa"')]
    if not lines:
        tail = " ".join(text.strip().splitlines()[-3:])[-300:]
        raise ToolOutputError(f"sysbench printed no report: {tail or 'no output'}")
    doc = _json(lines[-1], "sysbench")
    if doc.get("events", 0) <= 0:
        raise ToolOutputError("sysbench ran no event")
    return SysbenchResult(test=doc["onebox_qa"], threads=int(doc["threads"]), events=int(doc["events"]),
                          seconds=float(doc["seconds"]), latency_pct_ms=float(doc["latency_pct_s"]) * 1000,
                          percentile=int(doc["percentile"]), block_bytes=int(doc.get("block_bytes", 0)))


# --- nvidia-smi ---------------------------------------------------------------------------------

NVIDIA_SMI_FIELDS = ("index", "name", "memory.total", "memory.used", "utilization.gpu", "temperature.gpu",
                     "power.draw", "power.limit")


@dataclass
class GpuSample:
    index: int
    name: str
    memory_total_mb: float | None
    memory_used_mb: float | None
    utilization_percent: float | None
    temperature_c: float | None
    power_w: float | None
    power_limit_w: float | None


def _number(value: str) -> float | None:
    value = value.strip()
    if not value or value.startswith("[") or value in ("N/A", "Not Supported"):
        return None  # "[N/A]", "[Not Supported]": the driver does not report it for this device
    try:
        return float(value)
    except ValueError:
        raise ToolOutputError(f"nvidia-smi printed {value!r} where a number belongs") from None


def parse_nvidia_smi(text: str) -> list[GpuSample]:
    """``nvidia-smi --query-gpu=<NVIDIA_SMI_FIELDS> --format=csv,noheader,nounits``: one line per GPU."""
    samples = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != len(NVIDIA_SMI_FIELDS):
            raise ToolOutputError(f"nvidia-smi line has {len(parts)} fields, expected {len(NVIDIA_SMI_FIELDS)}: "
                                  f"{line[:200]}")
        index = _number(parts[0])
        if index is None:
            raise ToolOutputError(f"nvidia-smi line without a GPU index: {line[:200]}")
        samples.append(GpuSample(int(index), parts[1], *(_number(p) for p in parts[2:])))
    return samples


# --- onebox's probe -----------------------------------------------------------------------------

@dataclass
class LatencyResult:
    samples_ms: list[float]
    errors: int
    target: str
    percentiles_ms: dict[float, float] = field(default_factory=dict)


LATENCY_PERCENTILES = (50.0, 90.0, 99.0)


def parse_latency(text: str) -> LatencyResult:
    doc = _json(text, "the latency probe")
    samples = [float(s) for s in doc.get("samples_ms", [])]
    if not samples:
        raise ToolOutputError(f"no TCP connection to {doc.get('target', 'the peer')} succeeded "
                              f"({doc.get('errors', 0)} failed: {doc.get('last_error') or 'no answer'})")
    return LatencyResult(samples_ms=samples, errors=int(doc.get("errors", 0)), target=str(doc.get("target", "")),
                         percentiles_ms={p: percentile(samples, p) for p in LATENCY_PERCENTILES})


def parse_probe(text: str, what: str) -> dict[str, Any]:
    doc = _json(text, what)
    if not isinstance(doc, dict):
        raise ToolOutputError(f"{what} printed JSON that is not its report")
    return doc
