"""GcpProvider against the local Compute Engine fake (tests/fakes/gce.py), through the real compute_v1 clients."""

from __future__ import annotations

import threading
import uuid

import pytest
from google.auth.credentials import AnonymousCredentials

from providers.base import (
    CapacityError,
    InstanceRef,
    InstanceSpec,
    InstanceState,
    InvalidRequest,
    NotFound,
    ProviderError,
    QuotaError,
    SnapshotRef,
    SnapshotSpec,
    SnapshotState,
)
from providers.gcp import GcpConfig, GcpProvider
from providers.gcp.mapping import gce_name, label_value
from tests.fakes.gce import GceFake
from tests.providers.contract import ProviderContract

from tests.fakes.fixtures import GCE_PROJECT as PROJECT, gce, gce_server  # noqa: E402,F401  (fixtures)
ZONES = ("us-central1-a", "us-central1-b", "europe-west1-b")
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVh9k3YgCz0m3b0nB2H0q8q3oH9u3Xl0VvS1r7Jm1xY alice@laptop"




def config(url: str, **overrides) -> GcpConfig:
    values = dict(
        project=PROJECT,
        zones=ZONES,
        api_endpoint=url,
        wait_timeout=10.0,
        poll_interval=0.0,
        request_timeout=5.0,
        api_retries=3,
        retry_base_delay=0.0,
    )
    values.update(overrides)
    return GcpConfig(**values)


@pytest.fixture
def make_provider(gce_server, gce):
    def make(**overrides) -> GcpProvider:
        return GcpProvider(config(gce_server.url, **overrides), credentials=AnonymousCredentials())

    return make


@pytest.fixture
def provider(make_provider):
    return make_provider()


@pytest.fixture
def make_spec():
    def make(**overrides) -> InstanceSpec:
        values = dict(
            instance_id="i-" + uuid.uuid4().hex[:12],
            owner="alice@example.com",
            name="dev box",
            region="us-central1",
            zone=None,
            machine_type="e2-small",
            ssh_user="alice",
            ssh_public_key=SSH_KEY,
            disk_gb=10,
            image="ubuntu-22.04",
            labels={"team": "Core", "Cost Center": "42"},
        )
        values.update(overrides)
        return InstanceSpec(**values)

    return make


@pytest.fixture
def disk_identity(gce):
    """The boot disk as the fake holds it: its self link, numeric id, size and source (GCE's disk id is unique)."""
    def identity(ref):
        [vm] = [v for v in gce.state()["instances"] if v["selfLink"].endswith(ref.cloud_id)]
        [disk] = [d for d in gce.state()["disks"] if d["selfLink"] == vm["disks"][0]["source"]]
        return disk["selfLink"], disk["id"], disk["sizeGb"], disk.get("sourceImageId")

    return identity


class TestGcpContract(ProviderContract):
    wait_timeout = 10.0
    public_ip_kept_on_stop = False  # an ephemeral external IP is released on stop, a new one given on start


def _ours(gce: GceFake, instance_id: str | None = None) -> list[dict]:
    vms = gce.managed()["instances"]
    return [
        vm for vm in vms if instance_id is None or vm["labels"].get("onebox-instance-id") == label_value(instance_id)
    ]


def _snap(provider, spec, info, snapshot_id: str | None = None):
    sid = snapshot_id or "s-" + spec.instance_id[2:]
    ref = InstanceRef(spec.instance_id, spec.region, info.zone, info.cloud_id)
    sspec = SnapshotSpec(snapshot_id=sid, owner=spec.owner, name="nightly", instance=ref)
    return sspec, provider.create_snapshot(sspec)


# ------------------------------------------------------------------------------ shapes


