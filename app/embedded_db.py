"""The embedded database: FerretDB v1 over SQLite, as a child process.

``onebox serve`` starts it when no ``ONEBOX_MONGODB_URL`` is set; the tests
start their own on a free port. The binary comes from ``tools/ferretdb``
(``make ferretdb``).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path


class EmbeddedDatabase:
    def __init__(self, binary: Path, address: str, data_dir: Path, log_path: Path | None = None) -> None:
        self.binary, self.address, self.data_dir = Path(binary), address, Path(data_dir)
        self.log_path = log_path or self.data_dir / "ferretdb.log"
        self.process: subprocess.Popen | None = None

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.address.rsplit(":", 1)
        return host, int(port)

    def url(self) -> str:
        return f"mongodb://{self.address}/?retryWrites=false&directConnection=true"

    def start(self, timeout: float = 30.0) -> "EmbeddedDatabase":
        if not self.binary.exists():
            raise FileNotFoundError(f"{self.binary} is missing: run `make ferretdb` (or `make run`)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(self.binary), "-listen", self.address, "-dir", str(self.data_dir)],
            stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"FerretDB exited with {self.process.returncode}; see {self.log_path}")
            with contextlib.suppress(OSError), socket.create_connection(self.host_port, timeout=0.5):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"FerretDB did not listen on {self.address} within {timeout}s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
