"""What every scenario shares: a throwaway database, an API process, load tools, result rows.

Each scenario starts what it needs here and stops it before returning, so
scenarios run alone or one after another in any order. The database is an
embedded server of its own (``app.embedded_db``) with its file on tmpfs
(/dev/shm) when there is one, like the tests' (tests/conftest.py).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from app.clock import utcnow
from app.embedded_db import EmbeddedDatabase
from app.ids import new_instance_id
from app.lifecycle.specs import DEFAULT_DISK_GB
from app.settings import REPO_ROOT
from app.worker.jobs import new_job
from tests.support import free_port, wait_for_port

SECRET = "bench-secret-" + "b" * 40
BIN = REPO_ROOT / ".bin"
DATABASE = "bench"


@dataclass
class Row:
    """One line of bench/results.md: a measured value, its same-run baseline and the target."""

    scenario: str
    metric: str
    value: float
    unit: str
    baseline: float | None = None  # same unit, measured in the same run
    baseline_label: str = ""
    ratio: float | None = None  # value / baseline unless the scenario says otherwise
    target: str = ""
    met: bool | None = None  # None: reported, no target
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline

    def as_dict(self) -> dict:
        return asdict(self)


def percentile(values: list[float], p: float) -> float:
    """The p-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p * len(ordered) + 0.5)) - 1))]


@contextlib.contextmanager
def scratch(name: str) -> Iterator[Path]:
    """A directory for one scenario's database, logs and load files, on tmpfs; removed afterwards."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    path = base / f"onebox-bench-{name}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    try:
        yield path
    finally:
        if os.environ.get("BENCH_KEEP"):
            print(f"   kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def dbserver(work: Path, cache_mb: int = 2048) -> Iterator[EmbeddedDatabase]:
    """The embedded database as `make run` starts it, with a cache that holds the largest data set."""
    db = EmbeddedDatabase(BIN / "mongo-server", f"127.0.0.1:{free_port()}", work / "db", cache_mb=cache_mb,
                          log_path=work / "dbserver.log").start()
    try:
        yield db
    finally:
        db.stop()


def onebox_env(db: EmbeddedDatabase, work: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBOX_")}
    env.update({
        "ONEBOX_MONGODB_URL": db.url(), "ONEBOX_DATABASE": DATABASE, "ONEBOX_JWT_SECRET": SECRET,
        "ONEBOX_DATA_DIR": str(work / "data"), "ONEBOX_LOG_LEVEL": "WARNING",
        "ONEBOX_RATE_LIMIT_PER_MINUTE": "100000000", "ONEBOX_QUOTA_MAX_INSTANCES": "100000",
        "ONEBOX_QUOTA_MAX_VCPUS": "1000000",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True, cwd=REPO_ROOT)


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


@contextlib.contextmanager
def api_server(db: EmbeddedDatabase, work: Path, host: bool = False, **extra_env) -> Iterator[int]:
    """``onebox serve --no-worker`` in its own process (``host``: bench/host.py's); yields its port."""
    port = free_port()
    module = ["bench.host"] if host else ["app.cli"]
    process = start([sys.executable, "-m", *module, "serve", "--no-worker", "--port", str(port)],
                    onebox_env(db, work, **extra_env), work / "api.log")
    try:
        wait_for_port("127.0.0.1", port, 60)
        yield port
    finally:
        stop(process)


def instance_doc(owner: str, *, status: str = "running", provider: str = "local", instance_id: str | None = None,
                 now=None, **extra) -> dict:
    """An instance record shaped as ``InstanceService.create`` and the worker leave it."""
    now = now or utcnow()
    job = new_job("provision", now)
    job.update(steps_done=["create", "wait_running", "configure"] if status == "running" else [])
    return {
        "_id": instance_id or new_instance_id(), "owner": owner, "name": "box", "provider": provider,
        "region": "local", "zone": None, "machine_type": "local", "image": None, "snapshot_id": None,
        "ssh_user": owner.replace("-", "_")[:32] or "user", "labels": {"team": "bench"}, "buckets": [],
        "bootstrap_script": None,
        "ssh_public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBenchBenchBenchBenchBenchBenchBenchBench bench",
        "disk_gb": DEFAULT_DISK_GB, "status": status, "error": None, "public_ip": "127.0.0.10",
        "private_ip": "127.0.0.10", "ssh_port": 2222, "cloud_id": "local", "created_at": now, "updated_at": now,
        "job": job, **extra,
    }


# --- load tools ---------------------------------------------------------------------------------

def vegeta_attack(targets: list[dict], rate: float, seconds: float, work: Path, name: str,
                  workers: int = 64) -> dict:
    """An open-loop attack at a constant ``rate`` (vegeta); targets are {method, url, header, body}."""
    path = work / f"{name}.targets"
    with open(path, "w") as out:
        for t in targets:
            out.write(json.dumps({**t, "body": base64.b64encode(t["body"]).decode()}) + "\n")
    attack = subprocess.Popen(
        [str(BIN / "vegeta"), "attack", "-format=json", f"-targets={path}", f"-rate={rate:.0f}/s",
         f"-duration={seconds:.2f}s", f"-workers={workers}", "-max-workers=4096", "-timeout=10s",
         f"-output={work / (name + '.bin')}"], stdout=subprocess.DEVNULL)
    attack.wait()
    report = subprocess.run([str(BIN / "vegeta"), "report", "-type=json", str(work / f"{name}.bin")],
                            capture_output=True, text=True, check=True).stdout
    data = json.loads(report)
    codes = data.get("status_codes", {})
    return {
        "requests": data["requests"], "offered": data["rate"], "throughput": data["throughput"],
        "p50_ms": data["latencies"]["50th"] / 1e6, "p99_ms": data["latencies"]["99th"] / 1e6,
        "success": data["success"], "status_codes": codes,
    }


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, connections: int, seconds: float, script: Path | None = None, headers: dict | None = None,
        env: dict | None = None, threads: int = 2) -> dict:
    """A closed-loop run of wrk at ``connections``: the most the server answers, with latency."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, int(seconds))}s", "--latency"]
    for key, value in (headers or {}).items():
        argv += ["-H", f"{key}: {value}"]
    if script:
        argv += ["-s", str(script)]
    out = subprocess.run(argv + [url], env={**os.environ, **(env or {})}, capture_output=True, text=True,
                         check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)

    def quantile(q: str) -> float:  # from the "Latency Distribution" block; none when nothing came back
        found = re.search(rf"^\s+{q}%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.MULTILINE)
        return _ms(found.group(1)) if found else float("nan")

    return {
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": quantile("50"), "p99_ms": quantile("99"),
        "errors": (int(errors.group(1)) if errors else 0) + (int(timeouts.group(1)) if timeouts else 0),
    }


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS
