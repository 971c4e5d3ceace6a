"""A small client for the QEMU Machine Protocol (QMP) on an instance's unix socket.

Each instance's QEMU process listens on ``qmp.sock`` in its directory. The
provider opens one short connection per operation (status, live snapshot,
quit, power button, reset): QEMU serves one client at a time, and a short
connection never holds the monitor while a worker is killed.

Socket paths are limited to about 100 bytes and instance directories can be
deeper than that (tests' temporary directories are), so the socket is reached
through ``/proc/self/fd/<dir fd>/qmp.sock``, whatever the directory's length.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from providers.qemu.errors import QmpError, QmpUnavailable


class Qmp:
    """One QMP session: ``with Qmp(dir) as qmp: qmp.execute("query-status")``."""

    def __init__(self, directory: Path, name: str = "qmp.sock", timeout: float = 10.0) -> None:
        self.directory = Path(directory)
        self.name = name
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buffer = b""

    def __enter__(self) -> "Qmp":
        try:
            dir_fd = os.open(self.directory, os.O_PATH | os.O_DIRECTORY)
        except OSError as exc:
            raise QmpUnavailable(f"no instance directory {self.directory}") from exc
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(f"/proc/self/fd/{dir_fd}/{self.name}")
        except OSError as exc:
            sock.close()
            raise QmpUnavailable(f"QEMU's monitor does not answer: {exc.strerror or exc}") from exc
        finally:
            os.close(dir_fd)
        self._sock = sock
        try:
            greeting = self._read()
            if "QMP" not in greeting:
                raise QmpError("Protocol", f"not a QMP greeting: {str(greeting)[:200]}")
            self.execute("qmp_capabilities")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run one command; its ``return`` value, or ``QmpError`` with QEMU's class and description."""
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        assert self._sock is not None, "use Qmp as a context manager"
        try:
            self._sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError as exc:
            raise QmpUnavailable(f"QEMU's monitor went away: {exc}") from exc
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                error = reply["error"]
                raise QmpError(str(error.get("class", "GenericError")), str(error.get("desc", "")))
            # anything else is an asynchronous event (SHUTDOWN, RESET, ...): not our answer

    def _read(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buffer:
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise QmpUnavailable(f"QEMU's monitor did not answer: {exc}") from exc
            if not chunk:
                raise QmpUnavailable("QEMU's monitor closed the connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError as exc:
            raise QmpError("Protocol", f"not JSON from QMP: {line[:200]!r}") from exc
