"""When a reservation holds money, and how much (pure: see app.costs.budgets' docstring)."""

from __future__ import annotations

import datetime as dt

import pytest

from app.costs import ledger
from app.costs.budgets import MAX_HORIZON_HOURS, Reservation, horizon, unspent_reservations
from app.costs.ledger import Record
from app.costs.prices import Override, PriceBook

T0 = dt.datetime(2026, 11, 10, tzinfo=dt.timezone.utc)
BOOK = PriceBook([Override("local", "local", "local", 1.0, T0 - dt.timedelta(days=1))])  # $1/h, nothing else


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def box(instance_id: str, *steps: tuple[float, str]) -> Record:
    return Record(id=instance_id, kind="instance", provider="local", region="local", machine_type="local", disk_gb=20,
                  owner="alice", transitions=tuple((at(h), s) for h, s in steps))


def entry(seq: int, holder: str, usd: float, hours_at: float, hours: float = 24, void: bool = False) -> Reservation:
    return Reservation(f"user:alice#{seq}", seq, holder, "create", usd, at(hours_at), at(hours_at + hours), void)


def held(entries, records, now_hours: float) -> float:
    now = at(now_hours)
    spend = {r.id: ledger.segments(r, BOOK, now) for r in records}
    return unspent_reservations(entries, {r.id: r for r in records}, spend, now)


def test_a_reservation_holds_its_projection_less_what_its_instance_spent_since():
    running = box("i-a", (0, "pending"), (1, "provisioning"), (2, "running"))
    assert held([entry(1, "i-a", 24, 0)], [running], 0.5) == pytest.approx(24)
    assert held([entry(1, "i-a", 24, 0)], [running], 11) == pytest.approx(14)  # 10 h at $1/h spent
    assert held([entry(1, "i-a", 24, 0)], [running], 23.9) == pytest.approx(1.1)
    assert held([entry(1, "i-a", 24, 0, hours=30)], [running], 29) == 0, "spent it all: nothing left to hold"


def test_a_reservation_ends_with_its_run_its_horizon_or_its_request():
    stopped = box("i-a", (0, "pending"), (1, "provisioning"), (2, "running"), (5, "stopping"), (5.1, "stopped"))
    assert held([entry(1, "i-a", 24, 0)], [stopped], 6) == 0, "stopped: a start makes a reservation of its own"
    started = box("i-a", (0, "pending"), (1, "provisioning"), (2, "running"), (5, "stopping"), (5.1, "stopped"),
                  (8, "starting"), (8.2, "running"))
    # the start's reservation (made at 7.9 h) is in force; the create's ended at the stop
    assert held([entry(1, "i-a", 24, 0), entry(2, "i-a", 10, 7.9)], [started], 9) == pytest.approx(10 - 1.0)
    failed = box("i-a", (0, "pending"), (1, "provisioning"), (1.5, "failed"))
    assert held([entry(1, "i-a", 24, 0)], [failed], 2) == 0
    running = box("i-a", (0, "pending"), (1, "provisioning"), (2, "running"))
    assert held([entry(1, "i-a", 24, 0, hours=3)], [running], 3.5) == 0, "expired"
    assert held([entry(1, "i-a", 24, 0, void=True)], [running], 1) == 0, "given up by its request"


def test_the_latest_entry_of_a_holder_supersedes_the_earlier_ones():
    running = box("i-a", (0, "pending"))
    assert held([entry(1, "i-a", 24, 0), entry(2, "i-a", 24, 0.01)], [running], 0.5) == pytest.approx(24)
    # a void latest entry does not supersede the one before it
    assert held([entry(1, "i-a", 24, 0), entry(2, "i-a", 5, 0.01, void=True)], [running], 0.5) == pytest.approx(24)


def test_a_reservation_without_its_record_holds_for_a_minute():
    """The request died between its reservation and its insert: its money comes back after a minute."""
    assert held([entry(1, "i-ghost", 24, 0)], [], 0.01) == pytest.approx(24)  # 36 s later
    assert held([entry(1, "i-ghost", 24, 0)], [], 0.02) == 0  # 72 s later


def test_the_projection_horizon():
    now = at(0)
    assert horizon(24, now) == (24, "minimum_horizon")
    assert horizon(24, now, ttl_seconds=2 * 3600) == (2, "ttl")
    assert horizon(24, now, expires_at=at(5)) == (pytest.approx(5), "ttl")
    assert horizon(24, now, ttl_seconds=90 * 86400) == (MAX_HORIZON_HOURS, "ttl"), "a month at most"
    assert horizon(24, now, expires_at=at(-1)) == (0, "ttl")
