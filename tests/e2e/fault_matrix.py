"""The machinery of the cloud-fault matrix (``test_cloud_faults``): cases, lanes, phases, checks, the report.

A ``Case`` is one fault at one provider call of one flow and what must come of
it; a ``Stand`` is one cloud stand-in with its fault controls and its own view
of what is left. ``run_matrix`` runs every case of a stand through one onebox:
it creates the instances, snapshots some, deletes the snapshots, stops, starts
and reboots some, deletes every instance (the phases), pausing the worker
between phases to aim the phase's faults at their instances, and checks each
case right after its phase and the stand-in at the end. One instance (a
``Lane``) carries one case per phase, as the phases never overlap.

The power phases (``stop``, ``start``, ``reboot``: ``POST /v1/instances/{id}/<phase>``)
run only for a stand with cases in them: a row such as
``("stop", "StopInstances", "")`` in a stand's ``calls`` is all it takes. A
start case's instance is stopped first (in the stop phase, without a fault), and
a power phase is over for an instance once its record came out of the phase's
own status (``stopping``, ``starting``, ``rebooting``: the last transition says so).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
import pytest

from tests.conftest import make_settings
from tests.e2e.cloud_support import SSH_KEY
from tests.reports import CLOUD_FAULTS

PHASES = ("create", "snapshot", "delete_snapshot", "stop", "start", "reboot", "delete")
PHASE_STEPS = {"create": {"create", "wait_running", "configure"}, "snapshot": {"snapshot"},
               "delete_snapshot": {"delete_snapshot"}, "stop": {"stop"}, "start": {"start"}, "reboot": {"reboot"},
               "delete": {"delete"}}
WANTED = {"create": "running", "snapshot": "available", "delete_snapshot": "deleted", "stop": "stopped",
          "start": "running", "reboot": "running", "delete": "deleted"}
# power phase -> (the status its instances start from, the status the phase passes through)
POWER_PHASES = {"stop": ("running", "stopping"), "start": ("stopped", "starting"), "reboot": ("running", "rebooting")}
WAIT = 150.0  # seconds one phase may take at most


@dataclass
class Case:
    """One fault at one provider call of one flow, and what must come of it."""

    call: str  # the provider call, as the cloud names it
    fault: str  # throttle | 5xx | timeout | capacity | quota | <fault> persistent
    phase: str
    arm: Callable[[str], Any]  # arms the fault for this id (instance or snapshot); returns a handle
    scope: str = "instance"  # which id the fault is aimed at: "instance" or "snapshot"
    outcome: str | None = None  # status wanted at the end of the phase; None: WANTED[phase]
    code: str | None = None  # error code wanted when the outcome is failed (or a power phase's settled status)
    clear_after: int = 0  # persistent fault removed after this many ``clear_on`` events
    clear_on: str = "step.retrying"  # or "cleanup.retrying": a fault that also holds up the cleanup
    step: str | None = None  # the step whose step.retrying events must show it, when it matters
    # filled in while running
    instance_id: str | None = None
    snapshot_id: str | None = None
    handle: Any = None
    status: str = ""
    error: dict | None = None
    retried: int = 0
    retried_at_step: int = 0
    hits: int = 0
    took: float = 0.0  # seconds until its phase settled for it
    left: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def wanted(self) -> str:
        return self.outcome or WANTED[self.phase]

    @property
    def needs_snapshot(self) -> bool:
        return self.phase in ("snapshot", "delete_snapshot")


@dataclass
class Stand:
    """One cloud stand-in, its fault controls and its own view of what is left."""

    name: str
    region: str
    machine_type: str
    make_provider: Callable[[], Any]
    cases: list[Case]
    disarm: Callable[[Any], None]
    hits: Callable[[Any], int]
    owned_instance: Callable[[str], list[str]]  # resources of one instance that cost money (snapshots aside)
    owned_snapshot: Callable[[str], list[str]]
    alive: Callable[[], list[str]]  # every managed resource that costs money
    calls: Callable[[], list[str]]  # every call the stand-in saw so far, as the matrix names calls
    zone: str | None = None
    before_delete_snapshot: Callable[[Case], None] = lambda case: None

    def body(self, name: str) -> dict:
        body = {"name": name, "provider": self.name, "region": self.region, "machine_type": self.machine_type,
                "image": "ubuntu-24.04", "ssh_user": "alice", "ssh_public_key": SSH_KEY, "disk_gb": 20}
        if self.zone:
            body["zone"] = self.zone
        return body


# ---------------------------------------------------------------------- the matrix report
class _MatrixReport:
    """The lines of every stand's matrix, printed at the end of the run (``tests/reports.py``)."""

    def __init__(self) -> None:
        self.lines = CLOUD_FAULTS


