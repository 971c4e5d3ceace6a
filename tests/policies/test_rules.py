"""The lifecycle rules as pure functions: policy layers, the TTL's deadline per run, the values the policy
caps or fills in, and which requests loosen a policy."""

from __future__ import annotations

import datetime as dt

from app.policies.rules import Policy, looser_than_policy, run_started_at, schedule_for
from app.settings import PolicyLimits

T0 = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
H = dt.timedelta(hours=1)


def instance(status="running", transitions=None) -> dict:
    return {"_id": "i-1", "owner": "alice", "status": status, "created_at": T0, "updated_at": T0,
            "transitions": transitions or [{"from": None, "to": "pending", "at": T0},
                                           {"from": "configuring", "to": "running", "at": T0 + dt.timedelta(minutes=2)}]}


def restarted(at: dt.datetime) -> dict:
    doc = instance()
    doc["transitions"] += [{"from": "running", "to": "stopping", "at": at - 2 * H},
                           {"from": "stopping", "to": "stopped", "at": at - 2 * H},
                           {"from": "stopped", "to": "starting", "at": at - dt.timedelta(minutes=1)},
                           {"from": "starting", "to": "running", "at": at}]
    return doc


def test_layers_merge_most_specific_first_and_defaults_never_exceed_ceilings():
    user = PolicyLimits(max_ttl_seconds=7200, max_stopped_days=14)
    everyone = {"max_ttl_seconds": 3600, "default_ttl_seconds": 3600, "max_idle_minutes": 60,
                "allowed_on_idle": ["stop"], "default_on_idle": "stop"}
    settings = PolicyLimits(default_stopped_days=30, default_ttl_seconds=86400)
    merged = Policy.merged([user, everyone, settings])
    assert merged.max_ttl_seconds == 7200  # the user's own wins over _default's
    assert merged.default_ttl_seconds == 3600 and merged.max_idle_minutes == 60
    assert merged.allowed_on_idle == ("stop",)
    assert merged.default_stopped_days == 14, "a default above a ceiling of another layer is capped"


def test_the_ttl_counts_from_the_later_of_when_it_was_set_and_the_last_start():
    policy = Policy()
    doc = instance()
    assert schedule_for(doc, {"ttl_seconds": 3600, "ttl_set_at": T0}, policy).expires_at == T0 + H
    patched = T0 + 5 * H
    assert schedule_for(doc, {"ttl_seconds": 3600, "ttl_set_at": patched}, policy).expires_at == patched + H
    started = T0 + 10 * H
    assert schedule_for(restarted(started), {"ttl_seconds": 3600, "ttl_set_at": T0}, policy).expires_at == started + H
    assert run_started_at(restarted(started)) == started


def test_a_fixed_deadline_passed_before_the_run_began_no_longer_applies():
    policy = Policy()
    assert schedule_for(instance(), {"expires_at": T0 + 3 * H}, policy).expires_at == T0 + 3 * H
    assert schedule_for(restarted(T0 + 5 * H), {"expires_at": T0 + 3 * H}, policy).expires_at is None


def test_a_tightened_ceiling_caps_the_instance_s_own_values():
    policy = Policy(max_ttl_seconds=1800, max_idle_minutes=20, max_stopped_days=3)
    own = {"ttl_seconds": 7200, "ttl_set_at": T0, "idle_minutes": 60, "delete_after_stopped_days": 10}
    s = schedule_for(instance(), own, policy)
    assert s.expires_at == T0 + dt.timedelta(minutes=30)
    assert s.idle_minutes == 20 and s.delete_after_stopped_days == 3
    assert set(s.from_policy) == {"expires_at", "idle_minutes", "delete_after_stopped_days"}
    loose = schedule_for(instance(), {"ttl_seconds": 600, "ttl_set_at": T0, "idle_minutes": 5}, policy)
    assert loose.expires_at == T0 + dt.timedelta(minutes=10) and loose.idle_minutes == 5
    assert loose.from_policy == ("delete_after_stopped_days",)  # set by nobody else: the ceiling applies


def test_an_instance_that_sets_nothing_gets_the_policy_s_default_or_its_ceiling():
    s = schedule_for(instance(), None, Policy(default_ttl_seconds=3600, max_ttl_seconds=7200, default_idle_minutes=30,
                                              default_on_expiry="delete"))
    assert s.expires_at == T0 + H and s.on_expiry == "delete" and s.idle_minutes == 30 and s.on_idle == "stop"
    assert schedule_for(instance(), None, Policy(max_ttl_seconds=7200)).expires_at == T0 + 2 * H
    assert schedule_for(instance(), None, Policy()).expires_at is None


def test_on_idle_falls_back_to_what_the_policy_allows():
    policy = Policy(allowed_on_idle=("delete",), max_idle_minutes=30)
    assert schedule_for(instance(), {"on_idle": "stop"}, policy).on_idle == "delete"
    assert schedule_for(instance(), {"on_idle": "stop", "idle_minutes": 10}, Policy()).on_idle == "stop"


def test_a_stopped_instance_is_deleted_after_its_days_counted_from_the_stop():
    stopped_at = T0 + 4 * H
    doc = instance("stopped")
    doc["transitions"] += [{"from": "running", "to": "stopping", "at": stopped_at - dt.timedelta(minutes=1)},
                           {"from": "stopping", "to": "stopped", "at": stopped_at}]
    s = schedule_for(doc, {"delete_after_stopped_days": 2, "ttl_seconds": 60}, Policy(max_ttl_seconds=3600))
    assert s.delete_at == stopped_at + dt.timedelta(days=2)
    assert s.expires_at is None, "a TTL counts while it runs: from its next start"
    assert schedule_for(instance(), {"delete_after_stopped_days": 2}, Policy()).delete_at is None  # running


def test_the_time_scale_shortens_every_duration():
    s = schedule_for(instance(), {"ttl_seconds": 3600, "ttl_set_at": T0, "idle_minutes": 10}, Policy(), 0.01)
    assert s.expires_at == T0 + dt.timedelta(seconds=36)
    assert s.idle_window(0.01) == dt.timedelta(seconds=6)


def test_looser_values_name_the_field_and_the_ceiling():
    policy = Policy(max_ttl_seconds=3600, max_idle_minutes=30, allowed_on_idle=("stop",), max_stopped_days=7)
    looser = looser_than_policy({"ttl_seconds": 7200, "idle_minutes": 31, "on_idle": "delete",
                                 "delete_after_stopped_days": 8, "on_expiry": "delete"}, policy, T0)
    assert {x.field: x.ceiling for x in looser} == {"ttl_seconds": 3600, "idle_minutes": 30, "on_idle": ["stop"],
                                                    "delete_after_stopped_days": 7}
    assert "max_ttl_seconds" in looser[0].message and "3600" in looser[0].message
    [late] = looser_than_policy({"expires_at": T0 + 2 * H}, policy, T0)
    assert late.field == "expires_at" and late.ceiling == "2026-11-22T09:00:00Z"
    assert looser_than_policy({"ttl_seconds": 3600, "idle_minutes": None, "expires_at": None}, policy, T0) == []
