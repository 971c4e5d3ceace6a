"""The lifecycle rules as pure functions: what a policy allows, and when each rule acts on an instance.

Three rules act on instances by themselves (``app.policies.checks`` applies them):

* ``ttl`` — a running instance is stopped (or deleted: ``on_expiry``) when its run reaches its deadline.
  ``ttl_seconds`` counts from the later of when it was set and when the current run began (the instance's
  creation, or its last start): a started instance gets its full TTL again. An ``expires_at`` is a fixed
  deadline; one that had already passed when the current run began no longer applies.
* ``idle`` — a running instance idle on every signal for ``idle_minutes`` is stopped or deleted
  (``on_idle``); whether it is idle is ``app.policies.idle``'s business.
* ``stopped_too_long`` — an instance stopped for ``delete_after_stopped_days`` is deleted.

The policy (``PolicyLimits``: ceilings and defaults, in layers) is merged into one ``Policy``; a value the
instance sets itself is capped by the ceiling, so an admin who tightens a policy is obeyed by running
instances on their next check, and an instance that sets nothing gets the policy's default (or its ceiling).
Every duration is multiplied by ``time_scale`` (``ONEBOX_POLICY_TIME_SCALE``; 1 except in tests and demos).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable

from app.clock import as_utc
from app.settings import PolicyLimits

ON_EXPIRY_DEFAULT = "stop"
ON_IDLE_DEFAULT = "stop"
RULES = ("ttl", "idle", "stopped_too_long")
AT_REST_OR_ENDING = frozenset({"stopping", "stopped", "failed", "deleting", "deleted"})
LIFECYCLE_FIELDS = ("ttl_seconds", "expires_at", "on_expiry", "idle_minutes", "on_idle", "delete_after_stopped_days")


@dataclass(frozen=True)
class Policy:
    """One user's policy, every layer merged (the most specific non-null value of each field)."""

    max_ttl_seconds: int | None = None
    default_ttl_seconds: int | None = None
    default_on_expiry: str | None = None
    max_idle_minutes: int | None = None
    default_idle_minutes: int | None = None
    allowed_on_idle: tuple[str, ...] | None = None
    default_on_idle: str | None = None
    max_stopped_days: int | None = None
    default_stopped_days: int | None = None

    @classmethod
    def merged(cls, layers: Iterable[PolicyLimits | dict | None]) -> "Policy":
        """``layers`` from the most specific (the user's) to the least (settings)."""
        values: dict[str, Any] = {}
        for layer in layers:
            if layer is None:
                continue
            data = layer.model_dump() if isinstance(layer, PolicyLimits) else layer
            for name in PolicyLimits.model_fields:
                if values.get(name) is None and data.get(name) is not None:
                    values[name] = data[name]
        if values.get("allowed_on_idle") is not None:
            values["allowed_on_idle"] = tuple(values["allowed_on_idle"])
        # Layers are set apart, so a default may exceed a more specific ceiling: the ceiling wins.
        for default, ceiling in (("default_ttl_seconds", "max_ttl_seconds"), ("default_idle_minutes", "max_idle_minutes"),
                                 ("default_stopped_days", "max_stopped_days")):
            if values.get(default) is not None and values.get(ceiling) is not None:
                values[default] = min(values[default], values[ceiling])
        allowed = values.get("allowed_on_idle")
        if allowed is not None and values.get("default_on_idle") not in (None, *allowed):
            values["default_on_idle"] = None
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in PolicyLimits.model_fields}
        if out["allowed_on_idle"] is not None:
            out["allowed_on_idle"] = list(out["allowed_on_idle"])
        return out


def _capped(own: int | None, default: int | None, ceiling: int | None) -> tuple[int | None, str]:
    """The value a rule uses, and where it comes from ("instance" or "policy")."""
    if own is not None:
        if ceiling is not None and ceiling < own:
            return ceiling, "policy"
        return own, "instance"
    if default is not None:
        return (default if ceiling is None else min(default, ceiling)), "policy"
    return ceiling, "policy"


def on_idle_for(own: str | None, policy: Policy) -> tuple[str, str]:
    allowed = policy.allowed_on_idle
    if own is not None and (allowed is None or own in allowed):
        return own, "instance"
    if policy.default_on_idle is not None and (allowed is None or policy.default_on_idle in allowed):
        return policy.default_on_idle, "policy"
    if allowed:
        return (ON_IDLE_DEFAULT if ON_IDLE_DEFAULT in allowed else allowed[0]), "policy"
    return ON_IDLE_DEFAULT, "default"


def last_entered(doc: dict[str, Any], status: str, from_status: str | None = None) -> dt.datetime | None:
    """When the instance last moved to ``status`` (from ``from_status``, if given), from its transitions."""
    for entry in reversed(doc.get("transitions") or []):
        if entry["to"] == status and (from_status is None or entry["from"] == from_status):
            return as_utc(entry["at"])
    return None


def run_started_at(doc: dict[str, Any]) -> dt.datetime:
    """When the current run began: the last start, or the creation."""
    return last_entered(doc, "running", "starting") or as_utc(doc["created_at"])


@dataclass(frozen=True)
class Schedule:
    """What the rules will do to one instance, with the values they use."""

    expires_at: dt.datetime | None = None  # the TTL's deadline for the current run
    on_expiry: str = ON_EXPIRY_DEFAULT
    idle_minutes: int | None = None
    on_idle: str | None = None
    delete_after_stopped_days: int | None = None
    delete_at: dt.datetime | None = None  # stopped instances: when stopped_too_long deletes it
    from_policy: tuple[str, ...] = field(default_factory=tuple)  # the values the policy decided

    def idle_window(self, time_scale: float) -> dt.timedelta | None:
        return None if self.idle_minutes is None else dt.timedelta(seconds=self.idle_minutes * 60 * time_scale)


