"""The embedded database: onebox's MongoDB wire-protocol server, as a child process.

``onebox serve`` (and ``onebox db``) start it when no ``ONEBOX_MONGODB_URL`` is set; the tests start their own
on a free port. It is mongo-java-server with its H2 (MVStore) file backend behind a small launcher of ours
(``tools/mongo-server``, built by ``make mongo-server`` into ``.bin/mongo-server``), run on the machine's JDK.
The launcher adds what onebox needs: the non-unique indexes are real and used, every write is committed
before it is answered, and the server exits when the process that started it is gone.

How ownership works: the server's standard input is a pipe whose write end only this process holds. Closing
it (``stop``) asks the server to commit and exit; and if this process dies in any way, SIGKILL included, the
kernel closes the pipe for us and the server exits by itself, so no orphan is left holding the port and the
data file's lock for the next start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

DATA_FILE = "onebox.mv"


class EmbeddedDatabaseError(RuntimeError):
    """The embedded database could not be started; the message says why and what to do."""


class EmbeddedDatabase:
    def __init__(self, home: Path, address: str, data_dir: Path, *, cache_mb: int = 1024,
                 heap_mb: int | None = None, java: str | None = None, log_path: Path | None = None) -> None:
        self.home, self.address, self.data_dir = Path(home), address, Path(data_dir)
        self.cache_mb = cache_mb
        self.heap_mb = heap_mb or max(512, cache_mb * 2)
        self.java = java or shutil.which("java") or "java"
        self.log_path = log_path or self.data_dir / "mongo-server.log"
        self.process: subprocess.Popen | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.address.rsplit(":", 1)
        return host, int(port)

    @property
    def data_file(self) -> Path:
        return self.data_dir / DATA_FILE

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def url(self) -> str:
        # No sessions on this server, so no retryable writes: pymongo would otherwise ask for them.
        return f"mongodb://{self.address}/?retryWrites=false&directConnection=true"

    def command(self) -> list[str]:
        jar = self.home / "onebox-db.jar"
        if not jar.exists():
            raise EmbeddedDatabaseError(f"{jar} is missing: run `make mongo-server` (make run and make test do)")
        return [
            self.java, f"-Xmx{self.heap_mb}m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            # per-request errors (a duplicate key, a missing collection) are answered to the client; not log noise
            "-Dorg.slf4j.simpleLogger.log.de.bwaldvogel.mongo.wire.MongoWireProtocolHandler=off",
            "-cp", f"{jar}{os.pathsep}{self.home / 'lib'}{os.sep}*", "onebox.db.Main",
            "--listen", self.address, "--file", str(self.data_file), "--cache-mb", str(self.cache_mb),
            "--parent-stdin",
        ]

    def start(self, timeout: float = 60.0) -> "EmbeddedDatabase":
        argv = self.command()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=log,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise EmbeddedDatabaseError(f"the embedded database exited with {code}: {self._log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(self.host_port, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedDatabaseError(f"the embedded database did not listen on {self.address} within {timeout}s")

    def _log_tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace").strip().splitlines()
            return " | ".join(line for line in text[-lines:] if line.strip()) or "(no output)"
        return "(no log)"

    def stop(self, timeout: float = 20.0) -> None:
        """Ask the server to commit and exit (end of its input), then insist."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(OSError):
                process.stdin.close()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        with contextlib.suppress(OSError):
            process.stdin.close()

    def kill(self) -> None:
        """SIGKILL: a crash of the database process (durability drills)."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        if process is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()