@pytest.fixture(scope="module")
def matrix():
    return _MatrixReport()


def render(stand: Stand, cases: list[Case], phase_calls: dict[str, list[str]], seconds: float,
           instances: int) -> list[str]:
    head = (f"{'provider':8} {'phase':15} {'call':30} {'fault':27} {'outcome':23} {'retries':>7} {'hits':>4} "
            f"{'secs':>5} left  ok")
    lines = [head, "-" * len(head)]
    for c in cases:
        outcome = c.status + (f" ({c.error['code']})" if c.status == "failed" and c.error else "")
        lines.append(f"{stand.name:8} {c.phase:15} {c.call[:30]:30} {c.fault[:27]:27} {outcome[:23]:23} "
                     f"{c.retried:>7} {c.hits:>4} {c.took:>5.1f} {len(c.left):>4}  "
                     f"{'ok' if not c.problems else 'FAIL'}")
    for phase in (p for p in PHASES if p in phase_calls):
        seen = sorted(set(phase_calls[phase]))
        missed = [x for x in seen if x not in {c.call for c in cases if c.phase == phase}]
        lines.append(f"{stand.name} {phase}: calls seen {len(seen)}, not faulted: {', '.join(missed) or '-'}")
    lines.append(f"{stand.name}: {len(cases)} cases on {instances} instances in {seconds:.1f}s; "
                 f"left in the stand-in: {stand.alive() or 'nothing'}")
    return lines


# ---------------------------------------------------------------------- onebox, with a worker we can pause
class Onebox:
    def __init__(self, stand: Stand, settings) -> None:
        self.stand, self.settings = stand, settings
        self._worker: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None

    async def __aenter__(self) -> "Onebox":
        from app.main import create_app
        from app.services import Services

        self.svc = Services.build(self.settings, providers={self.stand.name: self.stand.make_provider()})
        await self.svc.db.ensure_indexes()
        transport = httpx.ASGITransport(app=create_app(self.settings, self.svc))
        self.api = httpx.AsyncClient(transport=transport, base_url="http://onebox.test")
        self.headers = {"Authorization": f"Bearer {self.svc.tokens.mint('alice')}"}
        return self

    async def __aexit__(self, *exc) -> None:
        await self.pause()
        await self.api.aclose()
        await self.svc.close()

    def start(self) -> None:
        from app.worker.runner import Worker

        self._stop = asyncio.Event()
        self._worker = asyncio.create_task(Worker(self.svc).run(self._stop))

    async def pause(self) -> None:
        if self._worker is not None:
            self._stop.set()
            await self._worker
            self._worker = None

    async def send(self, method: str, path: str, **kw) -> dict | None:
        response = await self.api.request(method, path, headers=self.headers, **kw)
        assert response.status_code in (202, 204), response.text
        return response.json() if response.content else None

    async def retries(self, lane: "Lane", phase: str, type_: str = "step.retrying") -> int:
        steps = sorted(PHASE_STEPS[phase]) + ["cleanup"]
        return await self.svc.db.events.count_documents(
            {"instance_id": lane.instance_id, "type": type_, "step": {"$in": steps}})

    async def settle(self, phase: str, lanes: list["Lane"], collection: str, done: set[str],
                     through: str | None = None) -> list[dict]:
        """Wait until every lane's record is in ``done`` (read from the database in one query, not through
        the API, to keep the load down) — and, with ``through``, came there out of that status — ; clear a
        persistent fault once it has retried enough."""
        started = time.monotonic()
        pending = {lane.key(collection): lane for lane in lanes}
        docs: dict[str, dict] = {}
        while pending and time.monotonic() < started + WAIT:
            async for doc in self.svc.db.db[collection].find({"_id": {"$in": list(pending)}}):
                docs[doc["_id"]] = doc
                last = (doc.get("transitions") or [{}])[-1]
                if doc["status"] in done and (through is None or last.get("from") == through):
                    lane = pending.pop(doc["_id"])
                    if phase in lane.cases:
                        lane.cases[phase].took = time.monotonic() - started
            for lane in pending.values():
                case = lane.cases.get(phase)
                if case and case.clear_after and case.handle is not None \
                        and await self.retries(lane, phase, case.clear_on) >= case.clear_after:
                    case.hits = self.stand.hits(case.handle)
                    self.stand.disarm(case.handle)
                    case.handle = None
            await asyncio.sleep(0.3)
        return [docs.get(lane.key(collection), {"status": "missing"}) for lane in lanes]


