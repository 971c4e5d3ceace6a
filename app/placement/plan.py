"""The placement plan: which (region, zone) pairs to try, in which order, and what comes next.

Pure functions over the request and the provider's catalog; no I/O.

* The regions are the request's ``region``, then its ``fallback_regions``, in that order.
* In each region the zones are those of ``zones`` (or the single ``zone``) that belong to it, in
  the request's order; a region none of them belongs to is tried in every zone the catalog lists
  for it (or once, the provider choosing, when it lists none). A request with neither ``zones``
  nor ``fallback_regions`` is one choice, exactly as asked: no failover.
* After a capacity error the next choice follows; after a quota error (a region's limit) the
  next choice in another region.
* Choices whose zone is on hold (it just ran out of capacity for this machine type elsewhere) are
  tried only after all the others, in their original order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from providers.base import Region

CAPACITY = "capacity"
QUOTA = "quota"
MAX_ZONES = 16
MAX_FALLBACK_REGIONS = 8


@dataclass(frozen=True)
class Choice:
    region: str
    zone: str | None

    def as_doc(self) -> dict[str, Any]:
        return {"region": self.region, "zone": self.zone}

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "Choice":
        return cls(doc["region"], doc.get("zone"))

    def __str__(self) -> str:
        return f"{self.region}/{self.zone}" if self.zone else self.region


def fails_over(zones: Sequence[str], fallback_regions: Sequence[str]) -> bool:
    return bool(zones) or bool(fallback_regions)


def choices(region: str, zone: str | None, zones: Sequence[str], fallback_regions: Sequence[str],
            catalog: Mapping[str, Region]) -> list[Choice]:
    """Every (region, zone) to try, in order of preference."""
    if not fails_over(zones, fallback_regions):
        return [Choice(region, zone)]
    wanted = list(zones) or ([zone] if zone else [])
    plan: list[Choice] = []
    for name in [region, *fallback_regions]:
        known = catalog[name].zones if name in catalog else ()
        mine = [z for z in wanted if z in known]
        plan += [Choice(name, z) for z in (mine or known or [None])]
    return plan


def check(region: str, zone: str | None, zones: Sequence[str], fallback_regions: Sequence[str], machine_type: str,
          snapshot_id: str | None, catalog: Mapping[str, Region]) -> tuple[str, str] | None:
    """The first problem with a request's failover fields, as (field, message); None when they are fine.

    ``region``, ``zone`` and ``machine_type`` themselves are checked by the caller first."""
    if zone is not None and zones:
        return "zones", "give zone or zones, not both"
    if len(set(zones)) != len(zones):
        return "zones", "lists a zone twice"
    if len(set(fallback_regions)) != len(fallback_regions):
        return "fallback_regions", "lists a region twice"
    for index, name in enumerate(fallback_regions):
        field = f"fallback_regions.{index}"
        if name == region:
            return field, f"'{name}' is already the region"
        if name not in catalog:
            return field, f"unknown region '{name}'; known: {', '.join(sorted(catalog)[:20])}"
        if machine_type not in catalog[name].machine_types:
            return field, f"machine type '{machine_type}' is not offered in {name}"
    if fallback_regions and snapshot_id is not None:
        return "fallback_regions", "a snapshot lives in one region: no fallback regions with snapshot_id"
    regions = [region, *fallback_regions]
    for index, name in enumerate(zones):
        if not any(name in catalog[r].zones for r in regions if r in catalog):
            offered = sorted({z for r in regions if r in catalog for z in catalog[r].zones})
            return f"zones.{index}", f"unknown zone '{name}' in {', '.join(regions)}; known: {', '.join(offered)}"
    return None


def held_last(plan: Sequence[Choice], held: Iterable[Choice]) -> list[Choice]:
    """The plan with the choices on hold moved after all the others (each group keeps its order)."""
    on_hold = set(held)
    return [c for c in plan if c not in on_hold] + [c for c in plan if c in on_hold]


def next_index(plan: Sequence[Choice], index: int, outcome: str) -> int:
    """The choice to try after ``plan[index]`` failed with ``outcome``; ``len(plan)`` when none is left."""
    if outcome == QUOTA:
        region = plan[index].region
        return next((j for j in range(index + 1, len(plan)) if plan[j].region != region), len(plan))
    return index + 1


def skipped(plan: Sequence[Choice], index: int, following: int) -> list[Choice]:
    """The choices a quota error jumped over (between ``index`` and ``following``)."""
    return list(plan[index + 1:following])


def describe(tried: Sequence[Mapping[str, Any]]) -> str:
    """What was tried, for the failure message: ``us-east-1/us-east-1a: capacity (InsufficientInstanceCapacity)``."""
    parts = []
    for attempt in tried:
        where = str(Choice.from_doc(attempt))
        code = f" ({attempt['code']})" if attempt.get("code") else ""
        parts.append(f"{where}: {attempt['outcome']}{code}")
    return "; ".join(parts)
