"""AWS errors turned into onebox's typed provider errors, in one place.

Every boto3 call of the AWS provider goes through ``translate`` (or its
decorator ``translated``), so the engine only ever sees ``ProviderError`` and
its subclasses from ``providers.base``. The mapping is by EC2 error code
(``ClientError``) or by botocore exception class (network trouble, missing
credentials). Messages name what onebox was doing and quote what AWS said;
anything that looks like an access key id is redacted, and credentials are
never part of a message because they never reach this module.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, TypeVar

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from providers.base import CapacityError, InvalidRequest, NotFound, ProviderError, QuotaError

# Codes AWS documents as transient: try again later, with backoff.
RETRYABLE_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException",
    "RequestThrottled", "RequestThrottledException", "TooManyRequestsException",
    "SlowDown", "BandwidthLimitExceeded", "PriorRequestNotComplete",
    "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable",
    "RequestTimeout", "RequestTimeoutException",
    "IncorrectState", "IncorrectInstanceState", "ConcurrentTagAccess",
    "InvalidSnapshot.InUse", "VolumeInUse", "DependencyViolation", "ResourceNotReady",
})

# The region or zone has no room for this machine type right now.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
    "InsufficientReservedInstanceCapacity", "InsufficientAddressCapacity",
    "InsufficientFreeAddressesInSubnet", "InsufficientCapacityOnOutpost",
})

# The account's limits would be exceeded.
QUOTA_CODES = frozenset({
    "VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded",
    "VolumeLimitExceeded", "MaxIOPSLimitExceeded", "SnapshotLimitExceeded",
    "SnapshotCreationPerVolumeRateExceeded", "AddressLimitExceeded",
    "ResourceLimitExceeded", "SecurityGroupLimitExceeded", "RulesPerSecurityGroupLimitExceeded",
    "NetworkInterfaceLimitExceeded", "TagLimitExceeded", "AMIQuotaExceeded",
    "ImageLimitExceeded", "ServiceQuotaExceededException",
})

# Something of ours that is not there (any more).
NOT_FOUND_CODES = frozenset({
    "InvalidInstanceID.NotFound", "InvalidSnapshot.NotFound", "InvalidVolume.NotFound",
    "InvalidGroup.NotFound", "InvalidNetworkInterfaceID.NotFound",
})

# onebox's AWS identity may not do this: an operator's problem, not the user's.
AUTH_CODES = frozenset({
    "UnauthorizedOperation", "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch",
    "ExpiredToken", "RequestExpiredToken", "OptInRequired", "Blocked", "PendingVerification",
    "AccessDenied", "AccessDeniedException", "MissingAuthenticationToken",
    "UnrecognizedClientException", "IncompleteSignature",
})

# The request itself is wrong: the user's input or our parameters.
INVALID_CODES = frozenset({
    "InvalidParameterValue", "InvalidParameter", "InvalidParameterCombination",
    "MissingParameter", "UnknownParameter", "ValidationError", "InvalidBlockDeviceMapping",
    "Unsupported", "UnsupportedOperation", "InvalidInstanceType", "InvalidUserData.Malformed",
    "IdempotentParameterMismatch", "InvalidAMIName.Duplicate", "InvalidAMIName.Malformed",
    "InvalidSubnetID.NotFound", "InvalidVpcID.NotFound", "InvalidAvailabilityZone",
})

_HINTS = {
    "capacity": "AWS has no spare capacity for this machine type there right now; "
                "try again later, another zone or another machine type",
    "quota": "the AWS account's limits would be exceeded; delete something or ask "
             "for a higher limit",
    "auth": "onebox's AWS identity is not allowed to do this; an operator must fix "
            "its credentials or permissions",
    "retry": "a temporary AWS problem; onebox will try again",
}

_ACCESS_KEY_RE = re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b")
_MAX_AWS_MESSAGE = 400

E = TypeVar("E", bound=Callable[..., Any])


def _clean(text: str) -> str:
    """What AWS said, fit for a user: no key ids, one line, bounded length."""
    text = _ACCESS_KEY_RE.sub("<redacted>", " ".join(str(text).split()))
    if len(text) > _MAX_AWS_MESSAGE:
        text = text[: _MAX_AWS_MESSAGE - 1] + "…"
    return text


def map_client_error(error: ClientError, action: str) -> ProviderError:
    """The provider error for an EC2 ``ClientError`` raised while doing ``action``.

    ``action`` completes the sentence "AWS could not …", e.g. "create the instance".
    """
    err = error.response.get("Error", {}) if isinstance(error.response, dict) else {}
    code = str(err.get("Code") or "Unknown")
    aws_message = _clean(err.get("Message") or code)
    status = (error.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0
    said = f"AWS said: {aws_message} ({code})"

    if code in CAPACITY_CODES:
        return CapacityError(f"AWS could not {action}: {_HINTS['capacity']}. {said}", cloud_code=code)
    if code in QUOTA_CODES:
        return QuotaError(f"AWS could not {action}: {_HINTS['quota']}. {said}", cloud_code=code)
    if code in RETRYABLE_CODES or (code not in AUTH_CODES and int(status) >= 500):
        return ProviderError(f"AWS could not {action} ({_HINTS['retry']}). {said}", retryable=True)
    if code in AUTH_CODES:
        return ProviderError(f"AWS could not {action}: {_HINTS['auth']}. {said}", retryable=False,
                             code="auth")
    if code in NOT_FOUND_CODES:
        return NotFound(f"AWS could not {action}: it does not exist (any more). {said}")
    if code.startswith("InvalidAMIID.") or code in INVALID_CODES or code.startswith("Invalid"):
        return InvalidRequest(f"AWS refused to {action}: {said}")
    return ProviderError(f"AWS could not {action}. {said}", retryable=False)


def map_botocore_error(error: BotoCoreError, action: str) -> ProviderError:
    """The provider error for a botocore exception that is not a ``ClientError``."""
    if isinstance(error, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
                          ConnectionClosedError)):
        return ProviderError(f"Could not reach AWS to {action} ({_HINTS['retry']}): "
                             f"{_clean(str(error))}", retryable=True)
    if isinstance(error, CredentialRetrievalError):
        # e.g. the instance metadata service or an SSO endpoint did not answer in time
        return ProviderError(f"Could not {action}: AWS credentials could not be fetched; "
                             "onebox will try again", retryable=True, code="auth")
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return ProviderError(f"Could not {action}: onebox has no usable AWS credentials; "
                             "an operator must configure them", retryable=False, code="auth")
    if isinstance(error, NoRegionError):
        return InvalidRequest(f"Could not {action}: no AWS region was given")
    if isinstance(error, ParamValidationError):
        return InvalidRequest(f"Could not {action}: {_clean(str(error))}")
    return ProviderError(f"Could not {action}: {_clean(str(error))}", retryable=False)


def translate(error: BaseException, action: str) -> BaseException:
    """Map any boto3/botocore error to a provider error; other errors pass unchanged."""
    if isinstance(error, ProviderError):
        return error
    if isinstance(error, ClientError):
        return map_client_error(error, action)
    if isinstance(error, BotoCoreError):
        return map_botocore_error(error, action)
    return error


def translated(action: str) -> Callable[[E], E]:
    """Decorate a provider method so boto3 errors leave it as provider errors."""

    def wrap(fn: E) -> E:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise translate(exc, action) from exc

        return inner  # type: ignore[return-value]

    return wrap


def error_code(error: BaseException) -> str | None:
    """The EC2 error code of a ``ClientError``, else None."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code") or "") or None
    return None
