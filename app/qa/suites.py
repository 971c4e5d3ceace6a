"""The QA suites as data: which steps each runs, which checks it reports, what it may be given.

A suite is a fixed list of named checks with a unit and a direction, so results
of different runs, instances, providers and machine types line up: baselines
are kept per (suite, check, provider, machine type) and charts compare the same
check across runs. Everything here is a pure table; the job
(``app.qa.jobs``) runs the steps, the parsers (``app.qa.parsers``) turn tool
output into results for these checks, and ``app.qa.baselines`` judges them.

Kinds of check:

* ``pass_fail`` — holds or not (smoke checks, GPU count); no value to compare.
* ``measure`` — a number with a direction (``higher`` or ``lower`` is better),
  compared with the baseline when there is one. ``auto_baseline`` says whether
  a baseline is derived from previous passed runs; noisy measures (latency
  tails, retransmits, UDP jitter) are judged only against a baseline an admin
  set on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Check:
    name: str
    title: str  # for people: reports, the dashboard
    kind: Literal["pass_fail", "measure"] = "measure"
    unit: str = ""
    better: Better | None = None  # measures only
    tolerance_percent: float = 25.0  # how far below (or above, for "lower") the baseline still passes
    auto_baseline: bool = True  # derived from previous passed runs when no admin baseline is set


def _pf(name: str, title: str) -> Check:
    return Check(name, title, kind="pass_fail", auto_baseline=False)


@dataclass(frozen=True)
class Param:
    """One tunable of a suite, with its bounds (checked before anything is queued)."""

    name: str
    default: int | float | list[str]
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()  # list parameters: the values allowed
    description: str = ""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    steps: tuple[str, ...]  # the suite's own steps, between ``prepare`` and ``teardown``
    checks: tuple[Check, ...]
    tools: tuple[str, ...] = ()  # OS packages the qa_tools role installs (Debian/Ubuntu names)
    min_instances: int = 1
    max_instances: int = 8
    params: tuple[Param, ...] = ()
    charts: tuple[str, ...] = ("checks",)  # report charts (``app.qa.report``)
    per_instance: bool = True  # steps run on each instance in turn (network pairs them instead)
    main_check: str = ""  # the check a trend chart follows by default
    check_index: dict[str, Check] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "check_index", {c.name: c for c in self.checks})

    def check(self, name: str) -> Check:
        return self.check_index[name]

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def defaults(self) -> dict[str, object]:
        return {p.name: p.default for p in self.params}


BLOCK_SIZES = ("4k", "8k", "16k", "64k", "256k", "1m")

SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite(
        name="smoke",
        description="The instance is usable: SSH, sudo, Python, the agent reporting, the bootstrap script's "
                    "exit code, the bucket mounts.",
        steps=("smoke",),
        checks=(
            _pf("ssh_reachable", "SSH reachable with onebox's key"),
            _pf("sudo", "passwordless sudo for the SSH user"),
            _pf("python", "Python 3.8 or newer"),
            _pf("agent_reporting", "the agent reports to onebox"),
            _pf("bootstrap_exit", "the bootstrap script exited with 0"),
            _pf("bucket_mounts", "every bucket is mounted"),
        ),
    ),
    Suite(
        name="network",
        description="iperf3 between two instances (TCP both ways with parallel streams, UDP at a target rate) and "
                    "the TCP round trip; with one instance, against onebox's own host.",
        steps=("network_tcp", "network_tcp_reverse", "network_udp", "network_latency"),
        checks=(
            Check("tcp_mbps", "TCP throughput, client → server", unit="Mbit/s", better="higher"),
            Check("tcp_reverse_mbps", "TCP throughput, server → client", unit="Mbit/s", better="higher"),
            Check("tcp_retransmits", "TCP retransmits (both ways)", unit="segments", better="lower",
                  tolerance_percent=100.0, auto_baseline=False),
            Check("udp_jitter_ms", "UDP jitter at the target rate", unit="ms", better="lower",
                  tolerance_percent=100.0, auto_baseline=False),
            Check("udp_loss_percent", "UDP datagrams lost at the target rate", unit="%", better="lower",
                  tolerance_percent=100.0, auto_baseline=False),
            Check("latency_p50_ms", "TCP round trip, median", unit="ms", better="lower", tolerance_percent=100.0,
                  auto_baseline=False),
            Check("latency_p99_ms", "TCP round trip, 99th percentile", unit="ms", better="lower",
                  tolerance_percent=200.0, auto_baseline=False),
        ),
        tools=("iperf3",),
        max_instances=2,
        per_instance=False,
        params=(
            Param("duration_seconds", 10, 1, 120, description="length of each iperf3 test"),
            Param("parallel_streams", 4, 1, 32, description="TCP streams at once"),
            Param("udp_target_mbps", 100, 1, 100_000, description="UDP offered rate"),
            Param("latency_samples", 20, 3, 1000, description="TCP connections timed for the round trip"),
        ),
        charts=("checks", "throughput", "latency"),
        main_check="tcp_mbps",
    ),
    Suite(
        name="disk",
        description="fio on the root disk (sequential MB/s, random IOPS by block size, latency percentiles) and on "
                    "each object-store (goofys) mount.",
        steps=("disk_root", "disk_mounts"),
        checks=(
            Check("seq_write_mb_s", "sequential write, 1 MiB blocks", unit="MB/s", better="higher", tolerance_percent=30.0),
            Check("seq_read_mb_s", "sequential read, 1 MiB blocks", unit="MB/s", better="higher", tolerance_percent=30.0),
            Check("rand_read_iops", "random read IOPS, 4 KiB", unit="IOPS", better="higher", tolerance_percent=30.0),
            Check("rand_write_iops", "random write IOPS, 4 KiB", unit="IOPS", better="higher", tolerance_percent=30.0),
            Check("rand_read_p99_ms", "random read latency, 99th percentile", unit="ms", better="lower",
                  tolerance_percent=100.0, auto_baseline=False),
            Check("rand_write_p99_ms", "random write latency, 99th percentile", unit="ms", better="lower",
                  tolerance_percent=100.0, auto_baseline=False),
            Check("mount_write_mb_s", "bucket mount, sequential write", unit="MB/s", better="higher",
                  tolerance_percent=40.0),
            Check("mount_read_mb_s", "bucket mount, sequential read", unit="MB/s", better="higher",
                  tolerance_percent=40.0),
        ),
        tools=("fio",),
        params=(
            Param("runtime_seconds", 10, 1, 300, description="length of each fio job"),
            Param("size_mb", 256, 8, 16_384, description="size of the test file"),
            Param("block_sizes", ["4k", "64k", "1m"], choices=BLOCK_SIZES,
                  description="random-read block sizes (the IOPS-by-block-size chart); 4k always runs"),
        ),
        charts=("checks", "iops", "disk_latency"),
        main_check="rand_read_iops",
    ),
    Suite(
        name="cpu",
        description="sysbench's CPU test (primes by trial division): one thread, then one per vCPU.",
        steps=("cpu",),
        checks=(
            Check("cpu_single_events_s", "CPU, one thread", unit="events/s", better="higher", tolerance_percent=15.0),
            Check("cpu_all_events_s", "CPU, one thread per vCPU", unit="events/s", better="higher",
                  tolerance_percent=15.0),
        ),
        tools=("sysbench",),
        params=(Param("cpu_seconds", 10, 1, 300, description="length of each sysbench run"),),
        main_check="cpu_all_events_s",
    ),
    Suite(
        name="memory",
        description="Memory bandwidth, STREAM-like copy (memcpy of buffers larger than any cache, bytes read and "
                    "written counted): one thread, then one per vCPU.",
        steps=("memory",),
        checks=(
            Check("mem_copy_single_mb_s", "memory copy, one thread", unit="MB/s", better="higher",
                  tolerance_percent=20.0),
            Check("mem_copy_all_mb_s", "memory copy, one thread per vCPU", unit="MB/s", better="higher",
                  tolerance_percent=20.0),
        ),
        tools=("sysbench",),
        params=(
            Param("memory_seconds", 10, 1, 300, description="length of each run"),
            Param("block_mb", 64, 1, 1024, description="buffer size per thread (two of them)"),
        ),
        main_check="mem_copy_all_mb_s",
    ),
    Suite(
        name="gpu",
        description="nvidia-smi: device count and model against the machine type, then temperatures, power and "
                    "utilization sampled during a load; skipped with a reason on machine types without GPUs.",
        steps=("gpu",),
        checks=(
            _pf("gpu_count", "GPU count matches the machine type"),
            _pf("gpu_model", "GPU model matches the machine type"),
            _pf("gpu_load", "the GPU load test ran"),
            Check("gpu_memory_total_mb", "GPU memory per device", unit="MiB", better="higher", tolerance_percent=1.0),
            Check("gpu_temperature_max_c", "hottest GPU during the load", unit="°C", better="lower",
                  tolerance_percent=15.0, auto_baseline=False),
            Check("gpu_power_max_w", "highest GPU power draw during the load", unit="W", better="lower",
                  tolerance_percent=25.0, auto_baseline=False),
            Check("gpu_utilization_max_percent", "highest GPU utilization during the load", unit="%",
                  better="higher", tolerance_percent=50.0, auto_baseline=False),
        ),
        params=(Param("gpu_seconds", 30, 5, 600, description="length of the load, sampled every second"),),
        main_check="gpu_memory_total_mb",
    ),
)}

COMMON_STEPS_BEFORE = ("prepare",)
COMMON_STEPS_AFTER = ("teardown",)


def job_steps(suite: Suite) -> tuple[str, ...]:
    """Every step of a run of ``suite``, in order: install the tools, the suite's own, remove everything."""
    return COMMON_STEPS_BEFORE + suite.steps + COMMON_STEPS_AFTER