def test_every_resource_carries_the_labels(provider, make_spec, gce):
    spec = make_spec()
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 10)
    sspec, snap = _snap(provider, spec, info)

    owner = label_value(spec.owner)
    expected = {"managed-by": "onebox", "onebox-instance-id": spec.instance_id, "onebox-owner": owner}
    state = gce.state()
    [vm] = state["instances"]
    [disk] = state["disks"]
    [snapshot] = state["snapshots"]
    for resource in (vm, disk):
        assert expected.items() <= resource["labels"].items(), resource["labels"]
        assert resource["labels"]["team"] == "core" and resource["labels"]["cost_center"] == "42"
    assert expected.items() <= snapshot["labels"].items()
    assert snapshot["labels"]["onebox-snapshot-id"] == sspec.snapshot_id
    assert owner.startswith("alice_example_com-")

    # the VM as asked: derived name, ssh key, NAT, tag, boot disk from the family's current image
    assert vm["name"] == f"onebox-{spec.instance_id}"
    items = {i["key"]: i["value"] for i in vm["metadata"]["items"]}
    assert items["ssh-keys"] == f"alice:{SSH_KEY}"
    assert vm["networkInterfaces"][0]["accessConfigs"][0]["type"] == "ONE_TO_ONE_NAT"
    assert vm["tags"]["items"] == ["onebox-ssh"]
    assert vm["disks"][0]["autoDelete"] is True
    assert disk["sourceImage"].endswith("projects/ubuntu-os-cloud/global/images/ubuntu-2204-jammy-v20241004")
    assert disk["sizeGb"] == "10"
    assert info.public_ip and info.public_ip.startswith("203.0.113.")
    assert info.private_ip and info.private_ip.startswith("10.128.")
    assert info.cloud_id == f"projects/{PROJECT}/zones/us-central1-a/instances/{vm['name']}"
    assert snap.cloud_id == f"projects/{PROJECT}/global/snapshots/{snapshot['name']}"

    # one SSH rule for the network, described as onebox's (Firewall has no labels in v1)
    [rule] = state["firewalls"]
    assert rule["targetTags"] == ["onebox-ssh"] and rule["sourceRanges"] == ["0.0.0.0/0"]
    assert rule["allowed"] == [{"IPProtocol": "tcp", "ports": ["22"]}]
    assert "managed-by=onebox" in rule["description"]


def test_firewall_rule_is_made_once(make_provider, make_spec, gce):
    provider = make_provider()
    provider.create_instance(make_spec())
    make_provider().create_instance(make_spec())  # a fresh provider (another worker) finds the rule
    assert len(gce.state()["firewalls"]) == 1
    assert gce.count_calls("compute.firewalls.insert") == 1


def test_full_lifecycle_leaves_nothing(provider, make_spec, gce):
    spec = make_spec(zone="us-central1-b", image="debian-12")
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 10)
    assert info.state == InstanceState.RUNNING and info.public_ip and info.zone == "us-central1-b"

    sspec, snap = _snap(provider, spec, info)
    assert snap.state == SnapshotState.AVAILABLE
    sref = SnapshotRef(sspec.snapshot_id, spec.region, snap.cloud_id)

    child = make_spec(image=None, snapshot=sref, disk_gb=20)
    provider.create_instance(child)
    child_info = provider.wait_running(child.ref, 10)
    assert child_info.public_ip and child_info.public_ip != info.public_ip
    child_disk = next(d for d in gce.state()["disks"] if d["labels"]["onebox-instance-id"] == child.instance_id)
    assert child_disk["sourceSnapshot"].endswith(sref.cloud_id) and child_disk["sizeGb"] == "20"

    provider.delete_instance(child.ref)
    provider.delete_instance(spec.ref)
    provider.delete_snapshot(sref)
    assert gce.managed() == {"instances": [], "disks": [], "snapshots": []}
    assert provider.list_managed() == []


def test_snapshot_of_a_snapshot_ref_without_cloud_id(provider, make_spec, gce):
    spec = make_spec()
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 10)
    sspec, snap = _snap(provider, spec, info)
    bare = SnapshotRef(sspec.snapshot_id, spec.region)  # found by the derived name
    assert provider.get_snapshot(bare).cloud_id == snap.cloud_id
    child = make_spec(image=None, snapshot=bare)
    provider.create_instance(child)
    assert provider.wait_running(child.ref, 10).state == InstanceState.RUNNING


