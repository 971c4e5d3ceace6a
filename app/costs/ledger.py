"""The cost ledger: pure functions from a record's state history and the prices to what it cost.

A record's ``transitions`` (``app.lifecycle.states.recorded``) say which status it was in at every
moment; the rules below say what each status costs:

* **compute** (the machine type's hourly price) while ``provisioning``, ``configuring``,
  ``running``, ``stopping``, ``starting`` or ``rebooting``;
* **disk** (``disk_gb`` × the disk GB-month price) while the disk exists: from the moment the
  instance enters ``provisioning`` until it is ``deleted``, stopped included — or until it is
  ``failed``, since a failed launch is cleaned up (everything removed) before that status is
  written, so it costs only the time its resources existed;
* **public_ip** while running (an address released at stop: AWS, GCP) or while the instance
  exists (a static address kept until deletion: Azure), per the provider's price sheet;
* **snapshot** storage (the snapshotted disk's size × the snapshot GB-month price) from
  ``creating`` until ``deleted`` (or ``failed``).

Everything is a ``Segment``: a stretch of time at a constant price per hour. Sums over any window
are exact and need no state, so the same history gives the same figures in every process and
after every restart. A month is 730 hours, as on the clouds' price pages.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal

from app.clock import as_utc
from app.costs.prices import PriceBook
from providers.prices import HOURS_PER_MONTH

Kind = Literal["compute", "disk", "public_ip", "snapshot"]
KINDS: tuple[Kind, ...] = ("compute", "disk", "public_ip", "snapshot")

COMPUTE_STATES = frozenset({"provisioning", "configuring", "running", "stopping", "starting", "rebooting"})
RESOURCES_MADE = frozenset({"provisioning", "creating"})  # entering these makes cloud resources
RESOURCES_GONE = frozenset({"failed", "deleted"})  # written only once everything is removed
HOUR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Record:
    """What the ledger needs to know about one instance or snapshot."""

    id: str
    kind: Literal["instance", "snapshot"]
    provider: str
    region: str
    machine_type: str | None  # instances only
    disk_gb: float
    owner: str
    transitions: tuple[tuple[dt.datetime, str], ...]  # (at, status entered), oldest first
    team: str | None = None
    name: str | None = None
    instance_id: str | None = None  # a snapshot's source instance; an instance's own id

    @classmethod
    def from_doc(cls, doc: dict[str, Any], kind: Literal["instance", "snapshot"],
                 disk_gb: float | None = None) -> "Record":
        history = doc.get("transitions") or []
        if history:
            # by time only: entries of the same instant (milliseconds, as stored) keep the order they were recorded in
            steps = tuple(sorted(((as_utc(t["at"]), t["to"]) for t in history), key=lambda step: step[0]))
        else:  # a record older than the recorded history: costed from its creation in its current status
            steps = ((as_utc(doc["created_at"]), doc["status"]),)
        return cls(id=doc["_id"], kind=kind, provider=doc["provider"], region=doc["region"],
                   machine_type=doc.get("machine_type") if kind == "instance" else None,
                   disk_gb=float(disk_gb if disk_gb is not None else doc.get("disk_gb") or 0), owner=doc["owner"],
                   transitions=steps, team=doc.get("team"), name=doc.get("name"),
                   instance_id=doc.get("instance_id") or doc["_id"])


@dataclass(frozen=True)
class Segment:
    """A stretch of ``[start, end)`` during which one part of a record cost ``usd_per_hour``."""

    record: Record
    kind: Kind
    start: dt.datetime
    end: dt.datetime
    usd_per_hour: float
    priced: bool = True  # False: no price is known (counted as 0)
    current: bool = False  # runs until now: the record is still in this state

    def usd_between(self, start: dt.datetime, end: dt.datetime) -> float:
        overlap = (min(self.end, end) - max(self.start, start)) / HOUR
        return self.usd_per_hour * overlap if overlap > 0 else 0.0


@dataclass(frozen=True)
class _Stretch:
    start: dt.datetime
    end: dt.datetime
    status: str
    exists: bool  # the record's cloud resources exist
    current: bool


def _stretches(record: Record, now: dt.datetime) -> Iterator[_Stretch]:
    exists = False
    steps = [s for s in record.transitions if s[0] < now]
    for index, (at, status) in enumerate(steps):
        if status in RESOURCES_MADE:
            exists = True
        elif status in RESOURCES_GONE:
            exists = False
        last = index + 1 == len(steps)
        end = now if last else steps[index + 1][0]
        if end > at:
            yield _Stretch(at, end, status, exists, last)


def segments(record: Record, book: PriceBook, now: dt.datetime) -> list[Segment]:
    """Everything ``record`` cost from its creation until ``now``, as constant-price segments."""
    sheet = book.sheet(record.provider)
    out: list[Segment] = []
    for s in _stretches(record, now):
        if record.kind == "snapshot":
            if s.exists and sheet.snapshot_gb_month_usd:
                out.append(Segment(record, "snapshot", s.start, s.end,
                                   record.disk_gb * sheet.snapshot_gb_month_usd / HOURS_PER_MONTH, current=s.current))
            continue
        computing = s.status in COMPUTE_STATES
        if computing and record.machine_type is not None:
            for piece in book.compute_pieces(record.provider, record.region, record.machine_type, s.start, s.end):
                out.append(Segment(record, "compute", piece.start, piece.end, piece.hourly_usd or 0.0,
                                   priced=piece.hourly_usd is not None, current=s.current and piece.end == s.end))
        if s.exists and sheet.disk_gb_month_usd:
            out.append(Segment(record, "disk", s.start, s.end, record.disk_gb * sheet.disk_gb_month_usd / HOURS_PER_MONTH,
                               current=s.current))
        ip_held = computing if sheet.public_ip_while == "running" else s.exists
        if ip_held and sheet.public_ip_hourly_usd:
            out.append(Segment(record, "public_ip", s.start, s.end, sheet.public_ip_hourly_usd, current=s.current))
    return out


def total(items: Iterable[Segment], start: dt.datetime, end: dt.datetime) -> float:
    return sum(s.usd_between(start, end) for s in items)


def by_kind(items: Iterable[Segment], start: dt.datetime, end: dt.datetime) -> dict[str, float]:
    out = {k: 0.0 for k in KINDS}
    for s in items:
        out[s.kind] += s.usd_between(start, end)
    return out


def hourly_now(items: Iterable[Segment]) -> float:
    """What the records cost per hour right now (the segments still open)."""
    return sum(s.usd_per_hour for s in items if s.current)


def rate_at(items: Iterable[Segment], moment: dt.datetime) -> float:
    """What the records cost per hour at ``moment`` (the segments covering it; at the present, the open ones)."""
    return sum(s.usd_per_hour for s in items if s.start <= moment < s.end or (s.current and s.end == moment))


def running_rate(record: Record, book: PriceBook, at: dt.datetime) -> float | None:
    """What an instance costs per hour while running (compute, disk, public IP); None when its
    compute price is unknown. The projection of a create or a start multiplies this."""
    if record.machine_type is None:
        raise ValueError("only instances run")
    compute = book.hourly_at(record.provider, record.region, record.machine_type, at)
    if compute is None:
        return None
    sheet = book.sheet(record.provider)
    return compute + record.disk_gb * sheet.disk_gb_month_usd / HOURS_PER_MONTH + sheet.public_ip_hourly_usd


# --- periods -------------------------------------------------------------------------------------------

Granularity = Literal["day", "month"]


def month_start(at: dt.datetime) -> dt.datetime:
    return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month(at: dt.datetime) -> dt.datetime:
    start = month_start(at)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


@dataclass(frozen=True)
class Period:
    label: str  # 2026-11-05 (day) or 2026-11 (month)
    start: dt.datetime
    end: dt.datetime


def periods(start: dt.datetime, end: dt.datetime, granularity: Granularity) -> list[Period]:
    """UTC days or calendar months covering ``[start, end)``, each clipped to it."""
    out: list[Period] = []
    if granularity == "day":
        cursor = start.replace(hour=0, minute=0, second=0, microsecond=0)
        while cursor < end:
            following = cursor + dt.timedelta(days=1)
            out.append(Period(cursor.strftime("%Y-%m-%d"), max(cursor, start), min(following, end)))
            cursor = following
    else:
        cursor = month_start(start)
        while cursor < end:
            following = next_month(cursor)
            out.append(Period(cursor.strftime("%Y-%m"), max(cursor, start), min(following, end)))
            cursor = following
    return out


@dataclass
class Ledger:
    """The segments of many records, computed once, for the sums a report or a budget needs."""

    items: list[Segment] = field(default_factory=list)

    @classmethod
    def of(cls, records: Iterable[Record], book: PriceBook, now: dt.datetime) -> "Ledger":
        return cls([s for r in records for s in segments(r, book, now)])

    def total(self, start: dt.datetime, end: dt.datetime) -> float:
        return total(self.items, start, end)

    def for_record(self, record_id: str) -> list[Segment]:
        return [s for s in self.items if s.record.id == record_id]
