"""The local provider's failures as the typed errors of ``providers.base``, in one place.

A local "cloud" has no error codes of its own: its failures are missing
directories, an sshd that does not start or answer, processes that do not
stop. Each gets the typed error the engine acts on (NotFound, retryable or not),
with a message for the user.
"""

from __future__ import annotations

from providers.base import CapacityError, NotFound, ProviderError


def instance_not_found(instance_id: str) -> NotFound:
    return NotFound(f"local instance {instance_id} does not exist")


def snapshot_not_found(snapshot_id: str) -> NotFound:
    return NotFound(f"local snapshot {snapshot_id} does not exist")


def bad_id(message: str) -> ProviderError:
    return ProviderError(message)


def no_address() -> CapacityError:
    return CapacityError("no free loopback address for a new local instance")


def sshd_missing() -> ProviderError:
    return ProviderError("sshd is not installed; install openssh-server (make does it)", code="sshd_missing")


def sshd_failed(detail: str) -> ProviderError:
    return ProviderError(f"sshd did not start: {detail.strip()[-500:]}", retryable=True)


def timeout(what: str, seconds: float) -> ProviderError:
    return ProviderError(f"{what} within {seconds:.0f}s; onebox will check again", retryable=True, code="timeout")


def not_gone(instance_id: str) -> ProviderError:
    return ProviderError(f"local instance {instance_id} is not gone yet", retryable=True)