def test_list_managed_follows_pages(provider, make_spec, gce):
    gce.page_size = 1
    try:
        specs = [make_spec(zone=z) for z in ("us-central1-a", "us-central1-a", "us-central1-b")]
        for spec in specs:
            provider.create_instance(spec)
        kinds = [(r.kind, r.instance_id) for r in provider.list_managed()]
        for spec in specs:
            assert ("instance", spec.instance_id) in kinds and ("disk", spec.instance_id) in kinds
        assert gce.count_calls("compute.instances.aggregatedList") >= 2
    finally:
        gce.page_size = 500


def test_catalog_reads_the_api_and_caches(provider, gce):
    catalog = provider.catalog()
    assert set(catalog.regions) == {"us-central1", "europe-west1"}
    us = catalog.regions["us-central1"]
    assert us.zones == ("us-central1-a", "us-central1-b")
    assert us.machine_types["e2-medium"].vcpus == 2 and us.machine_types["e2-medium"].memory_gb == 4
    assert us.machine_types["n2-standard-2"].memory_gb == 8
    assert catalog.native_image_pattern
    calls = gce.count_calls("compute.machineTypes.list")
    provider.catalog()
    assert gce.count_calls("compute.machineTypes.list") == calls


def test_catalog_names_gpus_and_indicative_prices(provider):
    types = provider.catalog().regions["us-central1"].machine_types
    g2 = types["g2-standard-4"]
    assert (g2.vcpus, g2.gpu_count, g2.gpu_type) == (4, 1, "NVIDIA L4") and g2.hourly_usd and g2.hourly_usd > 0.5
    assert (types["e2-micro"].gpu_count, types["e2-micro"].gpu_type, types["e2-micro"].hourly_usd) == (0, None, 0.0084)


def test_catalog_by_region_and_machine_type_filter(make_provider):
    provider = make_provider(zones=(), regions=("europe-west1",), machine_types=("e2-micro", "e2-small"))
    catalog = provider.catalog()
    assert list(catalog.regions) == ["europe-west1"]
    assert set(catalog.regions["europe-west1"].machine_types) == {"e2-micro", "e2-small"}


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"image": "windows-11"}, "neither"),
        ({"image": "projects/debian-cloud/global/images/debian-9-stretch"}, "not found"),
        ({"machine_type": "m3-megamem-128"}, "not offered"),
        ({"region": "mars-north1"}, "not offered"),
        ({"zone": "europe-west1-b"}, "not offered in region"),
        ({"disk_gb": 5}, "smaller"),
        ({"ssh_public_key": "ssh-ed25519 AAAA\nssh-rsa BBBB"}, "one OpenSSH key"),
    ],
)
def test_bad_requests_are_invalid(provider, make_spec, gce, overrides, match):
    with pytest.raises(InvalidRequest, match=match) as excinfo:
        provider.create_instance(make_spec(**overrides))
    assert not excinfo.value.retryable
    assert _ours(gce) == []


def test_native_images_and_families(provider, make_spec, gce):
    a = make_spec(image="projects/debian-cloud/global/images/debian-12-bookworm-v20241009")
    b = make_spec(image="projects/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64")
    provider.create_instance(a)
    provider.create_instance(b)
    sources = {d["labels"]["onebox-instance-id"]: d["sourceImage"] for d in gce.state()["disks"]}
    assert sources[a.instance_id].endswith("debian-cloud/global/images/debian-12-bookworm-v20241009")
    assert sources[b.instance_id].endswith("ubuntu-os-cloud/global/images/ubuntu-2404-noble-amd64-v20241004")


