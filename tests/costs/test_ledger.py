"""The ledger's arithmetic against figures computed by hand, on state histories (pure: no database).

Disk sizes are 73 GB so that GB-month prices divide evenly by 730 hours: 73 GB × $0.08/GB-month =
$0.008/h on AWS, × $0.04 = $0.004/h on GCP, × $0.075 = $0.0075/h on Azure, × $0.05 (snapshots) = $0.005/h.
"""

from __future__ import annotations

import datetime as dt

import pytest

from app.costs import ledger
from app.costs.ledger import Record, by_kind, hourly_now, periods, running_rate, segments
from app.costs.prices import Override, PriceBook

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
LATER = T0 + dt.timedelta(days=10)


def at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def record(kind="instance", provider="aws", region="us-east-1", machine_type="t3.medium", disk_gb=73,
           history=(), **extra) -> Record:
    return Record(id=extra.pop("id", "i-1"), kind=kind, provider=provider, region=region,
                  machine_type=machine_type if kind == "instance" else None, disk_gb=disk_gb, owner="alice",
                  transitions=tuple((at(h), status) for h, status in history), **extra)


def costs(rec: Record, book: PriceBook | None = None, now=LATER, start=T0, end=LATER) -> dict[str, float]:
    return by_kind(segments(rec, book or PriceBook(), now), start, end)


# An AWS t3.medium ($0.0416/h) with a stop and a start: compute 0.5+0.5+10 (running) +0.5 (stopping)
# +0.5 (starting) +10 (running) = 22 h; disk from provisioning (1 h) to deleted (47.5 h) = 46.5 h,
# stopped included; the automatic public IP ($0.005/h) only while computing.
STOP_START = ((0, "pending"), (1, "provisioning"), (1.5, "configuring"), (2, "running"), (12, "stopping"),
              (12.5, "stopped"), (36.5, "starting"), (37, "running"), (47, "deleting"), (47.5, "deleted"))


def test_stop_and_start_timeline():
    got = costs(record(history=STOP_START))
    assert got["compute"] == pytest.approx(22 * 0.0416)  # 0.9152
    assert got["disk"] == pytest.approx(46.5 * 0.008)  # 0.372
    assert got["public_ip"] == pytest.approx(22 * 0.005)  # 0.11
    assert got["snapshot"] == 0
    assert sum(got.values()) == pytest.approx(1.3972)


def test_a_window_cuts_the_timeline_exactly():
    first_day = costs(record(history=STOP_START), end=at(24))
    # provisioning .5 + configuring .5 + running 10 + stopping .5 = 11.5 h of compute; disk 1 h → 24 h
    assert first_day["compute"] == pytest.approx(11.5 * 0.0416)
    assert first_day["disk"] == pytest.approx(23 * 0.008)
    assert first_day["public_ip"] == pytest.approx(11.5 * 0.005)
    second_day = costs(record(history=STOP_START), start=at(24), end=at(48))
    assert second_day["compute"] == pytest.approx(10.5 * 0.0416)
    assert first_day["disk"] + second_day["disk"] == pytest.approx(46.5 * 0.008)


def test_a_failed_launch_costs_only_while_its_resources_existed():
    # GCP e2-medium ($0.0335/h): provisioning at 1 h, cleaned up and failed at 1.25 h, deleted much later.
    rec = record(provider="gcp", region="us-central1", machine_type="e2-medium",
                 history=((0, "pending"), (1, "provisioning"), (1.25, "failed"), (30, "deleting"), (30.1, "deleted")))
    got = costs(rec)
    assert got["compute"] == pytest.approx(0.25 * 0.0335)
    assert got["disk"] == pytest.approx(0.25 * 0.004)
    assert got["public_ip"] == pytest.approx(0.25 * 0.005)
    assert sum(got.values()) == pytest.approx(0.010625)


def test_cancelled_before_the_cloud_was_touched_costs_nothing():
    rec = record(history=((0, "pending"), (0.1, "failed"), (0.2, "deleting"), (0.3, "deleted")))
    assert sum(costs(rec).values()) == 0


def test_snapshot_storage_while_it_exists():
    snap = record(kind="snapshot", id="s-1", history=((3, "creating"), (3.25, "available"), (20, "deleting"),
                                                     (20.1, "deleted")))
    assert costs(snap) == pytest.approx({"compute": 0, "disk": 0, "public_ip": 0, "snapshot": 17.1 * 0.005})
    failed = record(kind="snapshot", id="s-2", history=((3, "creating"), (3.5, "failed"), (4, "deleting"),
                                                        (4.5, "deleted")))
    assert costs(failed)["snapshot"] == pytest.approx(0.5 * 0.005)


def test_azure_keeps_charging_its_static_address_while_stopped():
    # Standard_B1s $0.0104/h; 73 GB × $0.075 = $0.0075/h; the Standard public IP costs until deletion.
    rec = record(provider="azure", region="eastus", machine_type="Standard_B1s",
                 history=((0, "provisioning"), (0.5, "running"), (10, "stopping"), (10.5, "stopped"),
                          (30, "deleting"), (30.5, "deleted")))
    got = costs(rec)
    assert got["compute"] == pytest.approx(10.5 * 0.0104)
    assert got["disk"] == pytest.approx(30.5 * 0.0075)
    assert got["public_ip"] == pytest.approx(30.5 * 0.005)


