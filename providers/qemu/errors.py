"""The qemu provider's failures as onebox's typed provider errors, in one place.

What can go wrong here is local: a tool is missing, a command failed (its
stderr says why), QEMU's monitor did not answer, the host is out of disk
space or of free ports. Messages name what onebox was doing and quote the
tool; they never hold a secret because none reaches these commands.
"""

from __future__ import annotations

import errno
import subprocess

from providers.base import CapacityError, ProviderError

MAX_OUTPUT = 600


class QmpError(ProviderError):
    """QEMU's monitor refused a command (``klass`` is QMP's error class)."""

    code = "qemu_monitor"

    def __init__(self, klass: str, description: str, *, retryable: bool | None = None) -> None:
        super().__init__(f"QEMU refused: {description} ({klass})", retryable=retryable)
        self.klass = klass
        self.description = description


class QmpUnavailable(QmpError):
    """Nobody answers on the monitor socket: the process is gone, or is just starting or ending."""

    default_retryable = True

    def __init__(self, description: str) -> None:
        super().__init__("Unavailable", description)


class ToolMissing(ProviderError):
    """A program the provider runs is not installed; ``make qemu`` installs them all."""

    code = "qemu_missing"


def tail(text: str | bytes | None, limit: int = MAX_OUTPUT) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    text = " ".join((text or "").split())
    return text if len(text) <= limit else "…" + text[-limit:]


def command_failed(action: str, exc: subprocess.CalledProcessError | subprocess.TimeoutExpired) -> ProviderError:
    """The provider error for a command that failed or timed out while doing ``action``."""
    if isinstance(exc, subprocess.TimeoutExpired):
        return ProviderError(f"could not {action}: {exc.cmd[0]} did not finish within {exc.timeout:.0f}s",
                             retryable=True)
    said = tail(exc.stderr) or tail(exc.stdout) or f"exit status {exc.returncode}"
    if "No space left on device" in said:
        return CapacityError(f"could not {action}: the host's disk is full ({said})")
    return ProviderError(f"could not {action}: {said}")


def os_failed(action: str, exc: OSError) -> ProviderError:
    """The provider error for a file operation that failed while doing ``action``."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return CapacityError(f"could not {action}: the host's disk is full")
    return ProviderError(f"could not {action}: {exc.strerror or exc}", retryable=exc.errno in (errno.EAGAIN, errno.EBUSY))