def test_odd_instance_ids_get_valid_names_and_exact_lookups(provider, make_spec, gce):
    spec = make_spec(instance_id="Inst_01HZX/ÄÖ" + uuid.uuid4().hex)
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 10)
    assert info.instance_id == spec.instance_id
    [vm] = gce.state()["instances"]
    assert vm["name"] == gce_name("onebox", spec.instance_id)
    assert [r.instance_id for r in provider.list_managed() if r.kind == "instance"] == [spec.instance_id]
    provider.delete_instance(spec.ref)
    assert _ours(gce) == []


# ------------------------------------------------------------------------------ idempotency


def test_second_create_after_a_killed_worker_makes_one_vm(make_provider, make_spec, gce, monkeypatch):
    spec = make_spec()
    first = make_provider()

    class Killed(BaseException):
        pass

    real_wait = first._wait_operation

    def die(op, what, *args, **kwargs):
        if what.startswith("create VM"):
            raise Killed  # dies right after instances.insert was accepted
        return real_wait(op, what, *args, **kwargs)

    monkeypatch.setattr(first, "_wait_operation", die)
    with pytest.raises(Killed):
        first.create_instance(spec)
    assert gce.count_calls("compute.instances.insert") == 1

    second = make_provider()  # the replacement worker
    info = second.create_instance(spec)
    assert second.wait_running(spec.ref, 10).cloud_id == info.cloud_id
    assert len(_ours(gce, spec.instance_id)) == 1
    assert gce.count_calls("compute.instances.insert") == 1


def test_insert_retried_before_the_vm_is_visible_reuses_the_request_id(make_provider, make_spec, gce, monkeypatch):
    """The replacement worker does not see the VM yet (eventual consistency): the requestId dedupes the insert."""
    spec = make_spec()
    first = make_provider()
    real_wait = first._wait_operation

    def die(op, what, *args, **kwargs):
        if what.startswith("create VM"):
            raise SystemExit
        return real_wait(op, what, *args, **kwargs)

    monkeypatch.setattr(first, "_wait_operation", die)
    with pytest.raises(SystemExit):
        first.create_instance(spec)

    second = make_provider()
    monkeypatch.setattr(second, "_instances_by_label", lambda instance_id: [])
    real_get = second._get_vm
    seen = {"n": 0}

    def blind_get(zone, name):
        seen["n"] += 1
        return None if seen["n"] == 1 else real_get(zone, name)

    monkeypatch.setattr(second, "_get_vm", blind_get)
    second.create_instance(spec)
    inserts = [c for c in gce.calls if c["method_id"] == "compute.instances.insert"]
    assert len(inserts) == 2 and inserts[0]["query"] == inserts[1]["query"]  # same requestId
    assert len(_ours(gce, spec.instance_id)) == 1


def test_concurrent_creates_make_one_vm(make_provider, make_spec, gce):
    spec = make_spec()
    results, errors = [], []

    def run():
        try:
            results.append(make_provider().create_instance(spec).cloud_id)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert len(_ours(gce, spec.instance_id)) == 1


# ------------------------------------------------------------------------------ faults


@pytest.mark.parametrize("status", [429, 503])
def test_transient_http_errors_are_retried(provider, make_spec, gce, status):
    spec = make_spec()
    gce.inject_http_error(status, count=2, method="POST", path=r"/instances$")
    gce.inject_http_error(status, count=2, method="POST", path=r"/operations/[^/]+/wait$")
    gce.inject_http_error(status, count=2, method="GET", path=r"/aggregated/instances$")
    provider.create_instance(spec)
    assert provider.wait_running(spec.ref, 10).state == InstanceState.RUNNING
    assert sum(1 for c in gce.calls if c["status"] == status) == 6
    assert len(_ours(gce, spec.instance_id)) == 1


def test_rate_limit_403_is_retried(provider, make_spec, gce):
    spec = make_spec()
    gce.inject_http_error(403, count=1, method="GET")  # 403 rateLimitExceeded
    provider.create_instance(spec)
    assert len(_ours(gce, spec.instance_id)) == 1


