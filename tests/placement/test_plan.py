"""The placement plan, pure: which zones and regions are tried in which order, and what comes next."""

from __future__ import annotations

import pytest

from app.placement.plan import Choice, check, choices, describe, held_last, next_index
from app.placement.service import cleanup_refs
from providers.base import MachineType, Region

T = {"m1": MachineType("m1", 2, 4.0)}
CATALOG = {
    "us-east-1": Region("us-east-1", ("us-east-1a", "us-east-1b", "us-east-1c"), T),
    "us-west-2": Region("us-west-2", ("us-west-2a", "us-west-2b"), T),
    "eu-west-1": Region("eu-west-1", (), {"m2": MachineType("m2", 4, 8.0)}),
    "nozones": Region("nozones", (), T),
}
C = Choice


def test_without_failover_fields_one_choice_exactly_as_asked():
    assert choices("us-east-1", None, [], [], CATALOG) == [C("us-east-1", None)]
    assert choices("us-east-1", "us-east-1b", [], [], CATALOG) == [C("us-east-1", "us-east-1b")]


def test_zones_in_the_requests_order_then_every_zone_of_each_fallback_region():
    plan = choices("us-east-1", None, ["us-east-1c", "us-east-1a"], ["us-west-2", "nozones"], CATALOG)
    assert plan == [C("us-east-1", "us-east-1c"), C("us-east-1", "us-east-1a"), C("us-west-2", "us-west-2a"),
                    C("us-west-2", "us-west-2b"), C("nozones", None)]


def test_a_single_zone_with_fallback_regions_and_zones_naming_a_fallback_regions_zone():
    assert choices("us-east-1", "us-east-1b", [], ["us-west-2"], CATALOG)[:2] == [
        C("us-east-1", "us-east-1b"), C("us-west-2", "us-west-2a")]
    plan = choices("us-east-1", None, ["us-west-2b"], ["us-west-2"], CATALOG)
    assert plan == [C("us-east-1", z) for z in CATALOG["us-east-1"].zones] + [C("us-west-2", "us-west-2b")]


def test_shared_zone_names_apply_to_every_region_that_has_them():  # Azure's zones are "1", "2", "3" everywhere
    azure = {"eastus": Region("eastus", ("1", "2", "3"), T), "westeurope": Region("westeurope", ("1", "2", "3"), T)}
    assert choices("eastus", None, ["2", "1"], ["westeurope"], azure) == [
        C("eastus", "2"), C("eastus", "1"), C("westeurope", "2"), C("westeurope", "1")]


def test_capacity_moves_to_the_next_choice_quota_skips_the_rest_of_the_region():
    plan = choices("us-east-1", None, [], ["us-west-2"], CATALOG)
    assert next_index(plan, 0, "capacity") == 1
    assert next_index(plan, 0, "quota") == 3 and plan[3] == C("us-west-2", "us-west-2a")
    assert next_index(plan, 3, "quota") == len(plan)
    assert next_index(plan, 4, "capacity") == len(plan)


def test_held_zones_go_last_each_group_in_its_order():
    plan = choices("us-east-1", None, [], ["us-west-2"], CATALOG)
    ordered = held_last(plan, {C("us-east-1", "us-east-1a"), C("us-west-2", "us-west-2a")})
    assert ordered == [C("us-east-1", "us-east-1b"), C("us-east-1", "us-east-1c"), C("us-west-2", "us-west-2b"),
                       C("us-east-1", "us-east-1a"), C("us-west-2", "us-west-2a")]


@pytest.mark.parametrize("zone, zones, fallback, snapshot, field", [
    ("us-east-1a", ["us-east-1b"], [], None, "zones"),
    (None, ["us-east-1a", "us-east-1a"], [], None, "zones"),
    (None, ["us-west-2a"], [], None, "zones.0"),  # not in the region, and us-west-2 is no fallback
    (None, ["us-east-1a", "mars-1a"], ["us-west-2"], None, "zones.1"),
    (None, [], ["us-east-1"], None, "fallback_regions.0"),
    (None, [], ["us-west-2", "atlantis"], None, "fallback_regions.1"),
    (None, [], ["eu-west-1"], None, "fallback_regions.0"),  # m1 is not offered there
    (None, [], ["us-west-2", "us-west-2"], None, "fallback_regions"),
    (None, [], ["us-west-2"], "s-1", "fallback_regions"),
])
def test_bad_failover_fields_name_the_field(zone, zones, fallback, snapshot, field):
    problem = check("us-east-1", zone, zones, fallback, "m1", snapshot, CATALOG)
    assert problem is not None and problem[0] == field, problem


def test_good_failover_fields_pass():
    assert check("us-east-1", None, ["us-east-1b", "us-west-2a"], ["us-west-2"], "m1", None, CATALOG) is None
    assert check("us-east-1", "us-east-1a", [], [], "m1", "s-1", CATALOG) is None


def test_the_failure_message_lists_what_was_tried():
    tried = [{"region": "us-east-1", "zone": "us-east-1a", "outcome": "capacity", "code": "InsufficientInstanceCapacity"},
             {"region": "us-west-2", "zone": None, "outcome": "quota", "code": "VcpuLimitExceeded"}]
    assert describe(tried) == ("us-east-1/us-east-1a: capacity (InsufficientInstanceCapacity); "
                               "us-west-2: quota (VcpuLimitExceeded)")


def test_cleanup_reaches_every_region_and_zone_an_attempt_reached():
    plan = [c.as_doc() for c in choices("us-east-1", None, [], ["us-west-2"], CATALOG)]
    doc = {"_id": "i-1", "region": "us-east-1", "zone": None, "cloud_id": None,
           "job": {"placement": {"plan": plan, "next": 3, "tried": [], "leftover": plan[2]}}}
    assert [(r.region, r.zone) for r in cleanup_refs(doc)] == [
        ("us-east-1", None), ("us-east-1", "us-east-1a"), ("us-east-1", "us-east-1b"), ("us-east-1", "us-east-1c"),
        ("us-west-2", "us-west-2a")]
    assert [(r.region, r.zone) for r in cleanup_refs({**doc, "job": None})] == [("us-east-1", None)]
