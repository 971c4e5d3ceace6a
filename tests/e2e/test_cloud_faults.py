"""Cloud faults at every provider call: throttling, 5xx, timeouts, capacity and quota errors.

For each cloud stand-in (AWS on moto behind ``tests.fakes.ec2_faults``, the GCE
fake, the ARM fake) one onebox runs many instances at once, each with one fault
aimed at one provider call of one flow: create (``create``/``wait_running``),
snapshot, delete of the snapshot, delete of the instance. Faults are scoped to
their instance (or snapshot) by id, so they hit only the case they belong to,
and are armed while the worker is stopped, between phases:

    create all instances → snapshot some → delete the snapshots → delete every instance

Transient faults (a few times, more than the SDK's own retries absorb, fewer
than the engine's ``max_attempts`` allow) must end in success with
``step.retrying`` events; capacity/quota errors and persistent faults must end
in ``failed`` naming the step and the code, with nothing of the instance left in
the stand-in; a persistent fault on a delete is cleared after a few retries and
the delete must still finish. What is left is always asked of the stand-in
itself (moto's describe calls, the fakes' state), never of onebox.

The outcome of every case is printed as a matrix (``-s``) and added to pytest's
terminal summary.
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
from tests.fakes.fixtures import GCE_PROJECT, arm, gce_server  # noqa: F401  (fixtures)
from tests.providers.aws_fixtures import aws_env, moto_ec2  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow  # about two minutes; `make test` runs it

PHASES = ("create", "snapshot", "delete_snapshot", "delete")
PHASE_STEPS = {"create": {"create", "wait_running", "configure"}, "snapshot": {"snapshot"},
               "delete_snapshot": {"delete_snapshot"}, "delete": {"delete"}}
WANTED = {"create": "running", "snapshot": "available", "delete_snapshot": "deleted", "delete": "deleted"}
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
    code: str | None = None  # error code wanted when the outcome is failed
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
    """Rows collected by the tests, written into pytest's terminal summary."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.lines:
            terminalreporter.section("cloud faults: provider × call × fault → outcome")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def matrix(request):
    report = _MatrixReport()
    request.config.pluginmanager.register(report, "cloud-faults-matrix")
    yield report
    # unregistered by pytest at the end of the session; the summary runs before that


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
    for phase in PHASES:
        seen = sorted(set(phase_calls.get(phase, [])))
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

    async def settle(self, phase: str, lanes: list["Lane"], collection: str, done: set[str]) -> list[dict]:
        """Wait until every lane's record is in ``done`` (read from the database in one query, not through
        the API, to keep the load down); clear a persistent fault once it has retried enough."""
        started = time.monotonic()
        pending = {lane.key(collection): lane for lane in lanes}
        docs: dict[str, dict] = {}
        while pending and time.monotonic() < started + WAIT:
            async for doc in self.svc.db.db[collection].find({"_id": {"$in": list(pending)}}):
                docs[doc["_id"]] = doc
                if doc["status"] in done:
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
    problems: list[str] = field(default_factory=list)  # of phases without a fault of this lane

    def key(self, collection: str) -> str:
        return self.instance_id if collection == "instances" else self.snapshot_id

    @property
    def wants_snapshot(self) -> bool:
        return "snapshot" in self.cases or "delete_snapshot" in self.cases


def lanes_for(cases: list[Case]) -> list[Lane]:
    """As few instances as the cases allow: a case that fails its instance or snapshot ends its lane there."""
    by = {p: [c for c in cases if c.phase == p and c.wanted != "failed"] for p in PHASES}
    failing_create = [c for c in cases if c.phase == "create" and c.wanted == "failed"]
    failing_snapshot = [c for c in cases if c.phase == "snapshot" and c.wanted == "failed"]
    k = len(failing_snapshot)
    n = max(len(by["create"]), k + len(by["snapshot"]), k + len(by["delete_snapshot"]), len(by["delete"]))
    lanes = [Lane() for _ in range(n)]
    for i, case in enumerate(failing_snapshot):
        lanes[i].cases["snapshot"] = case
    for phase, offset in (("create", 0), ("snapshot", k), ("delete_snapshot", k), ("delete", 0)):
        for i, case in enumerate(by[phase]):
            lanes[offset + i].cases[phase] = case
    return lanes + [Lane({"create": case}) for case in failing_create]