def test_persistent_errors_surface_as_retryable_then_succeed(make_provider, make_spec, gce):
    provider = make_provider(api_retries=2)
    spec = make_spec()
    gce.inject_http_error(503, count=100, method="POST", path=r"/instances$")
    with pytest.raises(ProviderError) as excinfo:
        provider.create_instance(spec)
    assert excinfo.value.retryable and type(excinfo.value) is ProviderError
    assert "currently unavailable" in str(excinfo.value)
    assert gce.count_calls("compute.instances.insert", 503) == 3
    gce.clear_faults()
    provider.create_instance(spec)  # what the engine does on a retryable error
    assert len(_ours(gce, spec.instance_id)) == 1


def test_retry_after_is_reported(make_provider, make_spec, gce):
    provider = make_provider(api_retries=0)
    gce.inject_http_error(429, count=1, retry_after=7)
    with pytest.raises(ProviderError) as excinfo:
        provider.catalog()
    assert excinfo.value.retryable and excinfo.value.retry_after == 7


@pytest.mark.parametrize(
    "code, error",
    [
        ("ZONE_RESOURCE_POOL_EXHAUSTED", CapacityError),
        ("ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", CapacityError),
        ("QUOTA_EXCEEDED", QuotaError),
    ],
)
def test_operation_errors_are_typed_and_a_later_retry_works(provider, make_spec, gce, code, error):
    spec = make_spec()
    gce.inject_operation_error(code, operation_type="insert")
    with pytest.raises(error) as excinfo:
        provider.create_instance(spec)
    assert not excinfo.value.retryable
    assert _ours(gce, spec.instance_id) == []  # a failed insert leaves no VM (nor disk)
    assert gce.managed()["disks"] == []
    # the requestId of the failed attempt is spent; a later create still makes the VM, once
    provider.create_instance(spec)
    assert provider.wait_running(spec.ref, 10).state == InstanceState.RUNNING
    assert len(_ours(gce, spec.instance_id)) == 1


def test_real_quota_exhaustion_is_a_quota_error(provider, make_spec, gce):
    gce.cpu_quota = 2
    try:
        provider.create_instance(make_spec())  # 2 vCPUs: fits
        with pytest.raises(QuotaError, match="Quota 'CPUS' exceeded"):
            provider.create_instance(make_spec())
    finally:
        gce.cpu_quota = 64


def test_slow_operations_still_succeed(provider, make_spec, gce):
    spec = make_spec()
    gce.inject_slow_operation(5, operation_type="insert", target="/instances/")
    gce.inject_slow_operation(4, operation_type="createSnapshot")
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 10)
    assert gce.count_calls("compute.zoneOperations.wait") >= 6
    _, snap = _snap(provider, spec, info)
    assert snap.state == SnapshotState.AVAILABLE
    gce.inject_slow_operation(3, operation_type="delete", target="/instances/")
    provider.delete_instance(spec.ref)
    assert _ours(gce) == []


def test_operation_outlasting_the_wait_is_retryable_and_resumable(make_provider, make_spec, gce):
    provider = make_provider(wait_timeout=0.3, poll_interval=0.02)
    spec = make_spec()
    gce.inject_slow_operation(10_000, operation_type="insert", target="/instances/")
    with pytest.raises(ProviderError) as excinfo:
        provider.create_instance(spec)
    assert excinfo.value.retryable and "still in progress" in str(excinfo.value)
    again = provider.create_instance(spec)  # resumes the VM that is still provisioning
    assert again.state == InstanceState.PENDING
    assert len(_ours(gce, spec.instance_id)) == 1
    provider.delete_instance(spec.ref)
    assert _ours(gce) == []


def test_delete_fault_then_retry(make_provider, make_spec, gce):
    provider = make_provider(api_retries=0)
    spec = make_spec()
    provider.create_instance(spec)
    gce.inject_http_error(503, count=1, method="DELETE")
    with pytest.raises(ProviderError) as excinfo:
        provider.delete_instance(spec.ref)
    assert excinfo.value.retryable
    provider.delete_instance(spec.ref)
    assert _ours(gce) == [] and gce.managed()["disks"] == []


