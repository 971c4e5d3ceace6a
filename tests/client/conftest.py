"""A real onebox for the client's tests, and a runner of the real installed ``onebox`` command.

The server runs in a thread with its own event loop (the API on a real port through uvicorn, plus a
worker the test can pause), because the client under test blocks: it runs as subprocesses of
``.venv/bin/onebox`` and in Typer's ``CliRunner``. It has the embedded-default shape (dev sign-in
on) on the session's database server, the local provider, and configuration skipped.
"""

from __future__ import annotations

import asyncio
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import _remove_local_instances, make_settings
from tests.support import free_port

ONEBOX = Path(sys.executable).with_name("onebox")  # the console script installed in the virtualenv


class LiveServer:
    def __init__(self, settings) -> None:
        self.settings = settings
        self.url = settings.public_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="onebox-test-server", daemon=True)
        self.services = None
        self._worker: tuple[asyncio.Event, asyncio.Task] | None = None

    def call(self, coro, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> "LiveServer":
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        import uvicorn

        from app.main import create_app
        from app.services import Services

        self.services = Services.build(self.settings)
        await self.services.db.ensure_indexes()
        await self.services.providers.warm_catalogs()
        port = int(self.url.rsplit(":", 1)[1])
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.settings, self.services), host="127.0.0.1",
                                                    port=port, lifespan="off", log_level="warning"))
        self.serving = asyncio.create_task(self.server.serve())
        while not self.server.started:
            assert not self.serving.done(), f"the API did not start on port {port}"
            await asyncio.sleep(0.05)
        await self._start_worker()

    async def _start_worker(self) -> None:
        from app.worker.runner import Worker

        if self._worker is None:
            stop = asyncio.Event()
            self._worker = (stop, asyncio.create_task(Worker(self.services).run(stop)))

    async def _stop_worker(self) -> None:
        if self._worker is not None:
            stop, task = self._worker
            self._worker = None
            stop.set()
            await task

    def start_worker(self) -> None:
        self.call(self._start_worker())

    def stop_worker(self) -> None:
        self.call(self._stop_worker())

    def mint(self, user: str, **kwargs) -> str:
        return self.services.tokens.mint(user, **kwargs)

    def stop(self) -> None:
        async def shutdown() -> None:
            await self._stop_worker()
            self.server.should_exit = True
            await self.serving
            await self.services.close()

        try:
            self.call(shutdown())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            _remove_local_instances(self.settings.data_dir)


def live_settings(dbserver, data_dir: Path, **overrides):
    values = {"public_url": f"http://127.0.0.1:{free_port()}", "dev_login": True,
              "events_stream_poll_seconds": 0.2, "events_stream_max_seconds": 300, **overrides}
    settings = make_settings(dbserver, data_dir, **values)
    # The embedded default's shape (dev sign-in needs it), on the session's database server.
    return settings.model_copy(update={"mongodb_url": None, "embedded_db_address": dbserver.address})


@pytest.fixture(scope="package")
def live_server(dbserver, tmp_path_factory):
    """One server for the client's tests; each test signs in as a user of its own."""
    server = LiveServer(live_settings(dbserver, tmp_path_factory.mktemp("client-server") / "data")).start()
    yield server
    server.stop()


@dataclass
class Cli:
    """Runs ``onebox`` as a user would, in a home of its own; every output is checked for secrets."""

    home: Path
    secrets: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBOX_")}
        env.update({"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"), "COLUMNS": "200",
                    "NO_COLOR": "1"})
        return env

    @property
    def config_file(self) -> Path:
        return self.home / ".config" / "onebox" / "config.toml"

    def check(self, *outputs: str) -> None:
        for secret in self.secrets:
            for output in outputs:
                assert secret not in output, "a token was printed"

    def run(self, *args: str, env: dict[str, str] | None = None, input: str | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess:
        result = subprocess.run([str(ONEBOX), *args], env={**self.env, **(env or {})}, input=input,
                                capture_output=True, text=True, timeout=timeout)
        self.check(result.stdout, result.stderr)
        return result

    def invoke(self, *args: str, env: dict[str, str | None] | None = None, input: str | None = None):
        """``onebox ARGS`` in this process (Typer's CliRunner: quick), as this user."""
        from typer.testing import CliRunner

        from app.cli import cli

        environment = {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.home / ".config"), "COLUMNS": "200",
                       "ONEBOX_URL": None, "ONEBOX_TOKEN": None, "ONEBOX_DEBUG": None, **(env or {})}
        result = CliRunner().invoke(cli, list(args), env=environment, input=input)
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            f"a traceback instead of a message: {result.exception!r}"
        self.check(result.stdout, result.stderr)
        return result

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([str(ONEBOX), *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, bufsize=1)


@pytest.fixture
def cli(tmp_path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(home)


class Reader:
    """Reads a process's output lines as they come (a thread per stream)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.arrived: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line)
            self.arrived.put(line)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        while True:
            line = self.arrived.get(timeout=timeout)
            if text in line:
                return line

    @property
    def text(self) -> str:
        self.thread.join(30)
        return "".join(self.lines)
