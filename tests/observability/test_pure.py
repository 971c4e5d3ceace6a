"""The pure parts of observability: log lines, request ids, durations from transitions, route labels,
metrics slots."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

import pytest

from app.logs import JsonLines, TextLines, accepted_request_id, context_value, log_context
from app.observability.metrics import seconds_to_delete, seconds_to_ready
from app.observability.middleware import agent_outcome, route_label
from app.observability.multiprocess import take_slot

T0 = dt.datetime(2026, 11, 22, 10, 0, 0, tzinfo=dt.timezone.utc)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def record(message: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    rec = logging.LogRecord("onebox.test", logging.WARNING, __file__, 1, message, args, exc_info)
    for name, value in extra.items():
        setattr(rec, name, value)
    return rec


class TestJsonLines:
    def test_one_object_per_line_with_the_bound_context(self):
        with log_context(request_id="req-1", instance_id="i-abc", worker_id="w1"):
            line = JsonLines().format(record("created %s", "it"))
        entry = json.loads(line)
        assert "\n" not in line
        assert entry["msg"] == "created it" and entry["level"] == "WARNING" and entry["logger"] == "onebox.test"
        assert entry["request_id"] == "req-1" and entry["instance_id"] == "i-abc" and entry["worker_id"] == "w1"
        assert "step" not in entry and "job" not in entry  # unknown fields are left out, not null
        assert entry["ts"].endswith("Z")

    def test_extra_wins_over_the_context_and_context_is_unbound_after(self):
        with log_context(instance_id="i-context"):
            entry = json.loads(JsonLines().format(record("x", instance_id="i-extra")))
        assert entry["instance_id"] == "i-extra"
        assert context_value("instance_id") is None

    def test_tracebacks_are_one_field_and_scrubbed(self):
        try:
            raise RuntimeError("Authorization: Bearer abc.def.ghi")
        except RuntimeError:
            line = JsonLines().format(record("boom", exc_info=sys.exc_info()))
        entry = json.loads(line)
        assert "Traceback" in entry["exc"] and "abc.def.ghi" not in line and "[redacted]" in entry["exc"]

    def test_text_lines_append_the_context(self):
        with log_context(request_id="r9", step="create"):
            line = TextLines().format(record("hello"))
        assert line.endswith("hello request_id=r9 step=create")

    def test_unknown_context_field_is_refused(self):
        with pytest.raises(ValueError):
            with log_context(user="alice"):
                pass


@pytest.mark.parametrize("given, kept", [
    ("3f2a-client-id", True), ("trace:abc/def@1+2=3.4_5", True), ("x" * 128, True),
    ("x" * 129, False), ("has space", False), ('quote"', False), ("new\nline", False), ("", False), (None, False),
])
def test_request_ids_are_accepted_only_when_well_formed(given, kept):
    got = accepted_request_id(given)
    assert (got == given) is kept
    assert 1 <= len(got) <= 128


class TestDurations:
    def test_time_to_ready_from_the_request_to_the_first_running(self):
        history = [{"from": None, "to": "pending", "at": at(0)}, {"from": "pending", "to": "provisioning", "at": at(2)},
                   {"from": "provisioning", "to": "configuring", "at": at(30)},
                   {"from": "configuring", "to": "running", "at": at(95.5)}]
        assert seconds_to_ready(history) == 95.5

    def test_a_second_running_is_a_restart_not_a_new_request(self):
        history = [{"from": None, "to": "pending", "at": at(0)}, {"from": "pending", "to": "running", "at": at(5)},
                   {"from": "running", "to": "stopped", "at": at(50)}, {"from": "stopped", "to": "running", "at": at(60)}]
        assert seconds_to_ready(history) is None

    def test_naive_datetimes_from_the_database_are_utc(self):
        history = [{"from": None, "to": "pending", "at": at(0).replace(tzinfo=None)},
                   {"from": "pending", "to": "running", "at": at(7)}]
        assert seconds_to_ready(history) == 7

    def test_time_to_delete_from_deleting_to_deleted(self):
        history = [{"from": None, "to": "pending", "at": at(0)}, {"from": "pending", "to": "running", "at": at(5)},
                   {"from": "running", "to": "deleting", "at": at(100)}, {"from": "deleting", "to": "deleted", "at": at(112)}]
        assert seconds_to_delete(history) == 12
        assert seconds_to_delete(history[:3]) is None
        assert seconds_to_ready([]) is None


def test_routes_are_labelled_by_template_and_unmatched_paths_share_one_label():
    class Route:
        path = "/v1/instances/{instance_id}"

    assert route_label({"route": Route()}) == "/v1/instances/{instance_id}"
    assert route_label({}) == "unmatched"
    assert [agent_outcome(s) for s in (202, 401, 413, 422, 503)] == ["accepted", "refused", "refused", "refused", "failed"]


def test_each_process_holds_its_own_slot_until_it_closes(tmp_path):
    from app.observability import multiprocess

    first = take_slot(tmp_path)
    second = take_slot(tmp_path)
    assert (first, second) == ("slot0", "slot1")
    import os

    os.close(multiprocess._held.pop(first))  # the process holding slot 0 died: the kernel drops its lock
    assert take_slot(tmp_path) == "slot0"
    for name in list(multiprocess._held):
        if name in ("slot0", "slot1"):
            os.close(multiprocess._held.pop(name))