def test_unreachable_api_is_retryable(make_provider, make_spec):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    provider = GcpProvider(
        config(f"http://127.0.0.1:{port}", api_retries=1, request_timeout=1.0), credentials=AnonymousCredentials()
    )
    with pytest.raises(ProviderError) as excinfo:
        provider.get_instance(make_spec().ref)
    assert excinfo.value.retryable and "unreachable" in str(excinfo.value)


def test_wait_running_on_a_stopped_vm_fails_for_good(provider, make_spec, gce):
    spec = make_spec()
    info = provider.create_instance(spec)
    key = next(k for k in gce.instances if k[2] == info.extra["name"])
    gce.instances[key]["status"] = "TERMINATED"
    with pytest.raises(ProviderError) as excinfo:
        provider.wait_running(spec.ref, 5)
    assert not excinfo.value.retryable and "terminated" in str(excinfo.value)


# ------------------------------------------------------------------------------ error mapping (units)


def _http_error(status: int, reason: str, message: str = "boom"):
    from google.api_core import exceptions as gexc

    return gexc.from_http_status(
        status, f"POST https://compute.googleapis.com/x: {message}", errors=[{"reason": reason, "message": message}]
    )


@pytest.mark.parametrize(
    "status, reason, message, cls, retryable",
    [
        (429, "rateLimitExceeded", "Rate Limit Exceeded", ProviderError, True),
        (403, "rateLimitExceeded", "Rate Limit Exceeded", ProviderError, True),
        (403, "quotaExceeded", "Quota 'CPUS' exceeded", QuotaError, False),
        (503, "backendError", "unavailable", ProviderError, True),
        (500, "backendError", "internal", ProviderError, True),
        (501, "notImplemented", "nope", ProviderError, False),
        (503, "insufficientCapacity", "ZONE_RESOURCE_POOL_EXHAUSTED", CapacityError, False),
        (400, "invalid", "Invalid value for field", InvalidRequest, False),
        (404, "notFound", "The resource 'x' was not found", NotFound, False),
        (403, "forbidden", "Required 'compute.instances.create' permission", ProviderError, False),
    ],
)
def test_api_errors_map_to_typed_errors(status, reason, message, cls, retryable):
    from providers.gcp.errors import map_error

    err = map_error(_http_error(status, reason, message), "create VM")
    assert type(err) is cls and err.retryable is retryable
    assert str(err) == f"create VM: {message}"  # the API's message, without method and URL


@pytest.mark.parametrize(
    "code, http_status, cls, retryable",
    [
        ("ZONE_RESOURCE_POOL_EXHAUSTED", 503, CapacityError, False),
        ("QUOTA_EXCEEDED", 403, QuotaError, False),
        ("RATE_LIMIT_EXCEEDED", 429, ProviderError, True),
        ("INTERNAL_ERROR", 500, ProviderError, True),
        ("RESOURCE_NOT_FOUND", 404, NotFound, False),
        ("INVALID_FIELD_VALUE", 400, InvalidRequest, False),
    ],
)
def test_operation_errors_map_to_typed_errors(code, http_status, cls, retryable):
    from google.cloud import compute_v1

    from providers.gcp.errors import operation_error

    op = compute_v1.Operation(
        status="DONE",
        error=compute_v1.Error(errors=[compute_v1.Errors(code=code, message="why")]),
        http_error_status_code=http_status,
    )
    err = operation_error(op, "create VM")
    assert type(err) is cls and err.retryable is retryable and str(err) == "create VM: why"
    assert operation_error(compute_v1.Operation(status="DONE"), "x") is None


def test_names_and_label_values_follow_gce_rules():
    import re

    name_re = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")
    for ident in ("i-abc", "I-ABC", "x" * 80, "ÄÖÜ", "a/b c", "-", "01HZX9"):
        name = gce_name("onebox", ident)
        assert name_re.match(name), name
        assert len(label_value(ident)) <= 63 and re.fullmatch(r"[a-z0-9_-]*", label_value(ident))
    assert gce_name("onebox", "i-abc") == "onebox-i-abc"
    assert label_value("i-abc") == "i-abc"
    assert gce_name("onebox", "I-ABC") != gce_name("onebox", "i-abc")
    assert label_value("I-ABC") != label_value("i-abc")


