"""Cloud faults at every provider call: throttling, 5xx, timeouts, capacity and quota errors.

For each cloud stand-in (AWS on moto behind ``tests.fakes.ec2_faults``, the GCE
fake, the ARM fake) one onebox runs many instances at once, each with one fault
aimed at one provider call of one flow: create (``create``/``wait_running``),
snapshot, delete of the snapshot, stop, start, reboot, delete of the instance. Faults are scoped to
their instance (or snapshot) by id, so they hit only the case they belong to,
and are armed while the worker is stopped, between phases:

    create all instances → snapshot some → delete the snapshots → stop, start, reboot some → delete every instance

Transient faults (a few times, more than the SDK's own retries absorb, fewer
than the engine's ``max_attempts`` allow) must end in success with
``step.retrying`` events; capacity/quota errors and persistent faults must end
in ``failed`` naming the step and the code, with nothing of the instance left in
the stand-in — except on a stop or start, which removes nothing and settles where
the cloud has the VM (``running`` after a stop refused for good, ``stopped``
after a start without capacity) with the code in ``error``; a persistent fault
on a delete is cleared after a few retries and
the delete must still finish. What is left is always asked of the stand-in
itself (moto's describe calls, the fakes' state), never of onebox.

The outcome of every case is printed as a matrix (``-s``) and added to pytest's
terminal summary. The machinery (phases, lanes, checks, the report) is in
``tests.e2e.fault_matrix``; this module says, per stand-in, which calls get
which faults and what must come of them.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from tests.e2e.fault_matrix import Case, Stand, cases_for, fault_settings, matrix, run_matrix  # noqa: F401
from tests.fakes.fixtures import GCE_PROJECT, arm, gce_server  # noqa: F401  (fixtures)
from tests.providers.aws_fixtures import aws_env, moto_ec2  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow  # about two minutes; `make test` runs it


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
        ("stop", "DescribeInstances", ""),  # where EC2 has it, before and after the stop
        ("stop", "StopInstances", ""),
        ("start", "DescribeInstances", ""),
        ("start", "StartInstances", ""),
        ("reboot", "DescribeInstances", ""),
        ("reboot", "RebootInstances", ""),
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
        # refused for good: nothing is removed; the instance stays where EC2 has the VM, the reason in its error
        Case("StopInstances", "5xx persistent", "stop", ec2_fault(code="Unavailable", count=-1)("StopInstances", ""),
             outcome="running", code="provider_error"),
        Case("StartInstances", "capacity", "start", ec2_fault(code="InsufficientInstanceCapacity", count=-1)(
            "StartInstances", ""), outcome="stopped", code="capacity"),
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


async def test_aws_faults(aws_stand, dbserver, tmp_path, matrix):
    await run_matrix(aws_stand, fault_settings(dbserver, tmp_path, "aws"), matrix)


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
        ("snapshot", "instances.get", "GET /zones/[^/]+/instances/[^/]+$"),  # which disk to snapshot
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
        ("stop", "instances.get", "GET /zones/[^/]+/instances/[^/]+$"),
        ("stop", "instances.stop", "POST /zones/[^/]+/instances/[^/]+/stop$"),
        ("start", "instances.get", "GET /zones/[^/]+/instances/[^/]+$"),
        ("start", "instances.start", "POST /zones/[^/]+/instances/[^/]+/start$"),
        ("reboot", "instances.get", "GET /zones/[^/]+/instances/[^/]+$"),
        ("reboot", "instances.reset", "POST /zones/[^/]+/instances/[^/]+/reset$"),
    ]
    # The snapshot's calls name the snapshot; its disk's operation names the instance's disk.
    cases = cases_for(calls, transient, lambda phase: "snapshot" if phase == "delete_snapshot" else "instance")
    # A stop's or start's operation is awaited within the verb's own timeout (the engine's, minutes): a wait
    # that answers late is simply asked again, as it should be, so only its errors reach the engine.
    cases += cases_for([(phase, "zoneOperations.wait", "POST /zones/[^/]+/operations/[^/]+/wait$")
                        for phase in ("stop", "start", "reboot")],
                       {k: v for k, v in transient.items() if k != "timeout"})
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
        # refused for good: nothing is removed; the instance stays where GCE has the VM, the reason in its error
        Case("instances.stop", "5xx persistent", "stop", http(503, -1)(
            "", "POST /zones/[^/]+/instances/[^/]+/stop$"), outcome="running", code="provider_error"),
        Case("zoneOperations.wait", "capacity (operation)", "start",
             op_error("ZONE_RESOURCE_POOL_EXHAUSTED", "start"), outcome="stopped", code="capacity"),
    ]
    yield Stand("gcp", "us-central1", "e2-small", provider, cases, fake.remove_fault, fake.fired,
                owned_instance, owned_snapshot, alive,
                lambda: [str(c["method_id"]).removeprefix("compute.") for c in fake.state()["calls"]],
                zone="us-central1-a")
    fake.cpu_quota = cpu_quota
    fake.reset()


async def test_gcp_faults(gcp_stand, dbserver, tmp_path, matrix):
    await run_matrix(gcp_stand, fault_settings(dbserver, tmp_path, "gcp"), matrix)


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
        ("snapshot", "GET virtualMachines", f"GET {VM}"),  # which disk to snapshot
        ("snapshot", "PUT snapshots", f"PUT {SNAP}"),
        ("snapshot", "GET operations", "GET /operations/"),
        ("delete_snapshot", "GET snapshots", f"GET {SNAP}"),
        ("delete_snapshot", "DELETE snapshots", f"DELETE {SNAP}"),
        ("delete_snapshot", "GET operations", "GET /operations/"),
        ("delete", "GET resources", "GET /resources"),
        ("delete", "GET virtualMachines", f"GET {VM}"),
        ("delete", "GET networkInterfaces", f"GET {NIC}"),
        ("delete", "GET networkSecurityGroups", f"GET {NSG}"),
        ("delete", "GET publicIPAddresses", f"GET {PIP}"),
        ("delete", "GET disks", f"GET {DISK}"),
        ("delete", "DELETE virtualMachines", f"DELETE {VM}"),
        ("delete", "DELETE networkInterfaces", f"DELETE {NIC}"),
        ("delete", "DELETE publicIPAddresses", f"DELETE {PIP}"),
        ("delete", "DELETE networkSecurityGroups", f"DELETE {NSG}"),
        ("delete", "GET operations", "GET /operations/"),
        # The power actions (their operationResults polls and the address reads aside: the same calls as
        # above; the suite stays within its time budget).
        ("stop", "GET virtualMachines", f"GET {VM}"),  # its power state, before and after
        ("stop", "POST virtualMachines/deallocate", "POST /deallocate"),
        ("stop", "GET operations", "GET /operations/"),
        ("start", "GET virtualMachines", f"GET {VM}"),
        ("start", "POST virtualMachines/start", "POST /start"),
        ("start", "GET operations", "GET /operations/"),
        ("start", "GET publicIPAddresses", f"GET {PIP}"),  # its new Dynamic address
        ("reboot", "POST virtualMachines/restart", "POST /restart"),
    ]
    cases = cases_for(calls, transient, lambda phase: "snapshot" if phase in ("snapshot", "delete_snapshot")
                      else "instance")
    for case in cases:
        if case.call == "GET virtualMachines":
            case.scope = "instance"
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
        # refused for good: nothing is removed; the instance stays where Azure has the VM, the reason in its error
        Case("POST virtualMachines/deallocate", "5xx persistent", "stop", error(500, "InternalServerError", -1)(
            "", "POST /deallocate"), outcome="running", code="provider_error"),
        Case("POST virtualMachines/start", "capacity (LRO failed)", "start", error(
            0, "AllocationFailed", 1, action="lro_fail",
            message="Allocation failed. We do not have sufficient capacity for the requested VM size in this region.")(
            "", "POST /start"), outcome="stopped", code="capacity"),
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


async def test_azure_faults(azure_stand, dbserver, tmp_path, matrix):
    await run_matrix(azure_stand, fault_settings(dbserver, tmp_path, "azure"), matrix)