def all_steps() -> tuple[str, ...]:
    seen: dict[str, None] = dict.fromkeys(COMMON_STEPS_BEFORE)
    for suite in SUITES.values():
        seen.update(dict.fromkeys(suite.steps))
    seen.update(dict.fromkeys(COMMON_STEPS_AFTER))
    return tuple(seen)


class ParamError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def resolve_params(suite: Suite, given: dict[str, object] | None) -> dict[str, object]:
    """The suite's defaults overridden by ``given``; ``ParamError`` names the first bad field."""
    values = suite.defaults()
    for name, value in (given or {}).items():
        param = suite.param(name)
        where = f"params.{name}"
        if param is None:
            known = ", ".join(p.name for p in suite.params) or "none"
            raise ParamError(where, f"not a parameter of the {suite.name} suite (known: {known})")
        if isinstance(param.default, list):
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise ParamError(where, "must be a non-empty list of strings")
            unknown = [v for v in value if v not in param.choices]
            if unknown:
                raise ParamError(where, f"unknown values {unknown}; choose from {', '.join(param.choices)}")
            values[name] = sorted(set(value), key=param.choices.index)
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(where, "must be a number")
        if isinstance(param.default, int) and not float(value).is_integer():
            raise ParamError(where, "must be a whole number")
        if (param.minimum is not None and value < param.minimum) or (param.maximum is not None and value > param.maximum):
            raise ParamError(where, f"must be between {param.minimum:g} and {param.maximum:g}")
        values[name] = int(value) if isinstance(param.default, int) else float(value)
    return values