# ------------------------------------------------------------------ stop, start, reboot


def _running(provider, make_spec):
    spec = make_spec()
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 10)
    return InstanceRef(spec.instance_id, spec.region, info.zone, info.cloud_id), info


def test_stop_start_reboot_run_one_operation_each(provider, make_spec, gce):
    ref, _ = _running(provider, make_spec)
    provider.stop_instance(ref, 10)
    provider.stop_instance(ref, 10)
    provider.reboot_instance(ref, 10)  # stopped: a start
    provider.start_instance(ref, 10)  # running: nothing to do
    provider.reboot_instance(ref, 10)
    counts = {v: gce.count_calls(f"compute.instances.{v}") for v in ("stop", "start", "reset")}
    assert counts == {"stop": 1, "start": 1, "reset": 1}


@pytest.mark.parametrize("verb,call,fault", [
    ("stop_instance", "stop", {"http": 503}), ("stop_instance", "stop", {"http": 429}),
    ("stop_instance", "stop", {"operation": "RATE_LIMIT_EXCEEDED"}), ("stop_instance", "stop", {"hold": 1.5}),
    ("start_instance", "start", {"http": 503}), ("start_instance", "start", {"operation": "INTERNAL_ERROR"}),
    ("start_instance", "start", {"hold": 1.5}),
    ("reboot_instance", "reset", {"http": 503}), ("reboot_instance", "reset", {"hold": 1.5}),
])
def test_a_faulted_power_call_is_retryable_and_the_next_try_ends_in_the_state(make_provider, make_spec, gce,
                                                                               verb, call, fault):
    provider = make_provider(api_retries=1, request_timeout=1.0)
    ref, before = _running(provider, make_spec)
    if call == "start":
        provider.stop_instance(ref, 10)
    name = before.extra["name"]
    if "http" in fault:
        handle = gce.inject_http_error(fault["http"], 2, method="POST", path=f"/{call}$", contains=name)
    elif "hold" in fault:
        handle = gce.inject_hold(fault["hold"], 2, method="POST", path=f"/{call}$", contains=name)
    else:
        handle = gce.inject_operation_error(fault["operation"], operation_type=call, target=name)
    with pytest.raises(ProviderError) as caught:
        getattr(provider, verb)(ref, 10)
    assert caught.value.retryable, caught.value
    assert gce.fired(handle) >= 1
    gce.clear_faults()
    info = getattr(provider, verb)(ref, 10)  # the engine's next try
    want = InstanceState.STOPPED if call == "stop" else InstanceState.RUNNING
    assert info.state == want and provider.get_instance(ref).state == want
    if want == InstanceState.RUNNING:
        assert info.public_ip and info.public_ip == provider.get_instance(ref).public_ip


def test_start_waits_for_a_stop_in_progress(provider, make_spec, gce, gce_server):
    ref, _ = _running(provider, make_spec)
    gce.inject_slow_operation(4, operation_type="stop")
    import httpx

    name = provider.get_instance(ref).extra["name"]
    url = f"{gce_server.url}/compute/v1/projects/{PROJECT}/zones/{ref.zone}/instances/{name}/stop"
    assert httpx.post(url).json()["status"] == "RUNNING"  # someone else's stop, still running
    info = provider.start_instance(ref, 10)
    assert info.state == InstanceState.RUNNING
    assert gce.count_calls("compute.instances.start") == 1


def test_power_verbs_on_a_deleted_vm_are_not_found(provider, make_spec):
    ref, _ = _running(provider, make_spec)
    provider.delete_instance(ref)
    for verb in (provider.stop_instance, provider.start_instance, provider.reboot_instance):
        with pytest.raises(NotFound):
            verb(ref, 10)
