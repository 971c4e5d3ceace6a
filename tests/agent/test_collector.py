"""Collector against fake /proc trees and a fake nvidia-smi on PATH."""

import json
import logging
import re
import shutil
import time

import pytest

from .conftest import FIXTURES

SAMPLE_KEYS = ["at", "cpu_percent", "load_avg", "memory_percent", "disk_percent",
               "net_rx_bytes", "net_tx_bytes", "disk_read_bytes", "disk_write_bytes", "ssh_sessions",
               "uptime_seconds", "gpus"]
TWO_GPUS = (FIXTURES / "nvidia-smi-2gpus.csv").read_text()


@pytest.fixture
def no_gpu(monkeypatch, tmp_path):
    """PATH without any nvidia-smi, whatever the machine has."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def make_collector(oa, root, tmp_path, **kw):
    kw.setdefault("disk_path", str(tmp_path))
    kw.setdefault("clock", lambda: 1794531600.0)
    return oa.Collector(proc_root=str(root), **kw)


def test_sample_from_fixture_proc(oa, proc_root, tmp_path, no_gpu):
    swapped = []

    def sleep(seconds):  # the short initial window: the second /proc/stat snapshot appears
        swapped.append(seconds)
        shutil.copy(FIXTURES / "stat.second", proc_root / "stat")

    sample = make_collector(oa, proc_root, tmp_path, sleep=sleep, cpu_window=0.5).collect()
    assert swapped == [0.5]
    assert list(sample) == SAMPLE_KEYS
    assert sample == {
        "at": "2026-11-13T01:00:00Z",
        "cpu_percent": 52.63,
        "load_avg": [0.52, 0.58, 0.59],
        "memory_percent": 26.52,
        "disk_percent": sample["disk_percent"],
        "net_rx_bytes": 335904688,
        "net_tx_bytes": 1199331,
        "disk_read_bytes": (4196110 + 80 + 2000) * 512,
        "disk_write_bytes": (9241344 + 16 + 4000) * 512,
        "ssh_sessions": 0,  # a fake /proc without processes
        "uptime_seconds": 350735.47,
        "gpus": [],
    }
    assert isinstance(sample["disk_percent"], float) and 0 <= sample["disk_percent"] <= 100
    json.dumps(sample, allow_nan=False)


def test_cpu_delta_between_samples(oa, proc_root, tmp_path, no_gpu):
    collector = make_collector(oa, proc_root, tmp_path, cpu_window=0)
    first = collector.collect()
    assert first["cpu_percent"] is None  # no initial window: nothing to compare with
    shutil.copy(FIXTURES / "stat.second", proc_root / "stat")
    assert collector.collect()["cpu_percent"] == 52.63
    assert collector.collect()["cpu_percent"] is None  # unchanged counters: no time passed


def test_old_kernel_fallbacks(oa, tmp_path, no_gpu):
    sample = make_collector(oa, FIXTURES / "proc_old_kernel", tmp_path, cpu_window=0).collect()
    assert sample["memory_percent"] == 60.0
    assert sample["net_rx_bytes"] == 4294967296 and sample["net_tx_bytes"] == 5
    assert sample["load_avg"] == [1.0, 2.0, 3.0]
    assert (sample["disk_read_bytes"], sample["disk_write_bytes"]) == (9550688 * 512, 5922052 * 512)


def test_malformed_proc_gives_nulls_and_log_lines(oa, tmp_path, no_gpu, caplog):
    caplog.set_level(logging.INFO, logger="onebox_agent")
    collector = make_collector(oa, FIXTURES / "proc_malformed", tmp_path, cpu_window=0.1,
                               disk_path=str(tmp_path / "does-not-exist"), sleep=lambda s: None)
    sample = collector.collect()
    assert list(sample) == SAMPLE_KEYS
    assert {k: v for k, v in sample.items() if k != "at"} == {
        "cpu_percent": None, "load_avg": None, "memory_percent": None, "disk_percent": None,
        "net_rx_bytes": None, "net_tx_bytes": None, "disk_read_bytes": None, "disk_write_bytes": None,
        "ssh_sessions": 0, "uptime_seconds": None, "gpus": [],
    }
    text = caplog.text
    for needle in ("cpu_percent unavailable (stat)", "load_avg unavailable (loadavg)",
                   "memory_percent unavailable (meminfo)", "uptime_seconds unavailable (uptime)",
                   "net_bytes unavailable (net/dev)", "eth0", "disk_percent unavailable",
                   "disk_io_bytes unavailable (diskstats)", "nvidia-smi not found"):
        assert needle in text
    # the same problem on the next sample is not logged again
    n = len(caplog.records)
    collector.collect()
    assert len(caplog.records) == n


def test_missing_proc_files(oa, tmp_path, no_gpu, caplog):
    empty = tmp_path / "emptyproc"
    empty.mkdir()
    sample = make_collector(oa, empty, tmp_path, cpu_window=0).collect()
    assert sample["cpu_percent"] is None and sample["net_rx_bytes"] is None
    assert sample["disk_percent"] is not None
    assert "No such file" in caplog.text


def test_recovery_is_logged(oa, proc_root, tmp_path, no_gpu, caplog):
    caplog.set_level(logging.INFO, logger="onebox_agent")
    (proc_root / "loadavg").write_text("broken\n")
    collector = make_collector(oa, proc_root, tmp_path, cpu_window=0)
    assert collector.collect()["load_avg"] is None
    (proc_root / "loadavg").write_text("1 2 3 1/1 1\n")
    assert collector.collect()["load_avg"] == [1.0, 2.0, 3.0]
    assert "load_avg: OK again" in caplog.text


def test_real_proc(oa, tmp_path, no_gpu):
    sample = oa.Collector(cpu_window=0.2).collect()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", sample["at"])
    assert 0 <= sample["cpu_percent"] <= 100
    assert 0 < sample["memory_percent"] <= 100
    assert 0 <= sample["disk_percent"] <= 100
    assert len(sample["load_avg"]) == 3 and sample["uptime_seconds"] > 0
    assert isinstance(sample["net_rx_bytes"], int)
    assert isinstance(sample["disk_read_bytes"], int) and isinstance(sample["ssh_sessions"], int)


def test_ssh_sessions_of_one_local_instance(oa, tmp_path, no_gpu):
    """A local instance's agent counts the sessions of its own sshd (from its pid file) only."""
    pid_file = FIXTURES / "sshd-i-a.pid"
    table = FIXTURES / "proc_sessions"
    assert make_collector(oa, table, tmp_path, cpu_window=0).collect()["ssh_sessions"] == 6
    assert make_collector(oa, table, tmp_path, cpu_window=0,
                          sshd_pid_file=str(pid_file)).collect()["ssh_sessions"] == 1
    gone = make_collector(oa, table, tmp_path, cpu_window=0, sshd_pid_file=str(tmp_path / "missing.pid"))
    assert gone.collect()["ssh_sessions"] is None, "an sshd that cannot be found: unknown, never 0"