def test_the_local_provider_is_free_until_an_admin_prices_it():
    rec = record(provider="local", region="local", machine_type="local",
                 history=((0, "pending"), (1, "provisioning"), (1.5, "running"), (9, "deleting"), (9.5, "deleted")))
    assert sum(costs(rec).values()) == 0
    # $2/h from 5 h on, back to the sheet (free) at 7 h: 2 h charged.
    book = PriceBook([Override("local", "local", "local", 2.0, at(5)), Override("local", "local", "local", None, at(7))])
    assert costs(rec, book)["compute"] == pytest.approx(4.0)
    # An override of another region or type changes nothing here.
    other = PriceBook([Override("local", "elsewhere", "local", 2.0, at(0)), Override("aws", "local", "local", 9, at(0))])
    assert sum(costs(rec, other).values()) == 0


def test_a_price_change_never_moves_past_figures():
    rec = record(history=((0, "provisioning"), (1, "running")))
    before = costs(rec, PriceBook(), now=at(10), end=at(10))
    raised = PriceBook([Override("aws", "us-east-1", "t3.medium", 1.0, at(10))])
    assert costs(rec, raised, now=at(10), end=at(10)) == pytest.approx(before)
    later = costs(rec, raised, now=at(12), end=at(12))
    assert later["compute"] == pytest.approx(10 * 0.0416 + 2 * 1.0)


def test_unknown_prices_count_as_zero_and_say_so():
    rec = record(machine_type="x9.mystery", history=((0, "provisioning"), (1, "running")))
    items = segments(rec, PriceBook(), at(5))
    compute = [s for s in items if s.kind == "compute"]
    assert compute and all(not s.priced and s.usd_per_hour == 0 for s in compute)
    assert by_kind(items, T0, at(5))["disk"] == pytest.approx(5 * 0.008)
    assert running_rate(rec, PriceBook(), at(5)) is None


def test_hourly_now_and_running_rate():
    running = record(history=((0, "provisioning"), (1, "running")))
    assert hourly_now(segments(running, PriceBook(), at(5))) == pytest.approx(0.0416 + 0.008 + 0.005)
    assert running_rate(running, PriceBook(), at(5)) == pytest.approx(0.0416 + 0.008 + 0.005)
    stopped = record(history=((0, "provisioning"), (1, "running"), (2, "stopping"), (2.1, "stopped")))
    assert hourly_now(segments(stopped, PriceBook(), at(5))) == pytest.approx(0.008)
    gone = record(history=STOP_START)
    assert hourly_now(segments(gone, PriceBook(), LATER)) == 0
    # the rate at any moment of the history
    items = segments(gone, PriceBook(), LATER)
    assert ledger.rate_at(items, at(5)) == pytest.approx(0.0416 + 0.008 + 0.005)  # running
    assert ledger.rate_at(items, at(20)) == pytest.approx(0.008)  # stopped: the disk
    assert ledger.rate_at(items, at(0.5)) == 0  # pending
    assert ledger.rate_at(segments(running, PriceBook(), at(5)), at(5)) == pytest.approx(0.0416 + 0.008 + 0.005)


def test_records_without_a_history_are_costed_from_their_creation():
    doc = {"_id": "i-old", "provider": "aws", "region": "us-east-1", "machine_type": "t3.medium", "disk_gb": 73,
           "owner": "bob", "status": "running", "created_at": T0}
    rec = Record.from_doc(doc, "instance")
    assert costs(rec, now=at(2), end=at(2))["compute"] == pytest.approx(2 * 0.0416)


def test_periods_are_utc_days_and_months_clipped_to_the_window():
    days = periods(at(5), at(50), "day")
    assert [p.label for p in days] == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert days[0].start == at(5) and days[-1].end == at(50) and days[1].start == at(24)
    months = periods(dt.datetime(2026, 11, 20, tzinfo=dt.timezone.utc), dt.datetime(2027, 2, 3, tzinfo=dt.timezone.utc),
                     "month")
    assert [p.label for p in months] == ["2026-11", "2026-12", "2027-01", "2027-02"]
    assert ledger.next_month(dt.datetime(2026, 12, 31, 23, tzinfo=dt.timezone.utc)).year == 2027
    # Bucketed sums add up to the whole.
    items = segments(record(history=STOP_START), PriceBook(), LATER)
    assert sum(ledger.total(items, p.start, p.end) for p in periods(T0, LATER, "day")) == \
        pytest.approx(ledger.total(items, T0, LATER))


def test_compute_is_charged_in_the_lifecycles_own_states():
    from app.lifecycle.states import InstanceStatus

    names = {s.value for s in InstanceStatus}
    assert ledger.COMPUTE_STATES <= names, "every compute state is one the lifecycle writes"
    assert ledger.COMPUTE_STATES == {"provisioning", "configuring", "running", "stopping", "starting", "rebooting"}
    assert {"pending", "stopped", "failed", "deleting", "deleted"} == names - ledger.COMPUTE_STATES
    assert ledger.RESOURCES_GONE <= names and "provisioning" in ledger.RESOURCES_MADE


def test_transitions_of_the_same_instant_keep_their_recorded_order():
    at = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
    steps = ["pending", "provisioning", "running", "stopping", "stopped"]
    doc = {"_id": "i-1", "provider": "local", "region": "local", "machine_type": "local", "disk_gb": 20, "owner": "a",
           "created_at": at, "status": "stopped",
           "transitions": [{"from": None, "to": "pending", "at": at}]
           + [{"from": a, "to": b, "at": at} for a, b in zip(steps, steps[1:])]}
    record = Record.from_doc(doc, "instance")
    assert record.transitions[-1] == (at, "stopped")
    book = PriceBook([Override("local", "local", "local", 1.0, at)])
    assert hourly_now(segments(record, book, at + dt.timedelta(hours=1))) == 0, "stopped, not stopping"
