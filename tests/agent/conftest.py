"""Shared fixtures for the onebox agent tests.

The agent is a single stand-alone file copied onto VMs, not a package, so it
is loaded from its path.
"""

import importlib.util
import json
import os
import shutil
import stat
import sys
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
AGENT_PATH = REPO / "playbooks" / "roles" / "agent" / "files" / "onebox_agent.py"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZ2VudDppLTEyMyJ9.c2VjcmV0LXNpZ25hdHVyZS0xMjM0NQ"
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def _load_agent():
    spec = importlib.util.spec_from_file_location("onebox_agent", AGENT_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["onebox_agent"] = module
    spec.loader.exec_module(module)
    return module


agent_module = _load_agent()


@pytest.fixture
def oa():
    return agent_module


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def proc_root(tmp_path):
    """A writable copy of the good fake /proc."""
    root = tmp_path / "proc"
    shutil.copytree(FIXTURES / "proc", root)
    return root


# -- fake onebox ---------------------------------------------------------------


class FakeOnebox:
    """A real HTTP server in a thread that records POSTs and answers from a script.

    `script` holds (status, headers, body) answers used in order; when empty
    every request gets `default` (200).
    """

    def __init__(self):
        self.requests = []  # dicts: path, headers, body (parsed JSON)
        self.script = deque()
        self.default = (200, {}, None)
        self.port = 0
        self._server = None
        self._thread = None
        self._lock = threading.Lock()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def answer(self, status, headers=None, times=1, body=None):
        for _ in range(times):
            self.script.append((status, headers or {}, body))

    def samples(self):
        return [s for r in self.requests for s in r["body"]["samples"]]

    def start(self):
        onebox = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                with onebox._lock:
                    onebox.requests.append(
                        {"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)}
                    )
                    status, headers, body = (
                        onebox.script.popleft() if onebox.script else onebox.default
                    )
                payload = (body if body is not None else json.dumps({"status": status})).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self):
        """Stop listening: connections to the port are refused until start()."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None


@pytest.fixture
def onebox():
    server = FakeOnebox().start()
    yield server
    server.stop()


# -- fake time -----------------------------------------------------------------


class FakeClock:
    def __init__(self, start=1000.0):
        self.now = start
        self.sleeps = []

    def monotonic(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


class SeqCollector:
    """Stands in for Collector: numbered samples, so order and duplicates are checkable."""

    def __init__(self):
        self.n = 0

    def collect(self):
        self.n += 1
        return {"at": "2026-11-22T01:00:00Z", "seq": self.n}


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_agent(oa, clock, tmp_path):
    """Agent wired to a FakeClock and a SeqCollector; rand=1.0 makes backoff deterministic."""

    agents = []

    def make(url, **config):
        values = dict(url=url, token=TOKEN, instance_id="i-123", interval=30, timeout=2,
                      max_backoff=60, log_file=str(tmp_path / "agent.log"))
        values.update(config)
        agent = oa.Agent(oa.Config(**values), collector=SeqCollector(),
                         monotonic=clock.monotonic, sleep=clock.sleep, rand=lambda: 1.0)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop_flag.close()


# -- fake nvidia-smi -----------------------------------------------------------


@pytest.fixture
def fake_nvidia_smi(tmp_path, monkeypatch):
    """Returns install(script_body): writes an executable `nvidia-smi` first on PATH."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", str(bindir) + os.pathsep + os.environ.get("PATH", ""))

    def install(body):
        path = bindir / "nvidia-smi"
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    install.bindir = bindir
    return install