# -- nvidia-smi ----------------------------------------------------------------------------


def gpu_collector(oa, tmp_path, timeout=5.0):
    return oa.Collector(proc_root=str(FIXTURES / "proc"), disk_path=str(tmp_path),
                        cpu_window=0, nvidia_smi_timeout=timeout)


def test_fake_nvidia_smi_two_gpus(oa, tmp_path, fake_nvidia_smi):
    args_file = tmp_path / "args"
    fake_nvidia_smi('echo "$@" > %s\ncat <<"CSV"\n%sCSV' % (args_file, TWO_GPUS))
    gpus = gpu_collector(oa, tmp_path).collect()["gpus"]
    assert args_file.read_text().split() == oa.NVIDIA_SMI_ARGS
    assert gpus == [
        {"index": 0, "name": "NVIDIA A100-SXM4-40GB", "utilization_percent": 37.0,
         "memory_used_mib": 1024.0, "memory_total_mib": 40960.0, "temperature_c": 45.0,
         "power_draw_w": 95.12, "power_limit_w": 400.0},
        {"index": 1, "name": "NVIDIA A100-SXM4-40GB", "utilization_percent": None,
         "memory_used_mib": 0.0, "memory_total_mib": 40960.0, "temperature_c": None,
         "power_draw_w": None, "power_limit_w": None},
    ]


@pytest.mark.parametrize("body, log_needle", [
    ("echo 'Unable to determine the device handle for GPU 0000:00:1E.0: Unknown Error'\n"
     "echo 'lorem ipsum dolor'", "unexpected output"),
    ("exit 0", None),  # nothing printed: no GPUs, nothing wrong
    ("echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\n"
     "exit 9", "exited with status 9: NVIDIA-SMI has failed"),
    ("exit 1", "exited with status 1: (no output)"),
    ("head -c 3000 /dev/urandom", "unexpected output"),
])
def test_fake_nvidia_smi_failures(oa, tmp_path, fake_nvidia_smi, caplog, body, log_needle):
    fake_nvidia_smi(body)
    assert gpu_collector(oa, tmp_path).collect()["gpus"] == []
    if log_needle:
        assert log_needle in caplog.text


def _gone_or_zombie(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_fake_nvidia_smi_hang_is_killed(oa, tmp_path, fake_nvidia_smi, caplog):
    pidfile = tmp_path / "child.pid"
    # the hanging work is a grandchild holding stdout open: killing only the
    # shell would leave communicate() waiting for it
    fake_nvidia_smi("sleep 30 &\necho $! > %s\nwait" % pidfile)
    collector = gpu_collector(oa, tmp_path, timeout=0.5)
    started = time.monotonic()
    assert collector.collect()["gpus"] == []
    assert time.monotonic() - started < 3
    assert "did not answer within 0.5s" in caplog.text
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while not _gone_or_zombie(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone_or_zombie(child)
    # a working nvidia-smi afterwards is picked up again
    fake_nvidia_smi("cat <<'CSV'\n%sCSV" % TWO_GPUS)
    assert len(collector.collect()["gpus"]) == 2


def test_nvidia_smi_configured_by_path(oa, tmp_path):
    script = tmp_path / "my-smi"
    script.write_text("#!/bin/sh\ncat <<'CSV'\n%sCSV\n" % TWO_GPUS)
    script.chmod(0o755)
    collector = oa.Collector(proc_root=str(FIXTURES / "proc"), disk_path=str(tmp_path),
                             cpu_window=0, nvidia_smi=str(script))
    assert [g["index"] for g in collector.collect()["gpus"]] == [0, 1]


def test_nvidia_smi_not_executable(oa, tmp_path, fake_nvidia_smi):
    path = fake_nvidia_smi("echo hi")
    path.chmod(0o644)
    assert gpu_collector(oa, tmp_path).collect()["gpus"] == []