async def run_phase(box: Onebox, phase: str, lanes: list[Lane], request: Callable, collection: str,
                    done: set[str], phase_calls: dict[str, list[str]]) -> None:
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
        docs = await box.settle(phase, lanes, collection, done)
        await asyncio.sleep(0.5)  # a job writes its last bits (quota release, events) after its final status
    finally:
        await box.pause()
    phase_calls[phase] = stand.calls()[before:]
    print(f"{stand.name} {phase}: {len(lanes)} instances in {time.monotonic() - started:.1f}s", flush=True)
    for lane, doc in zip(lanes, docs):
        lane.reached[phase] = doc["status"]
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


def fault_settings(ferretdb, tmp_path, provider: str):
    return make_settings(ferretdb, tmp_path / "data", providers=[provider], max_attempts=5, worker_concurrency=16,
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


# ---------------------------------------------------------------------- AWS on moto, through the fault proxy
AWS_HOLD = 3.5  # > read_timeout
AWS_SDK_ATTEMPTS = 2


@pytest.fixture
def aws_stand(aws_env):  # noqa: F811
    import boto3

    from providers.aws import AwsConfig, AwsProvider
    from tests.fakes.ec2_faults import Ec2FaultProxy

    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=aws_env.url)
    ec2.describe_vpcs()  # moto builds the region's state on its first call: not a timeout to inject
    proxy = Ec2FaultProxy(aws_env.url).start()

    def tagged(key: str, value: str) -> list[str]:
        flt = [{"Name": f"tag:{key}", "Values": [value]}]
        found = [i["InstanceId"] for r in ec2.describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]
                 if i["State"]["Name"] not in ("terminated", "shutting-down")]
        found += [v["VolumeId"] for v in ec2.describe_volumes(Filters=flt)["Volumes"]]
        found += [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=flt)["Images"]]
        found += [s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]]
        return found

    def owned_instance(instance_id: str) -> list[str]:
        return [r for r in tagged("onebox-instance-id", instance_id) if r.startswith(("i-", "vol-"))]

    def owned_snapshot(snapshot_id: str) -> list[str]:
        image_ids = [i["ImageId"] for i in ec2.describe_images(Owners=["self"], Filters=[
            {"Name": "name", "Values": [f"onebox-{snapshot_id}"]}])["Images"]]
        return sorted(set(tagged("onebox-snapshot-id", snapshot_id) + image_ids))

    def alive() -> list[str]:
        return tagged("managed-by", "onebox")

    def before_delete_snapshot(case: Case) -> None:
        # DeleteSnapshot names only the EBS snapshot: tell the proxy whose it is.
        images = ec2.describe_images(Owners=["self"], Filters=[
            {"Name": "tag:onebox-snapshot-id", "Values": [case.snapshot_id]}])["Images"]
        ebs = [m["Ebs"]["SnapshotId"] for i in images for m in i.get("BlockDeviceMappings", []) if "Ebs" in m]
        proxy.alias(case.snapshot_id, *ebs)

    def ec2_fault(**spec):
        def make(call: str, target: str) -> Callable[[str], Any]:
            return lambda key: proxy.add_fault(action=call, contains=key, **spec).id
        return make

    transient = {
        "throttle": ec2_fault(code="RequestLimitExceeded", count=AWS_SDK_ATTEMPTS + 1),
        "5xx": ec2_fault(code="InternalError", count=AWS_SDK_ATTEMPTS + 1),
        "timeout": ec2_fault(hold=AWS_HOLD, count=AWS_SDK_ATTEMPTS),
    }
    calls = [
        ("create", "DescribeInstances", ""),  # the look-up by tag before creating, then wait_running's reads
        ("create", "RunInstances", ""),
        ("snapshot", "DescribeImages", ""),
        ("snapshot", "CreateImage", ""),
        ("snapshot", "CreateTags", ""),
        ("delete_snapshot", "DescribeImages", ""),
        ("delete_snapshot", "DeregisterImage", ""),
        ("delete_snapshot", "DescribeSnapshots", ""),
        ("delete_snapshot", "DeleteSnapshot", ""),
        ("delete", "DescribeInstances", ""),
        ("delete", "TerminateInstances", ""),
        ("delete", "DescribeVolumes", ""),
    ]
    cases = cases_for(calls, transient, lambda phase: "snapshot" if phase == "delete_snapshot" else "instance")
    for case in cases:
        if case.phase == "snapshot" and case.call != "CreateImage":
            case.scope = "snapshot"
    fail = dict(outcome="failed", code=None)
    # create looks the instance up by tag once; what follows are wait_running's reads (by its EC2 id)
    cases += [Case("DescribeInstances", f"{name} (wait_running)", "create", make("DescribeInstances", ""),
                   step="wait_running") for name, make in {
        "throttle": ec2_fault(code="RequestLimitExceeded", count=AWS_SDK_ATTEMPTS + 1, skip=1),
        "5xx": ec2_fault(code="Unavailable", count=AWS_SDK_ATTEMPTS + 1, skip=1),
        "timeout": ec2_fault(hold=AWS_HOLD, count=AWS_SDK_ATTEMPTS, skip=1)}.items()]
    cases += [
        Case("DescribeInstances", "throttle (Throttling)", "create",
             ec2_fault(code="Throttling", count=AWS_SDK_ATTEMPTS + 1)("DescribeInstances", "")),
        Case("RunInstances", "capacity", "create", ec2_fault(code="InsufficientInstanceCapacity", count=-1)(
            "RunInstances", ""), **{**fail, "code": "capacity"}),
        Case("RunInstances", "quota (instances)", "create", ec2_fault(code="InstanceLimitExceeded", count=-1)(
            "RunInstances", ""), **{**fail, "code": "quota"}),
        Case("RunInstances", "quota (vCPUs)", "create", ec2_fault(code="VcpuLimitExceeded", count=-1)(
            "RunInstances", ""), **{**fail, "code": "quota"}),
        Case("RunInstances", "5xx persistent", "create", ec2_fault(code="Unavailable", count=-1)(
            "RunInstances", ""), **{**fail, "code": "provider_error"}),
        # wait_running's reads fail for good: failed at that step; the same fault holds up the cleanup's
        # look-ups until it is cleared, and the cleanup must still remove the instance
        Case("DescribeInstances", "5xx persistent, in cleanup", "create", ec2_fault(code="InternalError", count=-1,
             skip=1)("DescribeInstances", ""), outcome="failed", code="provider_error", step="wait_running",
             clear_on="cleanup.retrying", clear_after=2),
        Case("CreateImage", "quota (AMIs)", "snapshot", ec2_fault(code="ResourceLimitExceeded", count=-1)(
            "CreateImage", ""), **{**fail, "code": "quota"}),
        Case("TerminateInstances", "throttle persistent", "delete", ec2_fault(
            code="RequestLimitExceeded", count=-1)("TerminateInstances", ""), clear_after=3),
        Case("DeleteSnapshot", "5xx persistent", "delete_snapshot", ec2_fault(code="InternalError", count=-1)(
            "DeleteSnapshot", ""), scope="snapshot", clear_after=3),
    ]

    def provider():
        made = AwsProvider(AwsConfig(endpoint_url=proxy.url, poll_delay=0.2, consistency_grace=1.0,
                                     max_attempts=AWS_SDK_ATTEMPTS, read_timeout=2.5, connect_timeout=2.0,
                                     wait_timeout=60.0))
        # The catalog is loaded before anything is queued (and cached); moto's DescribeInstanceTypes is slow.
        made._catalog = (time.monotonic(), AwsProvider(AwsConfig(endpoint_url=aws_env.url)).catalog())
        return made

    yield Stand("aws", "us-east-1", "t3.micro", provider, cases, proxy.remove_fault, proxy.fired,
                owned_instance, owned_snapshot, alive, lambda: [c[0] for c in proxy.calls],
                before_delete_snapshot=before_delete_snapshot)
    proxy.stop()


