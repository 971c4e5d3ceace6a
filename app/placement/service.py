"""The ``create`` step with failover: try the plan's choices in order until one takes.

The job keeps its placement in ``job.placement`` (the job's own document, written under its
lease): ``plan`` (fixed on the first run, so a resumed job follows the same order), ``next``
(the index of the choice to try) and ``tried`` (what happened to each attempt), and
``leftover``: a zone that failed and may still hold parts of the attempt. An attempt that meets
a capacity or quota error is first announced (an event ``failover.attempt``, an audit record
naming the rule, the metric), then recorded together with its leftover, then its zone is
cleaned up and the leftover cleared. A worker killed anywhere in between is replaced by one
that either retries that same zone (nothing was recorded yet: a real second attempt) or cleans
up the recorded leftover first and goes on with the next choice; either way nothing is left in
a zone the job moved away from. ``ONEBOX_TEST_KILL_AT=failover`` kills the worker right after an
attempt is recorded, before its zone is cleaned up.

When no choice is left the step fails with ``no_capacity``, and the error lists every attempt.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from app.audit import record_system_action
from app.lifecycle.engine import JobContext, kill_if_drilled
from app.observability.metrics import FAILOVER_ATTEMPTS
from app.placement.holds import CapacityHolds
from app.placement.plan import CAPACITY, QUOTA, Choice, choices, describe, fails_over, held_last, next_index, skipped
from providers.base import CapacityError, InstanceRef, InstanceSpec, ProviderError, QuotaError

ACTOR = "failover"  # the actor of its audit records
EVENT = "failover.attempt"


class NoCapacity(ProviderError):
    """Every choice of the plan failed with a capacity or quota error."""

    code = "no_capacity"

    def __init__(self, tried: list[dict[str, Any]]) -> None:
        super().__init__(f"no capacity for this machine type anywhere it may go: {describe(tried)}", retryable=False)
        self.details = {"tried": tried}


def cloud_code(exc: ProviderError) -> str:
    """The cloud's own error code when the provider kept it, else onebox's."""
    return getattr(exc, "cloud_code", None) or exc.code


async def _plan(ctx: JobContext, spec: InstanceSpec) -> dict[str, Any]:
    doc = ctx.doc
    zones, fallback = doc.get("zones") or [], doc.get("fallback_regions") or []
    catalog = {}
    if fails_over(zones, fallback):
        catalog = (await ctx.services.providers.catalog(doc["provider"])).regions
    plan = choices(spec.region, spec.zone, zones, fallback, catalog)
    if len(plan) > 1:
        held = await ctx.db_call(lambda: holds(ctx).held(doc["provider"], spec.machine_type, plan),
                                 "reading capacity holds")
        plan = held_last(plan, held)
    placement = {"plan": [c.as_doc() for c in plan], "next": 0, "tried": [], "leftover": None}
    await ctx.claim.update({"$set": {"job.placement": placement}})
    return placement


def holds(ctx: JobContext) -> CapacityHolds:
    return CapacityHolds(ctx.services.db.capacity_holds)


async def _clean(ctx: JobContext, provider, spec: InstanceSpec, placement: dict[str, Any]) -> dict[str, Any]:
    """Remove what the recorded failed attempt left in its zone; then forget it."""
    where = Choice.from_doc(placement["leftover"])
    await ctx.services.providers.call(provider.delete_instance, InstanceRef(spec.instance_id, where.region, where.zone))
    placement = {**placement, "leftover": None}
    await ctx.claim.update({"$set": {"job.placement": placement}})
    return placement


async def create_with_failover(ctx: JobContext, provider, spec: InstanceSpec) -> dict[str, Any]:
    """Create the instance at the first choice that takes; the step's fields to record (cloud id, where)."""
    placement = ctx.claim.job.get("placement") or await _plan(ctx, spec)
    if placement.get("leftover"):
        placement = await _clean(ctx, provider, spec, placement)
    plan = [Choice.from_doc(c) for c in placement["plan"]]
    settings = ctx.services.settings
    name = ctx.doc["provider"]
    while placement["next"] < len(plan):
        index = placement["next"]
        choice = plan[index]
        try:
            info = await ctx.services.providers.call(
                provider.create_instance, dataclasses.replace(spec, region=choice.region, zone=choice.zone))
        except (CapacityError, QuotaError) as exc:
            outcome = QUOTA if isinstance(exc, QuotaError) else CAPACITY
            following = next_index(plan, index, outcome)
            attempt = {**choice.as_doc(), "outcome": outcome, "code": cloud_code(exc)}
            await _announce(ctx, name, spec, plan, index, following, attempt, exc)
            placement = {**placement, "next": following, "tried": [*placement["tried"], attempt],
                         "leftover": choice.as_doc()}
            await ctx.claim.update({"$set": {"job.placement": placement}})
            kill_if_drilled(settings, "failover")
            placement = await _clean(ctx, provider, spec, placement)
            continue
        if info.extra.get("notice"):  # what the provider wants the user to know (e.g. qemu's accelerator)
            await ctx.event("provider.notice", info.extra["notice"], "create")
        if len(plan) > 1:
            await ctx.event(EVENT, f"placed in {choice}" + (f" after {len(placement['tried'])} failed attempt(s)"
                                                            if placement["tried"] else ""), "create",
                            data={**choice.as_doc(), "outcome": "placed", "code": None})
        return {"cloud_id": info.cloud_id, "region": choice.region, "zone": info.zone or choice.zone}
    raise NoCapacity(placement["tried"])


