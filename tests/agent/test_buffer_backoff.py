"""Buffer and Backoff in isolation."""

import pytest


def test_buffer_bounded_oldest_dropped_first(oa):
    buf = oa.Buffer(3)
    drops = [buf.append(i) for i in range(5)]
    assert drops == [0, 0, 0, 1, 1]
    assert buf.samples() == [2, 3, 4]
    assert len(buf) == 3 and buf.dropped_total == 2


def test_buffer_peek_is_oldest_first_and_limited(oa):
    buf = oa.Buffer(10)
    for i in range(5):
        buf.append(i)
    assert buf.peek(3).samples == [0, 1, 2]
    assert buf.peek(100).samples == [0, 1, 2, 3, 4]
    assert buf.samples() == [0, 1, 2, 3, 4]  # peek does not remove
    assert oa.Buffer(1).peek().samples == []


def test_buffer_ack_only_what_was_posted(oa):
    buf = oa.Buffer(4)
    for i in range(3):
        buf.append(i)
    batch = buf.peek(2)  # 0, 1 are in flight
    buf.append(3)
    buf.append(4)  # overflow drops 0, which is in flight
    assert buf.ack(batch) == 1  # only 1 was still buffered
    assert buf.samples() == [2, 3, 4]  # nothing newer acknowledged
    assert buf.ack(batch) == 0  # acking twice is harmless
    assert buf.ack(oa.Buffer(1).peek()) == 0  # empty batch


def test_buffer_rejects_bad_size(oa):
    with pytest.raises(ValueError):
        oa.Buffer(0)


def test_backoff_grows_and_is_capped(oa):
    b = oa.Backoff(initial=1, cap=60, rand=lambda: 1.0)
    assert [b.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    b.reset()
    assert b.next_delay() == 1


def test_backoff_jitter_bounds(oa):
    import random
    rng = random.Random(42)
    b = oa.Backoff(initial=1, cap=300, rand=rng.random)
    delays = [b.next_delay() for _ in range(200)]
    for k, d in enumerate(delays):
        base = min(300, 2 ** k)
        assert base / 2 <= d <= base  # "equal jitter": half fixed, half random
    assert len(set(delays)) > 100  # actually jittered
    low = oa.Backoff(initial=1, cap=300, rand=lambda: 0.0)
    assert [low.next_delay() for _ in range(3)] == [0.5, 1, 2]


def test_backoff_retry_after(oa):
    b = oa.Backoff(initial=1, cap=60, rand=lambda: 1.0)
    assert b.next_delay(retry_after=7) == 7
    assert b.next_delay(retry_after=0) == 1  # never spin
    assert b.next_delay(retry_after=100000) == 60  # never silent for longer than the cap
    assert b.next_delay() == 8  # the attempts still count