@dataclass
class Lane:
    """One instance (and its snapshot) carrying at most one case per phase: the phases never overlap."""

    cases: dict[str, Case] = field(default_factory=dict)
    instance_id: str | None = None
    snapshot_id: str | None = None
    reached: dict[str, str] = field(default_factory=dict)  # phase -> status at its end
    status: str = ""  # the instance's status at the end of its last phase
    problems: list[str] = field(default_factory=list)  # of phases without a fault of this lane

    def key(self, collection: str) -> str:
        return self.instance_id if collection == "instances" else self.snapshot_id

    @property
    def wants_snapshot(self) -> bool:
        return "snapshot" in self.cases or "delete_snapshot" in self.cases


def lanes_for(cases: list[Case]) -> list[Lane]:
    """As few instances as the cases allow: a case that fails its instance or snapshot ends its lane there."""
    # A stop or start refused for good leaves its instance where the VM is (running after a stop, stopped
    # after a start): a lane of its own, so that no later power case of that lane finds it in the wrong status.
    settling = [c for c in cases if c.phase in POWER_PHASES and c.wanted != WANTED[c.phase]]
    by = {p: [c for c in cases if c.phase == p and c.wanted != "failed" and c not in settling] for p in PHASES}
    failing_create = [c for c in cases if c.phase == "create" and c.wanted == "failed"]
    failing_snapshot = [c for c in cases if c.phase == "snapshot" and c.wanted == "failed"]
    k = len(failing_snapshot)
    n = max(len(by["create"]), k + len(by["snapshot"]), k + len(by["delete_snapshot"]), len(by["delete"]),
            *(len(by[p]) for p in POWER_PHASES))
    lanes = [Lane() for _ in range(n)]
    for i, case in enumerate(failing_snapshot):
        lanes[i].cases["snapshot"] = case
    for phase, offset in (("create", 0), ("snapshot", k), ("delete_snapshot", k), ("stop", 0), ("start", 0),
                          ("reboot", 0), ("delete", 0)):
        for i, case in enumerate(by[phase]):
            lanes[offset + i].cases[phase] = case
    return lanes + [Lane({"create": case}) for case in failing_create] + [Lane({c.phase: c}) for c in settling]


