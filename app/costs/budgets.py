"""Budgets: monthly USD per user and per team, checked before a create or a start is queued.

**The check.** A create (or a start) is projected to cost its running rate — compute, disk and
public IP per hour (``ledger.running_rate``) — times its TTL, or times
``ONEBOX_BUDGET_MIN_HORIZON_HOURS`` (24) when it has none, at most 31 days. It is accepted when
what the budget has committed this month plus the projection fits the budget, for the owner's
budget and for their team's. What is committed is what the records of the budget have spent since
the month began (the ledger) plus what accepted requests reserved and have not spent yet.

**Exact under concurrency.** Quotas count in slots (``app.quotas``), but money has no natural
unit: a slot per cent would mean thousands of inserts per request. So each budget keeps an
append-only log of reservations, ``budget_reservations``, numbered 1, 2, 3… with ``_id`` =
``<scope>:<name>#<n>``. A request reads the log, decides against everything in it, and appends
its reservation as entry *n* + 1 where *n* is the last entry it read. Two requests that read the
same log both try to append the same number; the unique index lets exactly one of them in, and
the other reads again — now seeing the winner's reservation — and decides again. Every accepted
reservation was therefore decided knowing all those before it: 20 parallel creates against a
budget that fits 5 accept exactly 5. Losers of a round re-read only the log; a request that no
longer fits stops at once, so a burst settles in a few rounds.

**What a reservation holds.** Entry = {holder (the instance), usd (the projection), at,
expires_at (at + the projected hours)}. While in force it holds ``usd`` minus what its holder
has cost since ``at``; it is out of force once it expires, once its holder stops, fails or is
deleted after ``at`` (a later start makes a reservation of its own), when a later entry of the
same holder supersedes it (a replayed create), when the request that made it gave up (``void``,
set by that request only), or — for a holder whose record never appeared (a request that died
between its reservation and its insert) — after one minute. All of this is derived from the
records' transitions at each check: nothing needs to be released, and nothing is lost in a crash.
Errors only ever go one way: a request that reads a reservation just voided refuses more than it
had to, never accepts more than fits.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal

from app.clock import as_utc, utcnow
from app.costs import ledger
from app.costs.ledger import Record, Segment
from app.costs.repository import CostRepository, scope_filter
from app.db import is_duplicate_key
from app.problems import Problem

log = logging.getLogger("onebox.costs")

MAX_HORIZON_HOURS = 744.0  # 31 days: a longer TTL is projected over one month
PENDING_GRACE = dt.timedelta(seconds=60)  # a reservation whose record has not appeared yet
ENDS_A_RUN = frozenset({"stopping", "stopped", "failed", "deleting", "deleted"})
MAX_ROUNDS = 100
EPSILON_USD = 1e-9


@dataclass(frozen=True)
class Projection:
    """What a create or a start is expected to cost: a running rate over a number of hours."""

    hourly_usd: float
    hours: float
    basis: Literal["ttl", "minimum_horizon"]

    @property
    def usd(self) -> float:
        return self.hourly_usd * self.hours

    def public(self) -> dict[str, Any]:
        return {"hourly_usd": round(self.hourly_usd, 6), "hours": round(self.hours, 4), "basis": self.basis,
                "usd": round(self.usd, 6)}


def horizon(min_horizon_hours: float, now: dt.datetime, *, ttl_seconds: float | None = None,
            expires_at: dt.datetime | None = None) -> tuple[float, Literal["ttl", "minimum_horizon"]]:
    """Over how many hours a create or start is projected: its TTL, or the minimum horizon without one."""
    if expires_at is not None:
        hours = (as_utc(expires_at) - now).total_seconds() / 3600
    elif ttl_seconds is not None:
        hours = ttl_seconds / 3600
    else:
        return min(min_horizon_hours, MAX_HORIZON_HOURS), "minimum_horizon"
    return min(max(hours, 0.0), MAX_HORIZON_HOURS), "ttl"


@dataclass(frozen=True)
class Reservation:
    id: str
    seq: int
    holder: str
    action: str
    usd: float
    at: dt.datetime
    expires_at: dt.datetime
    void: bool = False

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> "Reservation":
        return cls(doc["_id"], doc["seq"], doc["holder"], doc.get("action", "create"), doc["usd"], as_utc(doc["at"]),
                   as_utc(doc["expires_at"]), bool(doc.get("void")))


def unspent_reservations(entries: Iterable[Reservation], records: dict[str, Record],
                         spend: dict[str, list[Segment]], now: dt.datetime) -> float:
    """What the reservations in force still hold: each one's projection less what its holder has cost
    since it was made (pure; see the module's docstring for when a reservation is in force)."""
    held = 0.0
    seen: set[str] = set()
    for entry in sorted(entries, key=lambda e: e.seq, reverse=True):
        if entry.void or entry.holder in seen:
            continue
        seen.add(entry.holder)  # the latest entry of a holder supersedes the ones before it
        if entry.expires_at <= now:
            continue
        record = records.get(entry.holder)
        if record is None:
            if now - entry.at < PENDING_GRACE:
                held += entry.usd
            continue
        if any(at > entry.at and status in ENDS_A_RUN for at, status in record.transitions):
            continue
        held += max(0.0, entry.usd - ledger.total(spend.get(entry.holder, []), entry.at, now))
    return held


@dataclass(frozen=True)
class Standing:
    """Where one budget stands at one moment of its month."""

    budget: dict[str, Any]
    month: str
    spent_usd: float  # since the month began
    reserved_usd: float  # reserved by accepted creates and starts, not spent yet
    hourly_usd: float  # what its records cost per hour right now
    hours_left: float  # until the month ends

    @property
    def monthly_usd(self) -> float:
        return float(self.budget["monthly_usd"])

    @property
    def committed_usd(self) -> float:
        return self.spent_usd + self.reserved_usd

    @property
    def left_usd(self) -> float:
        return max(0.0, self.monthly_usd - self.committed_usd)

    @property
    def used_percent(self) -> float:
        return 100.0 * self.spent_usd / self.monthly_usd if self.monthly_usd else 100.0

    @property
    def forecast_usd(self) -> float:
        """Spent so far plus what runs now, at today's rate, until the month ends."""
        return self.spent_usd + self.hourly_usd * self.hours_left

    def state(self, warn_at_percent: float) -> Literal["ok", "warning", "exhausted"]:
        if self.used_percent >= 100.0:
            return "exhausted"
        return "warning" if self.used_percent >= warn_at_percent else "ok"


def standing(budget: dict[str, Any], records: list[Record], items: list[Segment], entries: Iterable[Reservation],
             now: dt.datetime) -> Standing:
    start = ledger.month_start(now)
    spend: dict[str, list[Segment]] = {}
    for s in items:
        spend.setdefault(s.record.id, []).append(s)
    return Standing(budget=budget, month=start.strftime("%Y-%m"), spent_usd=ledger.total(items, start, now),
                    reserved_usd=unspent_reservations(entries, {r.id: r for r in records}, spend, now),
                    hourly_usd=ledger.hourly_now(items),
                    hours_left=(ledger.next_month(now) - now).total_seconds() / 3600)


def budget_exceeded(st: Standing, projection: Projection, action: str) -> Problem:
    b = st.budget
    return Problem(
        402, "budget_exceeded", "Budget exceeded",
        f"this {action} is projected at {projection.usd:.2f} USD ({projection.hours:g} h at "
        f"{projection.hourly_usd:.4f} USD/h) but the {b['scope']} budget of {b['name']} has {st.left_usd:.2f} USD left "
        f"of {st.monthly_usd:.2f} USD for {st.month} ({st.spent_usd:.2f} spent, {st.reserved_usd:.2f} reserved)",
        budget={"scope": b["scope"], "name": b["name"], "monthly_usd": st.monthly_usd, "month": st.month},
        spent_usd=round(st.spent_usd, 6), reserved_usd=round(st.reserved_usd, 6), left_usd=round(st.left_usd, 6),
        projection_usd=round(projection.usd, 6), projection=projection.public())


class ReservationLog:
    """One budget's append-only log of reservations (see the module's docstring)."""

    def __init__(self, repo: CostRepository, scope: str, name: str) -> None:
        self.collection = repo.db.budget_reservations
        self.key = f"{scope}:{name}"

    async def read(self, now: dt.datetime) -> tuple[list[Reservation], int]:
        """The entries that may still be in force, and the number of the last entry. One scan, newest
        first: an entry can only be appended after the one before it exists, so a scan that sees entry
        n + 1 has seen n."""
        oldest = now - dt.timedelta(hours=MAX_HORIZON_HOURS + 1)
        entries: list[Reservation] = []
        last = 0
        async for doc in self.collection.find({"scope": self.key}).sort("seq", -1):
            last = max(last, doc["seq"])
            entry = Reservation.from_doc(doc)
            if entry.at < oldest:
                break  # everything older has expired
            entries.append(entry)
        return entries, last

    async def append(self, seq: int, holder: str, action: str, projection: Projection, now: dt.datetime) -> str | None:
        """Entry ``seq``, or None when another request appended it first."""
        entry_id = f"{self.key}#{seq:010d}"
        try:
            await self.collection.insert_one({
                "_id": entry_id, "scope": self.key, "seq": seq, "holder": holder, "action": action,
                "usd": projection.usd, "hours": projection.hours, "at": now,
                "expires_at": now + dt.timedelta(hours=projection.hours), "void": False})
        except Exception as exc:
            if is_duplicate_key(exc):
                return None
            raise
        return entry_id


class BudgetKeeper:
    """Reads budgets' standing and takes reservations against them."""

    def __init__(self, repo: CostRepository) -> None:
        self.repo = repo

    async def records_of(self, budget: dict[str, Any], now: dt.datetime) -> list[Record]:
        # Far enough back for the spend of this month and of every reservation that may still be in force.
        since = min(ledger.month_start(now), now - dt.timedelta(hours=MAX_HORIZON_HOURS + 1))
        return await self.repo.records(scope_filter(budget["scope"], budget["name"]), since, now)

    async def standing(self, budget: dict[str, Any], book, now: dt.datetime | None = None) -> Standing:
        now = now or utcnow()
        records = await self.records_of(budget, now)
        entries, _ = await ReservationLog(self.repo, budget["scope"], budget["name"]).read(now)
        items = [s for r in records for s in ledger.segments(r, book, now)]
        return standing(budget, records, items, entries, now)

    async def reserve(self, budgets: list[dict[str, Any]], book, holder: str, action: str,
                      projection: Projection) -> list[str]:
        """Reserve ``projection`` in every budget, or in none (402 ``budget_exceeded``)."""
        taken: list[str] = []
        try:
            for budget in budgets:
                taken.append(await self._reserve_one(budget, book, holder, action, projection))
        except BaseException:
            await self.void(taken)
            raise
        return taken

    async def _reserve_one(self, budget: dict[str, Any], book, holder: str, action: str,
                           projection: Projection) -> str:
        now = utcnow()
        records = await self.records_of(budget, now)  # read once: records change slowly next to the log
        items = [s for r in records for s in ledger.segments(r, book, now)]
        log_ = ReservationLog(self.repo, budget["scope"], budget["name"])
        for _ in range(MAX_ROUNDS):
            now = utcnow()
            entries, last = await log_.read(now)
            st = standing(budget, records, items, entries, now)
            if st.committed_usd + projection.usd > st.monthly_usd + EPSILON_USD:
                raise budget_exceeded(st, projection, action)
            entry_id = await log_.append(last + 1, holder, action, projection, now)
            if entry_id is not None:
                return entry_id
        raise Problem(503, "budget_busy", "Budget busy", "too many requests against this budget at once; retry",
                      headers={"Retry-After": "1"})

    async def void(self, entry_ids: list[str]) -> None:
        """Give up reservations this request made (its create or start did not happen)."""
        if entry_ids:
            await self.repo.db.budget_reservations.update_many({"_id": {"$in": entry_ids}}, {"$set": {"void": True}})


def price_unknown(provider: str, region: str, machine_type: str) -> Problem:
    message = (f"no price is known for {machine_type} in {provider}/{region}, so its cost cannot be checked against "
               f"your budget; an admin can set one (PUT /v1/admin/prices/{provider}/{region}/{machine_type})")
    return Problem(402, "price_unknown", "Price unknown", message,
                   errors=[{"field": "machine_type", "message": message}])


def round_usd(value: float) -> float:
    return 0.0 if math.isclose(value, 0.0, abs_tol=1e-12) else round(value, 6)