async def _announce(ctx: JobContext, provider_name: str, spec: InstanceSpec, plan: list[Choice], index: int,
                    following: int, attempt: dict[str, Any], exc: ProviderError) -> None:
    """The event, the audit record and the metric of one failed attempt (and the hold of its zone)."""
    choice = plan[index]
    if attempt["outcome"] == CAPACITY:
        cooldown = ctx.services.settings.capacity_cooldown_seconds
        await ctx.db_call(lambda: holds(ctx).hold(provider_name, spec.machine_type, choice, cooldown,
                                                  code=attempt["code"], instance_id=spec.instance_id),
                          "holding a zone")
    if following < len(plan):
        then = f"trying {plan[following]} next"
        jumped = skipped(plan, index, following)
        if jumped:
            then += f" (skipping {', '.join(map(str, jumped))}: the region's quota)"
    else:
        then = "no choice left"
    rule = "quota: skip the rest of the region" if attempt["outcome"] == QUOTA else "capacity: next zone"
    FAILOVER_ATTEMPTS.labels(provider_name, attempt["code"]).inc()
    await ctx.event(EVENT, f"{choice}: {attempt['outcome']} ({attempt['code']}); {then}", "create",
                    data={**attempt, "next": plan[following].as_doc() if following < len(plan) else None})
    await ctx.db_call(lambda: record_system_action(
        ctx.services.db, ACTOR, EVENT, "instance", spec.instance_id, provider=provider_name, rule=rule,
        region=choice.region, zone=choice.zone or "", code=attempt["code"], message=exc.message[:300]),
        "auditing a failover")


def cleanup_refs(doc: dict[str, Any]) -> list[InstanceRef]:
    """Everywhere a provision job may have made something: the record's own place and every choice it
    tried or was trying (cleanup after a failure deletes by tag in each)."""
    refs = [InstanceRef(doc["_id"], doc["region"], doc.get("zone"), doc.get("cloud_id"))]
    placement = (doc.get("job") or {}).get("placement") or {}
    plan = placement.get("plan") or []
    reached = plan[: min(placement.get("next", 0) + 1, len(plan))]
    seen = {(doc["region"], doc.get("zone"))}
    for where in [*reached, placement.get("leftover")]:
        if where and (where["region"], where.get("zone")) not in seen:
            seen.add((where["region"], where.get("zone")))
            refs.append(InstanceRef(doc["_id"], where["region"], where.get("zone")))
    return refs