def _min(*values: dt.datetime | None) -> dt.datetime | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None


def ttl_deadline(doc: dict[str, Any], own: dict[str, Any], policy: Policy, time_scale: float) -> tuple[dt.datetime | None, str]:
    """The deadline of the current run, and whether the policy set it."""
    run_start = run_started_at(doc)
    seconds = lambda n: dt.timedelta(seconds=n * time_scale)  # noqa: E731
    mine = None
    if own.get("ttl_seconds") is not None:
        anchor = max(as_utc(own.get("ttl_set_at") or doc["created_at"]), run_start)
        mine = anchor + seconds(own["ttl_seconds"])
    elif own.get("expires_at") is not None and as_utc(own["expires_at"]) > run_start:
        mine = as_utc(own["expires_at"])
    if mine is None and policy.default_ttl_seconds is not None:
        default = run_start + seconds(policy.default_ttl_seconds)
        ceiling = None if policy.max_ttl_seconds is None else run_start + seconds(policy.max_ttl_seconds)
        return _min(default, ceiling), "policy"
    ceiling = None if policy.max_ttl_seconds is None else run_start + seconds(policy.max_ttl_seconds)
    deadline = _min(mine, ceiling)
    return deadline, "instance" if deadline is not None and deadline == mine else "policy"


def schedule_for(doc: dict[str, Any], own: dict[str, Any] | None, policy: Policy, time_scale: float = 1.0) -> Schedule:
    """The rules' view of one instance (``own``: its lifecycle settings, or None)."""
    own = own or {}
    from_policy: list[str] = []
    expires_at, source = ttl_deadline(doc, own, policy, time_scale)
    if doc.get("status") in AT_REST_OR_ENDING:
        expires_at = None  # a TTL counts while the VM runs: a stopped instance's starts at its next start
    if expires_at is not None and source == "policy":
        from_policy.append("expires_at")
    on_expiry = own.get("on_expiry")
    if on_expiry is None:
        on_expiry = policy.default_on_expiry or ON_EXPIRY_DEFAULT
        if expires_at is not None and policy.default_on_expiry is not None:
            from_policy.append("on_expiry")
    idle_minutes, source = _capped(own.get("idle_minutes"), policy.default_idle_minutes, policy.max_idle_minutes)
    on_idle = None
    if idle_minutes is not None:
        if source == "policy":
            from_policy.append("idle_minutes")
        on_idle, source = on_idle_for(own.get("on_idle"), policy)
        if source == "policy":
            from_policy.append("on_idle")
    days, source = _capped(own.get("delete_after_stopped_days"), policy.default_stopped_days, policy.max_stopped_days)
    if days is not None and source == "policy":
        from_policy.append("delete_after_stopped_days")
    delete_at = None
    if days is not None and doc.get("status") == "stopped":
        since = last_entered(doc, "stopped") or as_utc(doc["updated_at"])
        delete_at = since + dt.timedelta(seconds=days * 86400 * time_scale)
    return Schedule(expires_at=expires_at, on_expiry=on_expiry, idle_minutes=idle_minutes, on_idle=on_idle,
                    delete_after_stopped_days=days, delete_at=delete_at, from_policy=tuple(from_policy))


@dataclass(frozen=True)
class Looser:
    """A value a user asked for that the policy does not allow."""

    field: str
    message: str
    ceiling: Any


def looser_than_policy(values: dict[str, Any], policy: Policy, ttl_from: dt.datetime,
                       time_scale: float = 1.0) -> list[Looser]:
    """The fields of ``values`` (a create's or a PATCH's lifecycle fields) looser than ``policy``.

    ``ttl_from`` is when the TTL's ceiling counts from: now for a new instance, the current run's start
    for a running one. Null values are never looser: they hand the field back to the policy."""
    out: list[Looser] = []
    max_ttl = policy.max_ttl_seconds
    if max_ttl is not None and values.get("ttl_seconds") is not None and values["ttl_seconds"] > max_ttl:
        out.append(Looser("ttl_seconds", f"at most {max_ttl} (max_ttl_seconds of your policy)", max_ttl))
    if max_ttl is not None and values.get("expires_at") is not None:
        latest = ttl_from + dt.timedelta(seconds=max_ttl * time_scale)
        if as_utc(values["expires_at"]) > latest:
            stamp = latest.isoformat().replace("+00:00", "Z")
            out.append(Looser("expires_at", f"at most {stamp} (max_ttl_seconds {max_ttl} of your policy)", stamp))
    max_idle = policy.max_idle_minutes
    if max_idle is not None and values.get("idle_minutes") is not None and values["idle_minutes"] > max_idle:
        out.append(Looser("idle_minutes", f"at most {max_idle} (max_idle_minutes of your policy)", max_idle))
    allowed = policy.allowed_on_idle
    if allowed is not None and values.get("on_idle") is not None and values["on_idle"] not in allowed:
        out.append(Looser("on_idle", f"one of {', '.join(allowed)} (allowed_on_idle of your policy)", list(allowed)))
    max_days = policy.max_stopped_days
    days = values.get("delete_after_stopped_days")
    if max_days is not None and days is not None and days > max_days:
        out.append(Looser("delete_after_stopped_days", f"at most {max_days} (max_stopped_days of your policy)",
                          max_days))
    return out