async def test_aws_faults(aws_stand, ferretdb, tmp_path, matrix):
    await run_matrix(aws_stand, fault_settings(ferretdb, tmp_path, "aws"), matrix)


# ---------------------------------------------------------------------- GCP on the GCE fake
GCP_TIMEOUT = 1.0  # GcpConfig.request_timeout
GCP_WAIT = 2.5  # GcpConfig.wait_timeout: an operation wait's HTTP call may last that long plus request_timeout
GCP_API_ATTEMPTS = 2  # api_retries + 1


@pytest.fixture
def gcp_stand(gce_server):  # noqa: F811
    from google.auth.credentials import AnonymousCredentials

    from providers.gcp import GcpConfig, GcpProvider

    fake = gce_server.fake
    fake.reset()
    cpu_quota, fake.cpu_quota = fake.cpu_quota, 10_000  # dozens of instances at once; quota errors are injected

    def config(**overrides) -> GcpConfig:
        values = dict(project=GCE_PROJECT, zones=("us-central1-a",), api_endpoint=gce_server.url,
                      wait_timeout=GCP_WAIT, poll_interval=0.2, retry_base_delay=0.0, api_retries=GCP_API_ATTEMPTS - 1,
                      request_timeout=GCP_TIMEOUT)
        values.update(overrides)
        return GcpConfig(**values)

    def provider():
        made = GcpProvider(config(), credentials=AnonymousCredentials())
        warm = GcpProvider(config(request_timeout=30.0), credentials=AnonymousCredentials())
        warm.catalog()  # loaded before anything is queued, and cached: not a call of the flows
        made._catalog = warm._catalog
        return made

    def labelled(kind: str, key: str, value: str) -> list[str]:
        return [r["selfLink"] for r in fake.managed()[kind] if r.get("labels", {}).get(key) == value]

    def owned_instance(instance_id: str) -> list[str]:
        return labelled("instances", "onebox-instance-id", instance_id) + \
            labelled("disks", "onebox-instance-id", instance_id)

    def owned_snapshot(snapshot_id: str) -> list[str]:
        return labelled("snapshots", "onebox-snapshot-id", snapshot_id)

    def alive() -> list[str]:
        return [r["selfLink"] for rs in fake.managed().values() for r in rs]

    def http(status: int, count: int, **match):
        def make(call: str, target: str) -> Callable[[str], Any]:
            method, path = target.split(" ", 1)
            return lambda key: fake.inject_http_error(status, count, method=method, path=path, contains=key,
                                                      **match)
        return make

    def hold(count: int = GCP_API_ATTEMPTS, seconds: float = GCP_TIMEOUT + 1.0, skip: int = 0):
        def make(call: str, target: str) -> Callable[[str], Any]:
            method, path = target.split(" ", 1)
            if call.endswith("Operations.wait"):  # a wait's HTTP call may last wait_timeout + request_timeout
                count_, seconds_ = count, GCP_WAIT + GCP_TIMEOUT + 1.0
            else:
                count_, seconds_ = count, seconds
            return lambda key: fake.inject_hold(seconds_, count_, method=method, path=path, contains=key, skip=skip)
        return make

    def op_error(code: str, operation_type: str):
        return lambda key: fake.inject_operation_error(code, operation_type=operation_type, target=key)

    transient = {
        "throttle": http(429, GCP_API_ATTEMPTS + 1),
        "5xx": http(503, GCP_API_ATTEMPTS + 1),
        "timeout": hold(),
    }
    calls = [
        ("create", "instances.aggregatedList", "GET /aggregated/instances$"),
        ("create", "instances.insert", "POST /zones/[^/]+/instances$"),
        ("create", "zoneOperations.wait", "POST /zones/[^/]+/operations/[^/]+/wait$"),
        ("create", "instances.get", "GET /zones/[^/]+/instances/[^/]+$"),
        ("snapshot", "snapshots.get", "GET /global/snapshots/[^/]+$"),
        ("snapshot", "disks.createSnapshot", "POST /disks/[^/]+/createSnapshot$"),
        ("snapshot", "zoneOperations.wait", "POST /zones/[^/]+/operations/[^/]+/wait$"),
        ("delete_snapshot", "snapshots.get", "GET /global/snapshots/[^/]+$"),
        ("delete_snapshot", "snapshots.delete", "DELETE /global/snapshots/[^/]+$"),
        ("delete_snapshot", "globalOperations.wait", "POST /global/operations/[^/]+/wait$"),
        ("delete", "instances.aggregatedList", "GET /aggregated/instances$"),
        ("delete", "instances.delete", "DELETE /zones/[^/]+/instances/[^/]+$"),
        ("delete", "zoneOperations.wait", "POST /zones/[^/]+/operations/[^/]+/wait$"),
        ("delete", "instances.get", "GET /zones/[^/]+/instances/[^/]+$"),
        ("delete", "disks.aggregatedList", "GET /aggregated/disks$"),
    ]
    # The snapshot's calls name the snapshot; its disk's operation names the instance's disk.
    cases = cases_for(calls, transient, lambda phase: "snapshot" if phase == "delete_snapshot" else "instance")
    for case in cases:
        if case.phase == "snapshot" and case.call.startswith(("snapshots.", "disks.")):
            case.scope = "snapshot"
    get_vm = "GET /zones/[^/]+/instances/[^/]+$"
    cases += [Case("instances.get", f"{name} (wait_running)", "create", make("instances.get", get_vm),
                   step="wait_running") for name, make in {
        "throttle": http(429, GCP_API_ATTEMPTS + 1, skip=2), "5xx": http(503, GCP_API_ATTEMPTS + 1, skip=2),
        "timeout": hold(skip=2)}.items()]
    cases += [
        Case("zoneOperations.wait", "capacity (operation)", "create",
             op_error("ZONE_RESOURCE_POOL_EXHAUSTED", "insert"), outcome="failed", code="capacity"),
        Case("zoneOperations.wait", "quota (operation)", "create", op_error("QUOTA_EXCEEDED", "insert"),
             outcome="failed", code="quota"),
        Case("instances.insert", "5xx persistent", "create", http(503, -1)(
            "", "POST /zones/[^/]+/instances$"), outcome="failed", code="provider_error"),
        Case("instances.get", "5xx persistent, in cleanup", "create", http(503, -1, skip=2)("", get_vm),
             outcome="failed", code="provider_error", step="wait_running", clear_on="cleanup.retrying",
             clear_after=2),
        Case("zoneOperations.wait", "quota (operation)", "snapshot", op_error("QUOTA_EXCEEDED", "createSnapshot"),
             outcome="failed", code="quota"),
        Case("instances.delete", "throttle persistent", "delete", http(429, -1)(
            "", "DELETE /zones/[^/]+/instances/[^/]+$"), clear_after=3),
        Case("snapshots.delete", "5xx persistent", "delete_snapshot", http(503, -1)(
            "", "DELETE /global/snapshots/[^/]+$"), scope="snapshot", clear_after=3),
    ]
    yield Stand("gcp", "us-central1", "e2-small", provider, cases, fake.remove_fault, fake.fired,
                owned_instance, owned_snapshot, alive,
                lambda: [str(c["method_id"]).removeprefix("compute.") for c in fake.state()["calls"]],
                zone="us-central1-a")
    fake.cpu_quota = cpu_quota
    fake.reset()


