"""Azure errors turned into onebox's typed provider errors, in one place.

``map_error`` takes what azure-core raises (HTTP errors, failed long-running
operations, whose error arrives in the operation status, transport and
credential errors); ``map_code`` decides by ARM error code first (more specific
than the HTTP status: PlatformImageNotFound comes as a 404, a failed LRO's
error as a 200 status poll), then by status. azure-core retries 429/5xx itself
``retry_total`` times (honouring ``Retry-After``) before they get here.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from typing import Any

from providers.base import CapacityError, InvalidRequest, NotFound, ProviderError, QuotaError

# ARM error codes (lower-cased) by what onebox does about them.
_THROTTLE_CODES = {"toomanyrequests", "subscriptionrequeststhrottled", "tenantrequeststhrottled"}
_CAPACITY_CODES = {"skunotavailable", "allocationfailed", "zonalallocationfailed",
                   "overconstrainedallocationrequest", "overconstrainedzonalallocationrequest"}
_QUOTA_CODES = {"quotaexceeded", "publicipcountlimitreached", "subscriptionquotaexceeded"}
_RETRYABLE_CODES = {"retryableerror", "anotheroperationinprogress", "internalservererror", "serviceunavailable",
                    "internalexecutionerror", "gatewaytimeout", "operationpreempted", "requesttimeout",
                    "retryablecanceled"}
# Dependency conflicts seen while tearing down (a cascade not finished yet): try again shortly.
_IN_USE_CODES = {"nicinuse", "publicipaddresscannotbedeleted", "inusenetworksecuritygroupcannotbedeleted",
                 "inusesubnetcannotbedeleted", "nicreservedforanothervm", "conflict"}
_GENERIC_CODES = {"deploymentfailed", "conflict", "badrequest", "invalidtemplatedeployment", "multipleerrorsoccurred"}
_NOT_FOUND_CODES = {"notfound", "resourcenotfound", "resourcegroupnotfound", "parentresourcenotfound"}
_AUTH_CODES = {"authorizationfailed", "linkedauthorizationfailed", "authenticationfailed",
               "invalidauthenticationtoken", "invalidauthenticationtokentenant", "expiredauthenticationtoken"}
_INVALID_CODES = {"invalidparameter", "invalidrequestformat", "invalidrequestcontent", "invalidresourcename",
                  "invalidresourcereference", "platformimagenotfound", "badrequest", "propertychangenotallowed",
                  "locationnotavailableforresourcetype", "invalidtagnamecharacters", "conflictinguserinput",
                  "linkedinvalidpropertyid", "standardskupublicipaddressesmustbestatic", "invalidtemplate",
                  "missingapiversionparameter", "invalidapiversionparameter", "invalidresourcelocation",
                  "nicreservedforanothervm", "imagenotfound", "resizediskerror"}



def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        if value:
            return _parse_retry_after(value)
        ms = headers.get("retry-after-ms") or headers.get("x-ms-retry-after-ms")
        return float(ms) / 1000.0 if ms else None
    except (AttributeError, ValueError):
        return None


def error_codes(exc: Any) -> tuple[list[str], str]:
    """All error codes in the ARM error (outer first, then details) and the message to show.

    The outer message is ARM's own explanation; only when the outer code is a generic wrapper
    (DeploymentFailed, Conflict, ...) does the first detail's message say more.
    """
    codes: list[str] = []
    messages: list[tuple[str, str]] = []
    queue = [getattr(exc, "error", None)]
    while queue:
        err = queue.pop(0)
        if err is None:
            continue
        code = str(getattr(err, "code", None) or "")
        if code:
            codes.append(code)
        if getattr(err, "message", None):
            messages.append((code.lower(), str(err.message)))
        queue.extend(getattr(err, "details", None) or [])
    message = ""
    if messages:
        message = messages[0][1]
        if messages[0][0] in _GENERIC_CODES and len(messages) > 1:
            message = messages[1][1]
    if not message:
        message = getattr(exc, "reason", None) or str(getattr(exc, "message", "") or "") or type(exc).__name__
    return codes, message


def map_code(code: str | None, message: str, *, status: int | None = None, action: str | None = None,
             retry_after: float | None = None, codes: list[str] | None = None) -> ProviderError:
    """The typed error for an ARM error code (and HTTP status, when there was one)."""
    all_codes = [c.lower() for c in (codes or ([code] if code else []))]
    first = code or (codes[0] if codes else None)
    text = f"Azure could not {action}: {message}" if action else f"Azure: {message}"
    if first:
        text += f" ({first})"
    lowered = message.lower()

    def has(group: set[str]) -> str | None:
        return next((c for c in all_codes if c in group), None)

    # The error code is more specific than the HTTP status (PlatformImageNotFound comes as a 404, a failed
    # LRO's error as a 200 status poll), so codes decide first and the status only when no code is known.
    if status == 429 or has(_THROTTLE_CODES):
        return ProviderError(text, retryable=True, code="throttled", retry_after=retry_after)
    if has(_CAPACITY_CODES):
        return CapacityError(text, retry_after=retry_after)
    if has(_QUOTA_CODES) or ("operationnotallowed" in all_codes and ("quota" in lowered or "cores" in lowered)):
        return QuotaError(text)
    if has(_RETRYABLE_CODES):
        return ProviderError(text, retryable=True, retry_after=retry_after)
    if has(_IN_USE_CODES):
        return ProviderError(text, retryable=True, code="in_use", retry_after=retry_after)
    if has(_INVALID_CODES):
        return InvalidRequest(text)
    if has(_NOT_FOUND_CODES):
        return NotFound(text)
    if has(_AUTH_CODES):
        return ProviderError(text, retryable=False, code="unauthorized")
    if status is not None and status >= 500:
        return ProviderError(text, retryable=True, retry_after=retry_after)
    if status == 404:
        return NotFound(text)
    if status in (401, 403):
        return ProviderError(text, retryable=False, code="unauthorized")
    if status == 400:
        return InvalidRequest(text)
    return ProviderError(text, retryable=False)


def map_error(exc: BaseException, action: str | None = None) -> ProviderError:
    """Translate an azure-core exception (HTTP error, failed LRO, transport error) to a ProviderError."""
    if isinstance(exc, ProviderError):
        return exc
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(exc, HttpResponseError) and getattr(exc, "response", None) is not None:
        codes, message = error_codes(exc)
        status = exc.status_code
        # A failed LRO is reported through the (200) status poll; its status code says nothing.
        if status is not None and 200 <= status < 300:
            status = None
        return map_code(codes[0] if codes else None, message, status=status, action=action,
                        retry_after=_retry_after(exc), codes=codes)
    if isinstance(exc, ClientAuthenticationError):
        what = f" to {action}" if action else ""
        return ProviderError(f"Azure refused onebox's credentials{what}; check the service principal or managed "
                             "identity configuration.", retryable=False, code="unauthorized")
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        what = f" while trying to {action}" if action else ""
        return ProviderError(f"Azure Resource Manager could not be reached{what}.", retryable=True)
    if isinstance(exc, HttpResponseError):
        return ProviderError(f"Azure could not {action or 'complete the request'}: {exc.message}", retryable=False)
    raise exc

