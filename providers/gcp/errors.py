"""Compute Engine errors turned into onebox's typed provider errors, in one place.

Two shapes of failure reach the GCP provider: exceptions from google-api-core
and the transport (``map_error``) and finished operations that carry an
``error`` (``operation_error``). 429, 5xx, ``rateLimitExceeded``/
``backendError``/``resourceNotReady`` reasons and transport errors are
retryable; ``ZONE_RESOURCE_POOL_EXHAUSTED*`` is a ``CapacityError``,
``QUOTA_EXCEEDED`` a ``QuotaError``; 404 is ``NotFound`` (or ``InvalidRequest``
when a *referenced* resource is missing), 400 ``InvalidRequest``, 401/403 a
permanent ``ProviderError``.
"""

from __future__ import annotations

import re
from typing import Any

from providers.base import CapacityError, InvalidRequest, NotFound, ProviderError, QuotaError

RETRYABLE_REASONS = {"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError", "resourceNotReady"}
RETRYABLE_OP_CODES = {
    "RATE_LIMIT_EXCEEDED",
    "RESOURCE_OPERATION_RATE_EXCEEDED",
    "INTERNAL_ERROR",
    "UNAVAILABLE",
    "RESOURCE_NOT_READY",
    "OPERATION_CANCELED_BY_USER",
}


def _api_message(exc: Any) -> str:
    for err in getattr(exc, "errors", None) or ():
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    message = str(getattr(exc, "message", "") or exc)
    # api_core prefixes "<METHOD> <url>: "; the URL says nothing useful to a user.
    return re.sub(r"^[A-Z]+ \S+: ", "", message)


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def map_error(exc: BaseException, what: str, *, missing: type[ProviderError] = NotFound) -> ProviderError:
    """One place that turns google-api-core / transport exceptions into onebox errors.

    ``missing`` is the class for a 404: ``NotFound`` when the call's target is
    gone, ``InvalidRequest`` when a resource the request *refers to* is.
    """
    if isinstance(exc, ProviderError):
        return exc
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        status = exc.code if isinstance(exc.code, int) else None
        reasons = {e.get("reason") for e in (exc.errors or ()) if isinstance(e, dict)}
        if exc.reason:
            reasons.add(exc.reason)
        message = _api_message(exc)
        text = f"{what}: {message}"
        if "ZONE_RESOURCE_POOL_EXHAUSTED" in message or "insufficientCapacity" in reasons:
            return CapacityError(text)
        if "quotaExceeded" in reasons or "QUOTA_EXCEEDED" in message:
            return QuotaError(text)
        if status == 501:
            return ProviderError(text, retryable=False)
        if (
            reasons & RETRYABLE_REASONS
            or status == 429
            or (status is not None and status >= 500)
            or isinstance(exc, (gexc.TooManyRequests, gexc.ServerError, gexc.DeadlineExceeded))
        ):
            return ProviderError(text, retryable=True, retry_after=_retry_after(exc))
        if status == 404:
            return missing(text)
        if status == 400:
            return InvalidRequest(text)
        if status in (401, 403):
            return ProviderError(text, code="permission_denied")
        if status == 409:
            return ProviderError(text, code="conflict")
        return ProviderError(text)
    if isinstance(exc, gexc.RetryError):
        return ProviderError(f"{what}: {exc}", retryable=True)
    try:
        import requests

        if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
            return ProviderError(f"{what}: Compute Engine API unreachable ({type(exc).__name__})", retryable=True)
    except ImportError:  # pragma: no cover
        pass
    try:
        from google.auth import exceptions as aexc

        if isinstance(exc, aexc.RefreshError):
            return ProviderError(f"{what}: GCP credentials were refused", code="permission_denied")
        if isinstance(exc, aexc.TransportError):
            return ProviderError(f"{what}: cannot reach Google's auth service", retryable=True)
        if isinstance(exc, aexc.DefaultCredentialsError):
            return ProviderError(f"{what}: no GCP credentials configured", code="permission_denied")
    except ImportError:  # pragma: no cover
        pass
    raise exc


def operation_error(op: Any, what: str, *, missing: type[ProviderError] = NotFound) -> ProviderError | None:
    """The typed error a finished operation reports, or None when it succeeded."""
    errors = list(op.error.errors) if op.error and op.error.errors else []
    status = int(op.http_error_status_code or 0)
    if not errors and status < 400:
        return None
    codes = [e.code for e in errors]
    message = "; ".join(e.message or e.code for e in errors) or (op.http_error_message or f"HTTP {status}")
    text = f"{what}: {message}"
    if any(c.startswith("ZONE_RESOURCE_POOL_EXHAUSTED") or c == "RESOURCE_POOL_EXHAUSTED" for c in codes):
        return CapacityError(text)
    if any(c == "QUOTA_EXCEEDED" or c.endswith("_QUOTA_EXCEEDED") for c in codes):
        return QuotaError(text)
    if set(codes) & RETRYABLE_OP_CODES or status == 429 or status >= 500:
        return ProviderError(text, retryable=True)
    if "RESOURCE_NOT_FOUND" in codes or status == 404:
        return missing(text)
    if "RESOURCE_ALREADY_EXISTS" in codes or status == 409:
        return ProviderError(text, code="conflict")
    if status in (401, 403):
        return ProviderError(text, code="permission_denied")
    if status == 400 or any(c.startswith("INVALID") or c == "BAD_REQUEST" for c in codes):
        return InvalidRequest(text)
    return ProviderError(text)


def is_conflict(err: ProviderError) -> bool:
    return err.code == "conflict"