async def run_phase(box: Onebox, phase: str, lanes: list[Lane], request: Callable, collection: str,
                    done: set[str], phase_calls: dict[str, list[str]], through: str | None = None) -> None:
    """Queue the phase's work for ``lanes`` with the worker paused, arm their faults, run, settle, disarm."""
    stand = box.stand
    before, started = len(stand.calls()), time.monotonic()
    for lane in lanes:
        await request(lane)
    for lane in lanes:
        case = lane.cases.get(phase)
        if case is not None:
            case.instance_id, case.snapshot_id = lane.instance_id, lane.snapshot_id
            case.handle = case.arm(lane.snapshot_id if case.scope == "snapshot" else lane.instance_id)
    box.start()
    try:
        docs = await box.settle(phase, lanes, collection, done, through)
        await asyncio.sleep(0.5)  # a job writes its last bits (quota release, events) after its final status
    finally:
        await box.pause()
    phase_calls[phase] = stand.calls()[before:]
    print(f"{stand.name} {phase}: {len(lanes)} instances in {time.monotonic() - started:.1f}s", flush=True)
    for lane, doc in zip(lanes, docs):
        lane.reached[phase] = doc["status"]
        if collection == "instances":
            lane.status = doc["status"]
        case = lane.cases.get(phase)
        if case is None:
            if doc["status"] != WANTED[phase]:
                lane.problems.append(f"{phase} without a fault: {doc['status']} ({doc.get('error')})")
            continue
        if case.handle is not None:
            case.hits = stand.hits(case.handle)
            stand.disarm(case.handle)
            case.handle = None
        case.status, case.error = doc["status"], doc.get("error")
        case.retried = await box.retries(lane, phase)
        if case.step:
            case.retried_at_step = await box.svc.db.events.count_documents(
                {"instance_id": lane.instance_id, "type": "step.retrying", "step": case.step})
        check(stand, case, doc)


def check(stand: Stand, case: Case, doc: dict) -> None:
    """What must be true right after the phase the case's fault was aimed at."""
    problems = case.problems
    if case.status != case.wanted:
        problems.append(f"ended {case.status} (wanted {case.wanted}): {doc.get('error')}")
    if case.fault != "none" and case.hits < 1:
        problems.append("the fault never fired")
    if case.wanted == "failed":
        error = case.error or {}
        if case.step and error.get("step") != case.step:
            problems.append(f"failed at {error.get('step')}, not at {case.step}")
        if error.get("code") != case.code or error.get("step") not in PHASE_STEPS[case.phase]:
            problems.append(f"error {case.error} (wanted code {case.code} at a {case.phase} step)")
        elif not case.error.get("message"):
            problems.append("the error has no message")
        case.left = (stand.owned_snapshot(case.snapshot_id) if case.needs_snapshot
                     else stand.owned_instance(case.instance_id))
        if case.left:
            problems.append(f"left behind after the failure: {case.left}")
    elif case.code is not None:
        # A stop or start refused for good removes nothing: the instance settles where the cloud has the VM,
        # with the reason in its error.
        error = case.error or {}
        if error.get("code") != case.code or error.get("step") not in PHASE_STEPS[case.phase]:
            problems.append(f"error {case.error} (wanted code {case.code} at a {case.phase} step)")
        if not stand.owned_instance(case.instance_id):
            problems.append("the instance was removed from the cloud")
    elif case.fault != "none" and case.retried < 1:
        problems.append("succeeded without a step.retrying event: the fault was absorbed below the engine")
    if case.wanted != "failed" and case.step and case.retried_at_step < 1:
        problems.append(f"no step.retrying event at step {case.step}")


