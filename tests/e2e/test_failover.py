"""Capacity failover on each cloud stand-in, through onebox's API and worker.

On AWS (moto behind the EC2 fault proxy), GCP (the GCE fake) and Azure (the ARM fake): a zone out
of capacity → the instance runs in the next zone and nothing is left in the first; the zone is
then held, so the next launch goes straight to the other zone; a region over its quota → the
next region (the rest of the first region skipped); every choice failing → ``failed`` with
``no_capacity`` listing what was tried, nothing left anywhere. Every attempt is an event
``failover.attempt`` with the zone and the cloud's own error code, an audit record naming the rule,
and a count in ``onebox_failover_attempts_total``."""

from __future__ import annotations

import pytest

from tests.api.helpers import wait_status
from tests.conftest import make_settings
from tests.e2e.cloud_support import running_onebox
from tests.e2e.failover_stands import STANDS, FailoverStand, aws_failover, azure_failover, gcp_failover  # noqa: F401
from tests.fakes.fixtures import arm, fake, gce, gce_server  # noqa: F401 (fixtures)
from tests.observability.support import parse, value
from tests.providers.aws_fixtures import aws_env, moto_ec2  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


async def failover_events(api, headers, instance_id: str) -> list[dict]:
    events = (await api.get(f"/v1/instances/{instance_id}/events", headers=headers)).json()
    return [e for e in events if e["type"] == "failover.attempt"]


def outcomes(events: list[dict], where: str) -> list[tuple]:
    """(zone or region, outcome, code) of each attempt. A create step that ran again after it placed the
    instance (its lease lost on a busy machine, a retryable error after the create) says "placed" again:
    the same placement, counted once."""
    seen = []
    for e in events:
        item = (e["data"][where], e["data"]["outcome"], e["data"]["code"])
        if not (item[1] == "placed" and item in seen):
            seen.append(item)
    return seen


async def launch(api, headers, stand: FailoverStand, name: str, **fields) -> dict:
    r = await api.post("/v1/instances", json=stand.body(name, **fields), headers=headers)
    assert r.status_code == 202, r.text
    return await wait_status(api, f"/v1/instances/{r.json()['id']}", headers, {"running", "failed"}, 120)


@pytest.mark.parametrize("stand_fixture", STANDS)
async def test_capacity_next_zone_quota_next_region_then_no_capacity(stand_fixture, request, dbserver, tmp_path):
    stand: FailoverStand = request.getfixturevalue(stand_fixture)
    settings = make_settings(dbserver, tmp_path / "data", providers=[stand.name])
    async with running_onebox(settings, providers={stand.name: stand.make_provider()}) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        admin = {"Authorization": f"Bearer {svc.tokens.mint('root', role='admin')}"}
        before = parse((await api.get("/metrics")).text)

        # 1. The first zone has no capacity: the instance runs in the second, nothing is left in the first.
        short = stand.capacity(stand.region, stand.zone_a)
        first = await launch(api, headers, stand, "first", zones=[stand.zone_a, stand.zone_b])
        assert first["status"] == "running", first
        assert (first["region"], first["zone"]) == (stand.region, stand.zone_b)
        assert stand.parts_in(first["id"], stand.region, stand.zone_a) == []
        assert stand.parts_in(first["id"], stand.region, stand.zone_b), "it runs in the second zone"
        attempts = await failover_events(api, headers, first["id"])
        assert outcomes(attempts, "zone") == [(stand.zone_a, "capacity", stand.capacity_code),
                                              (stand.zone_b, "placed", None)]
        audit = (await api.get("/v1/admin/audit", headers=admin)).json()
        assert [(a["actor"], a["action"], a["detail"]["zone"], a["detail"]["rule"]) for a in audit
                if a["target_id"] == first["id"] and a["actor"] == "failover"] == [
            ("failover", "failover.attempt", stand.zone_a, "capacity: next zone")]

        # 2. The zone is held: the next launch of that machine type goes to the second zone at once.
        hits = stand.hits(short)
        second = await launch(api, headers, stand, "second", zones=[stand.zone_a, stand.zone_b])
        assert (second["status"], second["zone"]) == ("running", stand.zone_b)
        assert stand.hits(short) == hits, "the held zone was not tried again"
        assert outcomes(await failover_events(api, headers, second["id"]), "zone") == [(stand.zone_b, "placed", None)]
        stand.clear(short)

        # 3. The region is over quota: the rest of it is skipped, the instance runs in the fallback region.
        over = stand.quota(stand.region)
        third = await launch(api, headers, stand, "third", fallback_regions=[stand.fallback])
        assert third["status"] == "running", third
        assert third["region"] == stand.fallback
        assert stand.parts_in(third["id"], stand.region, None) == []
        attempts = await failover_events(api, headers, third["id"])
        assert outcomes(attempts, "region") == [(stand.region, "quota", stand.quota_code),
                                                (stand.fallback, "placed", None)]
        assert stand.hits(over) == 1, "one quota error skips the rest of the region"

        # 4. Nothing left to try: failed, no_capacity, every attempt listed, nothing left anywhere.
        elsewhere = stand.quota(stand.fallback)
        short_b = stand.capacity(stand.region, stand.zone_b)
        stand.clear(over)
        short_a = stand.capacity(stand.region, stand.zone_a)
        last = await launch(api, headers, stand, "last", zones=[stand.zone_b, stand.zone_a],
                            fallback_regions=[stand.fallback])
        assert last["status"] == "failed", last
        assert last["error"]["code"] == "no_capacity" and last["error"]["step"] == "create"
        tried = [(t["region"], t["zone"], t["outcome"], t["code"]) for t in last["error"]["tried"]]
        # zone A is still held (step 1), so it comes after every other choice, the fallback region's included
        assert [t[0] for t in tried] == [stand.region, stand.fallback, stand.region]
        assert tried[0] == (stand.region, stand.zone_b, "capacity", stand.capacity_code)
        assert tried[1][2:] == ("quota", stand.quota_code), "one quota error: the rest of the region is skipped"
        assert tried[2] == (stand.region, stand.zone_a, "capacity", stand.capacity_code)
        assert stand.zone_a in last["error"]["message"] and stand.fallback in last["error"]["message"]
        for handle in (elsewhere, short_a, short_b):
            stand.clear(handle)

        after = parse((await api.get("/metrics")).text)
        for code, moved in ((stand.capacity_code, 3), (stand.quota_code, 2)):
            labels = dict(provider=stand.name, code=code)
            assert value(after, "onebox_failover_attempts_total", **labels) - \
                value(before, "onebox_failover_attempts_total", **labels) == moved, code

        for inst in (first, second, third):
            assert (await api.delete(f"/v1/instances/{inst['id']}", headers=headers)).status_code == 202
        for inst in (first, second, third):
            await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"}, 120)
    assert stand.alive() == [], "nothing of ours is left in the stand-in"


async def test_bad_failover_fields_are_refused_naming_the_field(api, mint, ssh_keypair):
    from tests.api.helpers import instance_body

    cases = [({"zone": "local", "zones": ["local"]}, "zones"), ({"zones": ["mars-1a"]}, "zones.0"),
             ({"fallback_regions": ["atlantis"]}, "fallback_regions.0"), ({"fallback_regions": ["local"]},
                                                                           "fallback_regions.0")]
    for fields, field in cases:
        r = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, **fields), headers=mint("alice"))
        assert r.status_code == 422, r.text
        assert [e["field"] for e in r.json()["errors"]] == [field], r.json()
    assert (await api.get("/v1/instances", headers=mint("alice"))).json()["items"] == [], "nothing was queued"
