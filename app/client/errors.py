"""The client's exit codes and its one error type.

Every failure a user can cause or meet ends as a ``CliError``: a one-line message, optional detail
lines (one per field error of an RFC 9457 problem, or the candidates of an ambiguous name), and the
exit code scripts branch on. ``app.client.main`` turns it into output on stderr and that exit code for
every client command, sub-apps included; commands only raise it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1  # the API answered with an error (4xx/5xx problem), or nothing matches a name
    USAGE = 2  # bad arguments, an ambiguous name, no server configured
    FAILED = 3  # the instance (or snapshot) being waited for ended `failed`
    UNREACHABLE = 4  # no answer from the server: connection refused, DNS, TLS, timeout
    INTERRUPTED = 130  # Ctrl-C while waiting; what was asked for carries on on the server


class CliError(Exception):
    """A failure to report as ``error: message`` (+ indented detail lines) and exit with ``code``."""

    def __init__(self, message: str, code: ExitCode = ExitCode.REFUSED, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = ExitCode(code)
        self.details = list(details or [])


class ApiError(CliError):
    """The server answered with an error status; ``problem`` is its RFC 9457 body (or {})."""

    def __init__(self, message: str, status: int, problem: dict, details: list[str] | None = None) -> None:
        super().__init__(message, ExitCode.REFUSED, details)
        self.status = status
        self.problem = problem

    @property
    def code_name(self) -> str | None:
        return self.problem.get("code")
