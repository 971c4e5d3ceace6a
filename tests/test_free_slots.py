"""app.db.free_slots: every free slot once, the first few in a random order."""

from __future__ import annotations

from app.db import SLOT_SPREAD, free_slots


def test_every_free_slot_once_and_no_taken_one():
    slots = [f"u:{n}" for n in range(100)]
    taken = {f"u:{n}" for n in range(0, 100, 3)}
    order = list(free_slots(iter(slots), taken))
    assert sorted(order) == sorted(set(slots) - taken)
    rest = order[SLOT_SPREAD:]
    assert rest == sorted(rest, key=lambda s: int(s.split(":")[1])), "after the spread, in order"


def test_concurrent_requests_start_on_different_slots():
    starts = {next(free_slots((f"u:{n}" for n in range(1000)), set())) for _ in range(50)}
    assert len(starts) > 10, "a burst would otherwise queue on slot 0"


def test_lazy_over_a_huge_range():
    assert len(list(zip(range(5), free_slots((str(n) for n in range(10**12)), set())))) == 5