async def run_matrix(stand: Stand, settings, matrix: _MatrixReport) -> None:
    started = time.monotonic()
    control = Case("(no fault)", "none", "delete_snapshot", lambda key: None)
    cases = [control, *stand.cases]
    lanes = [Lane({"delete_snapshot": control}), *lanes_for(stand.cases)]
    phase_calls: dict[str, list[str]] = {}
    async with Onebox(stand, settings) as box:
        async def create(lane: Lane) -> None:
            lane.instance_id = (await box.send("POST", "/v1/instances", json=stand.body("fault-box")))["id"]

        await run_phase(box, "create", lanes, create, "instances", {"running", "failed"}, phase_calls)
        parts = len(stand.owned_instance(lanes[0].instance_id))
        assert lanes[0].reached["create"] == "running" and parts, f"the control did not run: {lanes[0].problems}"
        for lane in lanes:
            if lane.reached["create"] == "running" and len(stand.owned_instance(lane.instance_id)) != parts:
                lane.problems.append(f"{stand.owned_instance(lane.instance_id)}: not one set of {parts} parts")

        snapshotting = [lane for lane in lanes if lane.wants_snapshot and lane.reached["create"] == "running"]

        async def snapshot(lane: Lane) -> None:
            lane.snapshot_id = (await box.send("POST", f"/v1/instances/{lane.instance_id}/snapshots",
                                               json={"name": "fault-snap"}))["id"]

        await run_phase(box, "snapshot", snapshotting, snapshot, "snapshots", {"available", "failed"}, phase_calls)

        deleting_snapshots = [lane for lane in snapshotting if lane.reached["snapshot"] == "available"]
        for lane in deleting_snapshots:
            if "delete_snapshot" in lane.cases:
                lane.cases["delete_snapshot"].snapshot_id = lane.snapshot_id
                stand.before_delete_snapshot(lane.cases["delete_snapshot"])

        async def delete_snapshot(lane: Lane) -> None:
            await box.send("DELETE", f"/v1/snapshots/{lane.snapshot_id}")

        await run_phase(box, "delete_snapshot", deleting_snapshots, delete_snapshot, "snapshots", {"deleted"},
                        phase_calls)

        for phase, (before, through) in POWER_PHASES.items():
            if not any(phase in lane.cases for lane in lanes):
                continue  # no case of this stand in this phase
            wanting = ("stop", "start") if phase == "stop" else (phase,)  # a start case's instance stops first
            acting = [lane for lane in lanes if lane.status == before and any(p in lane.cases for p in wanting)]

            async def power(lane: Lane, phase: str = phase) -> None:
                await box.send("POST", f"/v1/instances/{lane.instance_id}/{phase}")

            await run_phase(box, phase, acting, power, "instances", {"running", "stopped", "failed"}, phase_calls,
                            through=through)

        async def delete(lane: Lane) -> None:
            await box.send("DELETE", f"/v1/instances/{lane.instance_id}")

        await run_phase(box, "delete", lanes, delete, "instances", {"deleted"}, phase_calls)
        for lane in lanes:
            left = stand.owned_instance(lane.instance_id) + (
                stand.owned_snapshot(lane.snapshot_id) if lane.snapshot_id else [])
            if left:
                lane.problems.append(f"left in the cloud after every delete: {left}")

    lines = render(stand, cases, phase_calls, time.monotonic() - started, len(lanes))
    print("\n" + "\n".join(lines))
    matrix.lines += [*lines, ""]
    failed = [f"{c.phase} {c.call} {c.fault}: {'; '.join(c.problems)}" for c in cases if c.problems]
    failed += [f"instance {lane.instance_id}: {'; '.join(lane.problems)}" for lane in lanes if lane.problems]
    for case in cases:
        if case.phase != "create" and case.wanted != "failed" and not case.status:
            failed.append(f"{case.phase} {case.call} {case.fault}: never ran (its instance or snapshot failed)")
    print("\n".join(failed))
    assert not failed, "\n".join(failed)
    assert stand.alive() == [], "nothing of ours is left in the cloud"


def fault_settings(dbserver, tmp_path, provider: str):
    return make_settings(dbserver, tmp_path / "data", providers=[provider], max_attempts=5, worker_concurrency=16,
                         quota_max_snapshots=1000, db_timeout_seconds=15.0, poll_seconds=0.1,
                         provider_threads=24, reaper_enabled=False)


def cases_for(calls: list[tuple[str, str, str]], faults: dict[str, Callable[[str, str], Callable[[str], Any]]],
              scope: Callable[[str], str] = lambda phase: "instance") -> list[Case]:
    """Every (phase, call, target) × every transient fault, as cases."""
    out = []
    for phase, call, target in calls:
        for fault, make in faults.items():
            out.append(Case(call, fault, phase, make(call, target), scope=scope(phase)))
    return out