async def test_gcp_faults(gcp_stand, ferretdb, tmp_path, matrix):
    await run_matrix(gcp_stand, fault_settings(ferretdb, tmp_path, "gcp"), matrix)


# ---------------------------------------------------------------------- Azure on the ARM fake
AZURE_TIMEOUT = 1.5  # AzureConfig.request_timeout (connect and read)
AZURE_SDK_ATTEMPTS = 2  # retry_total + 1
VM, NIC, PIP, NSG = ("Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces",
                     "Microsoft.Network/publicIPAddresses", "Microsoft.Network/networkSecurityGroups")
DISK, SNAP = "Microsoft.Compute/disks", "Microsoft.Compute/snapshots"


@pytest.fixture
def azure_stand(arm):  # noqa: F811
    from providers.azure import AzureConfig, AzureProvider

    arm.reset()

    def config(**overrides) -> AzureConfig:
        values = dict(subscription_id=arm.subscription_id, base_url=arm.url, ca_bundle=arm.ca_path,
                      static_token="dev", polling_interval=0, retry_total=AZURE_SDK_ATTEMPTS - 1,
                      request_timeout=AZURE_TIMEOUT, wait_timeout=60.0)
        values.update(overrides)
        return AzureConfig(**values)

    def provider():
        made = AzureProvider(config())
        made._catalog = (time.monotonic(), AzureProvider(config(request_timeout=30.0)).catalog())
        return made

    def costly() -> list[dict]:
        """Ours (tagged, or named like ours: ARM does not copy tags to a VM's OS disk), the shared network aside."""
        return [r for r in arm.dump() if "/virtualnetworks/" not in r["id"].lower() and (
            (r.get("tags") or {}).get("managed-by") == "onebox" or r["name"].startswith("onebox-"))]

    def owned_instance(instance_id: str) -> list[str]:
        return [r["id"] for r in costly() if r["type"] != SNAP and (
            (r.get("tags") or {}).get("onebox-instance-id") == instance_id or f"onebox-{instance_id}" in r["name"])]

    def owned_snapshot(snapshot_id: str) -> list[str]:
        return [r["id"] for r in costly() if r["type"] == SNAP and (
            (r.get("tags") or {}).get("onebox-snapshot-id") == snapshot_id or snapshot_id in r["name"])]

    def alive() -> list[str]:
        return [r["id"] for r in costly()]

    def error(status: int, code: str, times: int, message: str | None = None, retry_after: float | None = None,
              action: str = "error", skip: int = 0):
        def make(call: str, target: str) -> Callable[[str], Any]:
            method, what = target.split(" ", 1)
            match = {"path_contains": what} if what.startswith("/") else {"resource_type": what}
            extra = {"message": message} if message else {}
            return lambda key: arm.add_fault(action=action, method=method, contains=key, status=status, code=code,
                                             times=times, retry_after=retry_after, skip=skip, **match, **extra).id
        return make

    def hold(call: str, target: str, skip: int = 0) -> Callable[[str], Any]:
        method, what = target.split(" ", 1)
        match = {"path_contains": what} if what.startswith("/") else {"resource_type": what}
        return lambda key: arm.add_fault(action="hold", method=method, contains=key, seconds=AZURE_TIMEOUT + 1.0,
                                         times=AZURE_SDK_ATTEMPTS, skip=skip, **match).id

    transient = {
        "throttle": error(429, "TooManyRequests", AZURE_SDK_ATTEMPTS + 1, retry_after=1,
                          message="The request is being throttled."),
        "5xx": error(500, "InternalServerError", AZURE_SDK_ATTEMPTS + 1),
        "timeout": hold,
    }
    calls = [
        ("create", "GET virtualMachines", f"GET {VM}"),
        ("create", "GET resources", "GET /resources"),
        ("create", "PUT networkSecurityGroups", f"PUT {NSG}"),
        ("create", "PUT publicIPAddresses", f"PUT {PIP}"),
        ("create", "PUT networkInterfaces", f"PUT {NIC}"),
        ("create", "GET networkInterfaces", f"GET {NIC}"),
        ("create", "PUT virtualMachines", f"PUT {VM}"),
        ("create", "GET operations", "GET /operations/"),  # the long-running operations' status polls
        ("create", "PATCH disks", f"PATCH {DISK}"),  # tags the OS disk

        ("snapshot", "GET snapshots", f"GET {SNAP}"),
        ("snapshot", "PUT snapshots", f"PUT {SNAP}"),
        ("snapshot", "GET operations", "GET /operations/"),
        ("delete_snapshot", "GET snapshots", f"GET {SNAP}"),
        ("delete_snapshot", "DELETE snapshots", f"DELETE {SNAP}"),
        ("delete_snapshot", "GET operations", "GET /operations/"),
        ("delete", "GET resources", "GET /resources"),
        ("delete", "GET networkSecurityGroups", f"GET {NSG}"),
        ("delete", "GET publicIPAddresses", f"GET {PIP}"),
        ("delete", "GET disks", f"GET {DISK}"),
        ("delete", "DELETE virtualMachines", f"DELETE {VM}"),
        ("delete", "DELETE networkInterfaces", f"DELETE {NIC}"),
        ("delete", "DELETE publicIPAddresses", f"DELETE {PIP}"),
        ("delete", "DELETE networkSecurityGroups", f"DELETE {NSG}"),
        ("delete", "GET operations", "GET /operations/"),
    ]
    cases = cases_for(calls, transient, lambda phase: "snapshot" if phase in ("snapshot", "delete_snapshot")
                      else "instance")
    # create reads the VM three times (is it there? the VM PUT's final read, then with its instance view)
    cases += [Case("GET virtualMachines", f"{name} (wait_running)", "create", make, step="wait_running")
              for name, make in {
        "throttle": error(429, "TooManyRequests", AZURE_SDK_ATTEMPTS + 1, retry_after=1, skip=3)("", f"GET {VM}"),
        "5xx": error(500, "InternalServerError", AZURE_SDK_ATTEMPTS + 1, skip=3)("", f"GET {VM}"),
        "timeout": hold("", f"GET {VM}", skip=3)}.items()]
    quota = "Operation could not be completed as it results in exceeding approved standardBSFamily Cores quota."
    cases += [
        Case("PUT virtualMachines", "capacity (LRO failed)", "create", error(
            0, "AllocationFailed", 1, action="lro_fail",
            message="Allocation failed. We do not have sufficient capacity for the requested VM size in this region.")(
            "", f"PUT {VM}"), outcome="failed", code="capacity"),
        Case("PUT virtualMachines", "capacity (SkuNotAvailable)", "create", error(
            409, "SkuNotAvailable", -1, message="The requested size for resource is currently not available in "
                                                "location 'eastus'.")("", f"PUT {VM}"),
             outcome="failed", code="capacity"),
        Case("PUT virtualMachines", "quota (OperationNotAllowed)", "create", error(
            409, "OperationNotAllowed", -1, message=quota)("", f"PUT {VM}"), outcome="failed", code="quota"),
        Case("GET virtualMachines", "5xx persistent, in cleanup", "create", error(
            500, "InternalServerError", -1, skip=3)("", f"GET {VM}"), outcome="failed", code="provider_error",
             step="wait_running", clear_on="cleanup.retrying", clear_after=2),
        Case("PUT networkInterfaces", "5xx persistent", "create", error(500, "InternalServerError", -1)(
            "", f"PUT {NIC}"), outcome="failed", code="provider_error"),
        Case("PUT snapshots", "quota (OperationNotAllowed)", "snapshot", error(
            409, "OperationNotAllowed", -1, message="Operation results in exceeding quota limits of snapshots.")(
            "", f"PUT {SNAP}"), scope="snapshot", outcome="failed", code="quota"),
        Case("DELETE virtualMachines", "throttle persistent", "delete", error(
            429, "TooManyRequests", -1, retry_after=1)("", f"DELETE {VM}"), clear_after=3),
        Case("DELETE snapshots", "5xx persistent", "delete_snapshot", error(500, "InternalServerError", -1)(
            "", f"DELETE {SNAP}"), scope="snapshot", clear_after=3),
    ]

    def hits(fault_id: str) -> int:
        with arm.state.lock:
            return next((f.hits for f in arm.state.faults if f.id == fault_id), 0)

    def calls() -> list[str]:
        out = []
        for method, path, _ in arm.requests:
            parts = [p for p in path.split("/") if p]
            low = [p.lower() for p in parts]
            if "operations" in low:
                out.append(f"{method} operations")
            elif "resources" in low:
                out.append(f"{method} resources")
            elif "providers" in low and len(parts) >= low.index("providers") + 3:
                i = low.index("providers")
                out.append(f"{method} {parts[i + 2]}" + ("/" + "/".join(parts[i + 4::2]) if len(parts) > i + 4 else ""))
            else:
                out.append(f"{method} {'/'.join(low[2:3]) or 'subscription'}")
        return out

    yield Stand("azure", "eastus", "Standard_B1s", provider, cases, arm.remove_fault, hits, owned_instance,
                owned_snapshot, alive, calls)
    arm.reset()


async def test_azure_faults(azure_stand, ferretdb, tmp_path, matrix):
    await run_matrix(azure_stand, fault_settings(ferretdb, tmp_path, "azure"), matrix)
