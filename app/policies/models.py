"""What clients send and see about lifecycle rules: an instance's own settings, its schedule, and policies."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from app.policies.rules import LIFECYCLE_FIELDS
from app.settings import PolicyLimits

PowerAction = Literal["stop", "delete"]
MAX_TTL_SECONDS = 10 * 365 * 86400


def _one_deadline(value: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
    """``expires_at`` in UTC when no offset is given, and never together with ``ttl_seconds`` (declared before
    it, so already validated)."""
    if value is None:
        return value
    if info.data.get("ttl_seconds") is not None:
        raise ValueError("give either ttl_seconds or expires_at, not both")
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.timezone.utc)


TtlSeconds = Annotated[int | None, Field(default=None, ge=60, le=MAX_TTL_SECONDS,
                                        description="stop (or delete) the instance this long after it was set or "
                                                    "last started")]
ExpiresAt = Annotated[dt.datetime | None, AfterValidator(_one_deadline),
                      Field(default=None, description="or at this time (RFC 3339); not with ttl_seconds")]
OnExpiry = Annotated[PowerAction | None, Field(default=None, description="what the TTL does: stop (default) or delete")]
IdleMinutes = Annotated[int | None, Field(default=None, ge=1, le=7 * 1440,
                                         description="stop (or delete) it once idle on every signal this long")]
OnIdle = Annotated[PowerAction | None, Field(default=None, description="what idleness does: stop (default) or delete")]
StoppedDays = Annotated[int | None, Field(default=None, ge=1, le=3650,
                                          description="delete it once it has been stopped this many days")]


def lifecycle_values(model: BaseModel) -> dict[str, Any]:
    """The lifecycle fields of a create or a patch."""
    return {name: getattr(model, name) for name in LIFECYCLE_FIELDS}


class LifecyclePatch(BaseModel):
    """A JSON merge patch (RFC 7396) of an instance's lifecycle settings: a field left out is kept, ``null``
    clears it (the policy's value, if any, then applies). ``ttl_seconds`` and ``expires_at`` are two ways to
    give one deadline: setting (or clearing) one replaces the other."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ttl_seconds": 7200, "on_expiry": "stop"}, {"idle_minutes": 30, "on_idle": "stop"},
        {"delete_after_stopped_days": 7}]})

    ttl_seconds: TtlSeconds = None
    expires_at: ExpiresAt = None
    on_expiry: OnExpiry = None
    idle_minutes: IdleMinutes = None
    on_idle: OnIdle = None
    delete_after_stopped_days: StoppedDays = None


class Schedule(BaseModel):
    """What the lifecycle rules will do to the instance: its own settings, capped and completed by its policy."""

    expires_at: dt.datetime | None = Field(default=None, description="when the TTL acts on the current run")
    on_expiry: PowerAction = "stop"
    idle_minutes: int | None = Field(default=None, description="the idle window idle autostop uses")
    on_idle: PowerAction | None = None
    delete_after_stopped_days: int | None = None
    delete_at: dt.datetime | None = Field(default=None, description="a stopped instance: when it will be deleted")
    from_policy: list[str] = Field(default_factory=list, description="the values the policy set, not the instance")


class LastRequest(BaseModel):
    """The last stop, start or reboot carried out, and who asked for it."""

    action: Literal["stop", "start", "reboot"]
    requested_by: str
    rule: str | None = Field(default=None, description="the policy rule that fired (ttl, idle), if a policy asked")
    reason: str | None = None
    requested_at: dt.datetime


class PolicyView(BaseModel):
    user: str = Field(description="a user, or _default for everyone")
    policy: PolicyLimits = Field(description="as stored for this user (null: taken from the next layer)")
    effective: PolicyLimits = Field(description="what applies: this user's, then _default's, then the settings'")
