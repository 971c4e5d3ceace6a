"""The real file, run as a subprocess, against a local HTTP server."""

import ast
import calendar
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from .conftest import AGENT_PATH, FIXTURES, PROXY_VARS, TOKEN

TWO_GPUS = (FIXTURES / "nvidia-smi-2gpus.csv").read_text()


def find_python38():
    """A working Python 3.8 if this machine has one (the oldest VM interpreter we support)."""
    candidates = [os.environ.get("ONEBOX_AGENT_PY38"), "python3.8"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")))
    for exe in filter(None, candidates):
        try:
            out = subprocess.run([exe, "-c", "import sys; print(sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out.returncode == 0 and out.stdout.strip() == "(3, 8)":
            return exe
    return None


@pytest.fixture
def env(tmp_path):
    """Environment for the agent: no proxies, a fake nvidia-smi first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text("#!/bin/sh\ncat <<'CSV'\n%sCSV\n" % TWO_GPUS)
    smi.chmod(0o755)
    e = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}
    e["PATH"] = str(bindir) + os.pathsep + e.get("PATH", "")
    return e


@pytest.fixture
def write_config(tmp_path):
    def write(mode=0o600, **values):
        cfg = {"url": None, "token": TOKEN, "instance_id": "i-0abc", "interval": 30,
               "buffer_size": 120, "timeout": 3, "log_file": str(tmp_path / "agent.log"),
               "max_backoff": 300}
        cfg.update(values)
        path = tmp_path / "agent.json"
        path.write_text(json.dumps({k: v for k, v in cfg.items() if v is not ...}))
        path.chmod(mode)
        return path
    return write


def run_agent(args, env, python=sys.executable, timeout=20):
    return subprocess.run([python, str(AGENT_PATH)] + args, env=env, capture_output=True,
                          text=True, timeout=timeout)


PYTHONS = [pytest.param(sys.executable, id="py%d%d" % sys.version_info[:2])]
PY38 = find_python38()
PYTHONS.append(pytest.param(PY38, id="py38", marks=pytest.mark.skipif(
    PY38 is None, reason="no Python 3.8 interpreter on this machine")))


@pytest.mark.parametrize("python", PYTHONS)
def test_once_posts_a_real_sample(onebox, env, write_config, tmp_path, python):
    cfg = write_config(url=onebox.url)
    result = run_agent(["--config", str(cfg), "--once"], env, python=python)
    assert result.returncode == 0, result.stderr
    assert len(onebox.requests) == 1
    req = onebox.requests[0]
    assert req["path"] == "/v1/agent/metrics"
    assert req["headers"]["Authorization"] == "Bearer " + TOKEN
    assert req["headers"]["Content-Type"] == "application/json"
    assert re.fullmatch(r"onebox-agent/\d+\.\d+\.\d+", req["headers"]["User-Agent"])
    body = req["body"]
    assert list(body) == ["instance_id", "samples"] and body["instance_id"] == "i-0abc"
    (sample,) = body["samples"]
    assert list(sample) == ["at", "cpu_percent", "load_avg", "memory_percent", "disk_percent",
                            "net_rx_bytes", "net_tx_bytes", "disk_read_bytes", "disk_write_bytes", "ssh_sessions",
                            "uptime_seconds", "gpus"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", sample["at"])
    assert abs(calendar.timegm(time.strptime(sample["at"], "%Y-%m-%dT%H:%M:%SZ")) - time.time()) < 60
    # this machine's real values
    assert isinstance(sample["cpu_percent"], float) and 0 <= sample["cpu_percent"] <= 100
    assert isinstance(sample["memory_percent"], float) and 0 < sample["memory_percent"] <= 100
    assert isinstance(sample["disk_percent"], float) and 0 <= sample["disk_percent"] <= 100
    assert len(sample["load_avg"]) == 3 and all(isinstance(x, float) for x in sample["load_avg"])
    assert isinstance(sample["net_rx_bytes"], int) and isinstance(sample["net_tx_bytes"], int)
    assert isinstance(sample["disk_read_bytes"], int) and isinstance(sample["disk_write_bytes"], int)
    assert isinstance(sample["ssh_sessions"], int) and sample["ssh_sessions"] >= 0
    assert sample["uptime_seconds"] > 0
    for value in (sample["cpu_percent"], sample["memory_percent"], sample["uptime_seconds"]):
        assert round(value, 2) == value
    assert [g["name"] for g in sample["gpus"]] == ["NVIDIA A100-SXM4-40GB"] * 2
    assert sample["gpus"][1]["power_draw_w"] is None
    log = (tmp_path / "agent.log").read_text()
    assert "posted 1 sample" in log
    assert TOKEN not in log and TOKEN not in result.stderr and TOKEN not in result.stdout


def test_once_fails_on_503_and_never_logs_the_token(onebox, env, write_config, tmp_path):
    # even a server echoing the token back does not get it into the log
    onebox.answer(503, body="upstream said: Bearer %s is fine, try later" % TOKEN)
    cfg = write_config(url=onebox.url)
    result = run_agent(["--config", str(cfg), "--once"], env)
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr  # visible to Ansible
    log = (tmp_path / "agent.log").read_text()
    assert "HTTP 503" in log and "Bearer ***" in log
    assert TOKEN not in log and TOKEN not in result.stderr


def test_once_fails_when_unreachable(env, write_config):
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(url="http://127.0.0.1:%d" % port)
    started = time.monotonic()
    result = run_agent(["--config", str(cfg), "--once"], env)
    assert result.returncode == 1
    assert "cannot reach onebox" in result.stderr
    assert time.monotonic() - started < 10


def test_once_with_token_rejected(onebox, env, write_config):
    onebox.answer(401)
    result = run_agent(["--config", str(write_config(url=onebox.url)), "--once"], env)
    assert result.returncode == 1 and "HTTP 401" in result.stderr
    assert "agent token was rejected" in result.stderr


def test_bad_ca_file_exits_2(env, write_config, tmp_path):
    cfg = write_config(url="https://127.0.0.1:9", ca_file=str(tmp_path / "missing-ca.pem"))
    result = run_agent(["--config", str(cfg), "--once"], env)
    assert result.returncode == 2 and "cannot start" in result.stderr


@pytest.mark.parametrize("content, needle", [
    (None, "cannot read config file"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must contain a JSON object"),
    (json.dumps({"url": "http://127.0.0.1:9", "instance_id": "i"}), "'token' is required"),
    (json.dumps({"token": "t", "instance_id": "i"}), "'url' is required"),
    (json.dumps({"url": "http://127.0.0.1:9", "token": "t"}), "'instance_id' is required"),
    (json.dumps({"url": "127.0.0.1:9", "token": "t", "instance_id": "i"}), "'url' must look like"),
    (json.dumps({"url": "http://h", "token": "t", "instance_id": "i", "interval": -5}),
     "'interval' must be a positive number"),
])
def test_bad_config_exits_2(env, tmp_path, content, needle):
    path = tmp_path / "agent.json"
    if content is not None:
        path.write_text(content)
        path.chmod(0o600)
    result = run_agent(["--config", str(path), "--once"], env)
    assert result.returncode == 2
    assert needle in result.stderr
    assert result.stderr.startswith("onebox-agent: ")


def test_unreadable_config_exits_2(env, tmp_path):
    result = run_agent(["--config", str(tmp_path), "--once"], env)  # a directory
    assert result.returncode == 2 and "cannot read config file" in result.stderr
    result = run_agent([], env)  # --config is required
    assert result.returncode == 2


def test_world_readable_config_is_warned_about(onebox, env, write_config, tmp_path):
    cfg = write_config(mode=0o644, url=onebox.url, bogus_key=1)
    result = run_agent(["--config", str(cfg), "--once"], env)
    assert result.returncode == 0
    log = (tmp_path / "agent.log").read_text()
    assert "accessible by group/others (mode 0644)" in log
    assert "ignoring unknown config keys: bogus_key" in log


def test_log_file_falls_back_to_stderr(onebox, env, write_config, tmp_path):
    cfg = write_config(url=onebox.url, log_file=str(tmp_path / "no-such-dir" / "agent.log"))
    result = run_agent(["--config", str(cfg), "--once"], env)
    assert result.returncode == 0
    assert "cannot open log file" in result.stderr and "posted 1 sample" in result.stderr


def test_sigterm_flushes_buffer_and_exits_0(onebox, env, write_config, tmp_path):
    onebox.answer(503)  # the first post fails, the sample stays buffered
    cfg = write_config(url=onebox.url, interval=60, initial_backoff=120)
    proc = subprocess.Popen([sys.executable, str(AGENT_PATH), "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not onebox.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(onebox.requests) == 1
        time.sleep(0.2)  # now sleeping, backing off for 120 s
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(onebox.requests) == 2
    assert onebox.requests[1]["body"]["samples"] == onebox.requests[0]["body"]["samples"]
    log = (tmp_path / "agent.log").read_text()
    assert "received signal %d" % signal.SIGTERM in log
    assert "trying once to deliver 1 buffered sample(s)" in log and "stopped" in log
    assert TOKEN not in log


def test_source_is_python38_syntax():
    ast.parse(AGENT_PATH.read_text(), feature_version=(3, 8))


def test_module_docstring_and_version(oa):
    source = AGENT_PATH.read_text()
    tree = ast.parse(source)
    assert ast.get_docstring(tree).startswith("onebox monitoring agent.")
    assert re.fullmatch(r"\d+\.\d+\.\d+", oa.__version__)
    # standard library only
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names)
