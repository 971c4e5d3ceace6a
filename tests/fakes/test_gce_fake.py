"""The GCE fake is strict and behaves like Compute Engine: raw HTTP (httpx) and the real clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest


from tests.fakes.fixtures import GCE_PROJECT as PROJECT, gce, gce_server  # noqa: E402,F401  (fixtures)
ZONE = "us-central1-a"
IMAGE = "projects/debian-cloud/global/images/family/debian-12"


@pytest.fixture
def fake_server(gce_server):
    return gce_server


@pytest.fixture
def fake(gce):
    return gce


@pytest.fixture
def http(fake_server, fake):
    with httpx.Client(base_url=f"{fake_server.url}/compute/v1/projects/{PROJECT}", timeout=5) as client:
        yield client


@pytest.fixture
def clients(fake_server, fake):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import compute_v1

    kw = dict(credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=fake_server.url))
    return {
        "instances": compute_v1.InstancesClient(**kw),
        "zone_ops": compute_v1.ZoneOperationsClient(**kw),
        "disks": compute_v1.DisksClient(**kw),
        "snapshots": compute_v1.SnapshotsClient(**kw),
        "images": compute_v1.ImagesClient(**kw),
    }


def instance_body(name: str = "vm-1", **overrides) -> dict:
    body = {
        "name": name,
        "machineType": f"zones/{ZONE}/machineTypes/e2-micro",
        "labels": {"managed-by": "onebox"},
        "disks": [{"boot": True, "autoDelete": True, "initializeParams": {"sourceImage": IMAGE, "diskSizeGb": "10"}}],
        "networkInterfaces": [{"network": "global/networks/default", "accessConfigs": [{"type": "ONE_TO_ONE_NAT"}]}],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def insert(http, body, **params):
    return http.post(f"/zones/{ZONE}/instances", json=body, params=params)


def error_of(response) -> dict:
    data = response.json()
    assert set(data) == {"error"}
    err = data["error"]
    assert err["code"] == response.status_code and err["message"]
    assert err["errors"] and {"message", "domain", "reason"} <= set(err["errors"][0])
    return err


def wait_done(http, op: dict) -> dict:
    for _ in range(50):
        if op["status"] == "DONE":
            return op
        op = http.post(f"/zones/{ZONE}/operations/{op['name']}/wait").json()
    raise AssertionError(op)


# ------------------------------------------------------------------------------ strictness: raw HTTP


def test_misspelled_field_is_refused(http, fake):
    body = instance_body()
    body["machineTyp"] = body.pop("machineType")
    r = insert(http, body)
    assert r.status_code == 400
    err = error_of(r)
    assert err["errors"][0]["reason"] == "invalid"
    assert 'Unknown name "machineTyp"' in err["message"]
    assert fake.state()["instances"] == []


def test_nested_unknown_field_is_refused(http):
    body = instance_body()
    body["disks"][0]["initializeParams"]["sourceImag"] = IMAGE
    r = insert(http, body)
    assert r.status_code == 400 and "sourceImag" in error_of(r)["message"]


def test_missing_machine_type_and_name_are_required(http):
    r = insert(http, instance_body(machineType=None))
    assert r.status_code == 400
    err = error_of(r)
    assert err["errors"][0]["reason"] == "required"
    assert err["message"] == "Required field 'resource.machineType' not specified"
    r = insert(http, instance_body(name=None))
    assert r.status_code == 400 and error_of(r)["message"] == "Required field 'resource.name' not specified"


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda b: b["networkInterfaces"][0]["accessConfigs"][0].update(type="ONE_TO_MANY"), "TYPE_ENUM"),
        (lambda b: b["disks"][0]["initializeParams"].update(diskSizeGb="ten"), "TYPE_INT64"),
        (lambda b: b["disks"][0].update(boot="yes"), "TYPE_BOOL"),
        (lambda b: b.update(labels={"team": 5}), "TYPE_STRING"),
        (lambda b: b.update(disks={"boot": True}), "repeated"),
        (lambda b: b.update(name="Bad_Name"), "resource.name"),
        (lambda b: b.update(name="a" * 64), "resource.name"),
        (lambda b: b.update(labels={"Team": "core"}), "Label key 'Team'"),
        (lambda b: b.update(labels={"team": "Core"}), "Label value 'Core'"),
        (lambda b: b.update(labels={f"k{i}": "v" for i in range(65)}), "at most 64"),
        (lambda b: b.update(metadata={"items": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]}), "Duplicate"),
        (lambda b: b.update(machineType=f"zones/{ZONE}/machineTypes/e2-huge"), "does not exist in zone"),
        (lambda b: b.update(machineType="e2-micro"), "resource.machineType"),
        (lambda b: b.update(machineType="zones/us-central1-b/machineTypes/e2-micro"), "does not match"),
        (lambda b: b["networkInterfaces"][0].update(network="global/networks/nope"), "cannot be found"),
        (lambda b: b["disks"][0]["initializeParams"].update(diskSizeGb="5"), "smaller than the image"),
        (
            lambda b: b["disks"][0]["initializeParams"].update(diskType="zones/us-central1-a/diskTypes/pd-fast"),
            "disk type",
        ),
        (lambda b: b.update(disks=[]), "resource.disks"),
        (lambda b: b.update(networkInterfaces=[]), "network interface"),
        (lambda b: b.update(tags={"items": ["Bad Tag"]}), "tags"),
    ],
)
def test_invalid_instances_are_refused_with_400(http, fake, mutate, needle):
    body = instance_body()
    mutate(body)
    r = insert(http, body)
    assert r.status_code == 400, r.text
    assert needle in error_of(r)["message"]
    assert fake.state()["instances"] == []


def test_missing_references_are_404(http, fake):
    body = instance_body()
    body["disks"][0]["initializeParams"]["sourceImage"] = "projects/debian-cloud/global/images/debian-9"
    r = insert(http, body)
    assert r.status_code == 404 and error_of(r)["errors"][0]["reason"] == "notFound"
    body["disks"][0]["initializeParams"] = {"sourceSnapshot": "global/snapshots/nope"}
    r = insert(http, body)
    assert r.status_code == 404 and "global/snapshots/nope" in error_of(r)["message"]
    r = http.post(f"/zones/{ZONE}/disks/nope/createSnapshot", json={"name": "s1"})
    assert r.status_code == 404 and "disks/nope" in error_of(r)["message"]
    assert http.get(f"/zones/{ZONE}/instances/nope").status_code == 404
    assert http.get("/global/snapshots/nope").status_code == 404
    r = http.get("/zones/mars-north1-a/instances/x")
    assert r.status_code == 400 and "Unknown zone" in error_of(r)["message"]
    assert http.get("/../other-project/zones/us-central1-a/instances").status_code == 404


def test_query_parameters_are_checked(http):
    r = http.get(f"/zones/{ZONE}/instances", params={"fitler": "name = x"})
    assert r.status_code == 400 and "fitler" in error_of(r)["message"]
    r = insert(http, instance_body(), requestId="not-a-uuid")
    assert r.status_code == 400 and "requestId" in error_of(r)["message"]
    r = http.get("/aggregated/instances", params={"filter": "labels.managed-by = = onebox"})
    assert r.status_code == 400 and "filter" in error_of(r)["message"]


def test_unimplemented_and_unknown_urls(http):
    r = http.post(f"/zones/{ZONE}/instances/vm-1/suspend")
    assert r.status_code == 501 and "compute.instances.suspend" in error_of(r)["message"]
    r = http.get("/no/such/collection")
    assert r.status_code == 404


def test_duplicates_are_409(http):
    assert insert(http, instance_body()).status_code == 200
    r = insert(http, instance_body())
    assert r.status_code == 409 and error_of(r)["errors"][0]["reason"] == "alreadyExists"


# ------------------------------------------------------------------------------ behaviour


def test_operation_and_instance_lifecycle(http, fake):
    op = insert(http, instance_body()).json()
    assert op["kind"] == "compute#operation" and op["status"] == "RUNNING" and op["operationType"] == "insert"
    assert op["targetLink"].endswith(f"/projects/{PROJECT}/zones/{ZONE}/instances/vm-1")
    assert op["zone"].endswith(f"/zones/{ZONE}") and op["selfLink"].endswith(f"/operations/{op['name']}")
    vm = http.get(f"/zones/{ZONE}/instances/vm-1").json()
    assert vm["status"] == "PROVISIONING"
    done = http.get(f"/zones/{ZONE}/operations/{op['name']}").json()
    assert done["status"] == "DONE" and "error" not in done and done["progress"] == 100
    seen = [http.get(f"/zones/{ZONE}/instances/vm-1").json() for _ in range(2)]
    assert [v["status"] for v in seen] == ["STAGING", "RUNNING"]
    nic = seen[1]["networkInterfaces"][0]
    assert nic["accessConfigs"][0]["natIP"].startswith("203.0.113.") and nic["networkIP"].startswith("10.128.")
    assert "natIP" not in seen[0]["networkInterfaces"][0]["accessConfigs"][0]
    disk = http.get(f"/zones/{ZONE}/disks/vm-1").json()
    assert disk["status"] == "READY" and disk["users"] == [seen[1]["selfLink"]]

    op = http.delete(f"/zones/{ZONE}/instances/vm-1").json()
    assert op["status"] == "RUNNING" and op["operationType"] == "delete"
    assert fake.instances[(PROJECT, ZONE, "vm-1")]["status"] == "STOPPING"
    wait_done(http, op)
    assert http.get(f"/zones/{ZONE}/instances/vm-1").status_code == 404
    assert http.get(f"/zones/{ZONE}/disks/vm-1").status_code == 404  # autoDelete


def _running(http, name: str = "vm-1") -> dict:
    wait_done(http, insert(http, instance_body(name)).json())
    http.get(f"/zones/{ZONE}/instances/{name}")  # STAGING, and RUNNING from the next read on
    return http.get(f"/zones/{ZONE}/instances/{name}").json()


def test_stop_start_reset_lifecycle(http, fake):
    vm = _running(http)
    nat, internal = vm["networkInterfaces"][0]["accessConfigs"][0]["natIP"], vm["networkInterfaces"][0]["networkIP"]
    path = f"/zones/{ZONE}/instances/vm-1"

    op = http.post(f"{path}/stop").json()
    assert op["operationType"] == "stop" and op["status"] == "RUNNING"
    assert fake.instances[(PROJECT, ZONE, "vm-1")]["status"] == "STOPPING"
    assert http.post(f"{path}/start").status_code == 400, "refused while the stop runs"
    wait_done(http, op)
    stopped = http.get(path).json()
    assert stopped["status"] == "TERMINATED" and "lastStopTimestamp" in stopped
    assert "natIP" not in stopped["networkInterfaces"][0]["accessConfigs"][0], "the ephemeral IP is released"
    assert stopped["networkInterfaces"][0]["networkIP"] == internal
    assert http.get(f"/zones/{ZONE}/disks/vm-1").json()["users"] == [vm["selfLink"]], "the disk stays attached"
    assert wait_done(http, http.post(f"{path}/stop").json()).get("error") is None  # stopped already: a no-op
    r = http.post(f"{path}/reset")
    assert r.status_code == 400 and error_of(r)["errors"][0]["reason"] == "resourceNotReady"

    op = http.post(f"{path}/start").json()
    assert op["operationType"] == "start" and http.get(path).json()["status"] == "PROVISIONING"
    wait_done(http, op)
    assert [http.get(path).json()["status"] for _ in range(2)] == ["STAGING", "RUNNING"]
    started = http.get(path).json()
    new_nat = started["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
    assert new_nat.startswith("203.0.113.") and new_nat != nat, "a new ephemeral IP on start"
    assert started["networkInterfaces"][0]["networkIP"] == internal and started["id"] == vm["id"]
    assert wait_done(http, http.post(f"{path}/start").json()).get("error") is None  # running already: a no-op
    assert http.get(path).json()["networkInterfaces"][0]["accessConfigs"][0]["natIP"] == new_nat

    op = http.post(f"{path}/reset").json()
    assert op["operationType"] == "reset" and http.get(path).json()["status"] == "RUNNING"
    wait_done(http, op)
    reset = http.get(path).json()
    assert reset["lastStartTimestamp"] >= started["lastStartTimestamp"]
    assert reset["networkInterfaces"][0]["accessConfigs"][0]["natIP"] == new_nat, "a reset keeps the IP"


def test_power_verbs_on_a_vm_being_created_or_deleted_are_refused(http, fake):
    path = f"/zones/{ZONE}/instances/vm-1"
    insert(http, instance_body())
    for verb in ("stop", "start", "reset"):
        r = http.post(f"{path}/{verb}")
        assert r.status_code == 400 and error_of(r)["errors"][0]["reason"] == "resourceNotReady", verb
    fake.reset()
    _running(http)
    stop = http.post(f"{path}/stop").json()
    delete = http.delete(path).json()  # accepted while the stop runs; the delete wins
    assert http.post(f"{path}/start").status_code == 400
    wait_done(http, stop)
    assert http.get(path).json()["status"] == "STOPPING", "the stop's end does not touch a VM being deleted"
    wait_done(http, delete)
    assert http.get(path).status_code == 404
    assert http.post(f"{path}/start").status_code == 404


def test_power_calls_take_faults(http, fake):
    _running(http, "vm-1")
    _running(http, "vm-2")
    fault = fake.inject_http_error(503, 1, method="POST", path="/stop$", contains="vm-2")
    assert http.post(f"/zones/{ZONE}/instances/vm-1/stop").status_code == 200 and fake.fired(fault) == 0
    assert http.post(f"/zones/{ZONE}/instances/vm-2/stop").status_code == 503 and fake.fired(fault) == 1
    fake.inject_operation_error("RATE_LIMIT_EXCEEDED", operation_type="stop", target="vm-2")
    done = wait_done(http, http.post(f"/zones/{ZONE}/instances/vm-2/stop").json())
    assert done["error"]["errors"][0]["code"] == "RATE_LIMIT_EXCEEDED"
    assert http.get(f"/zones/{ZONE}/instances/vm-2").json()["status"] == "RUNNING", "a failed stop changes nothing"
    fake.inject_slow_operation(3, operation_type="start")
    wait_done(http, http.post(f"/zones/{ZONE}/instances/vm-2/stop").json())
    op = http.post(f"/zones/{ZONE}/instances/vm-2/start").json()
    statuses = [http.get(f"/zones/{ZONE}/operations/{op['name']}").json()["status"] for _ in range(4)]
    assert statuses == ["RUNNING", "RUNNING", "RUNNING", "DONE"]


def test_request_id_replays_the_first_operation(http, fake):
    rid = str(uuid.uuid4())
    first = insert(http, instance_body(), requestId=rid).json()
    second = insert(http, instance_body(), requestId=rid).json()
    assert second["name"] == first["name"]
    assert len(fake.state()["instances"]) == 1
    wait_done(http, first)
    again = insert(http, instance_body(), requestId=rid).json()
    assert again["name"] == first["name"] and again["status"] == "DONE"


def test_snapshot_lifecycle(http):
    wait_done(http, insert(http, instance_body()).json())
    op = http.post(
        f"/zones/{ZONE}/disks/vm-1/createSnapshot", json={"name": "snap-1", "labels": {"managed-by": "onebox"}}
    ).json()
    assert op["operationType"] == "createSnapshot"
    assert http.get("/global/snapshots/snap-1").json()["status"] == "CREATING"
    wait_done(http, op)
    assert [http.get("/global/snapshots/snap-1").json()["status"] for _ in range(2)] == ["UPLOADING", "READY"]
    r = http.post(f"/zones/{ZONE}/disks/vm-1/createSnapshot", json={"name": "snap-1"})
    assert r.status_code == 409
    body = instance_body("vm-2")
    body["disks"][0]["initializeParams"] = {"sourceSnapshot": "global/snapshots/snap-1"}
    assert insert(http, body).status_code == 200
    listed = http.get("/global/snapshots", params={"filter": "labels.managed-by = onebox"}).json()
    assert [s["name"] for s in listed["items"]] == ["snap-1"]
    op = http.delete("/global/snapshots/snap-1").json()
    assert op["status"] == "RUNNING" and "zone" not in op
    done = http.post(f"/global/operations/{op['name']}/wait").json()
    assert done["status"] == "DONE"
    assert http.get("/global/snapshots/snap-1").status_code == 404


def test_images_families_and_catalog(http, fake_server):
    base = f"{fake_server.url}/compute/v1/projects"
    img = httpx.get(f"{base}/ubuntu-os-cloud/global/images/family/ubuntu-2204-lts").json()
    assert img["name"] == "ubuntu-2204-jammy-v20241004" and "deprecated" not in img
    old = httpx.get(f"{base}/ubuntu-os-cloud/global/images/ubuntu-2204-jammy-v20240319").json()
    assert old["deprecated"]["state"] == "DEPRECATED"
    assert httpx.get(f"{base}/debian-cloud/global/images/family/debian-12").json()["name"].startswith("debian-12-")
    assert httpx.get(f"{base}/ubuntu-os-cloud/global/images/family/ubuntu-2404-lts-amd64").status_code == 200
    zones = http.get("/zones").json()["items"]
    assert {z["name"] for z in zones} == {"us-central1-a", "us-central1-b", "europe-west1-b"}
    types = {m["name"]: m for m in http.get(f"/zones/{ZONE}/machineTypes").json()["items"]}
    assert types["e2-medium"]["guestCpus"] == 2 and types["e2-medium"]["memoryMb"] == 4096
    assert http.get("/global/networks/default").status_code == 200
    assert http.get("/regions/us-central1").json()["zones"][0].endswith("/zones/us-central1-a")


def test_aggregated_list_filters_and_pages(http, fake):
    for i, labels in enumerate([{"managed-by": "onebox"}, {"managed-by": "onebox"}, {"other": "x"}]):
        assert insert(http, instance_body(f"vm-{i}", labels=labels)).status_code == 200
    fake.page_size = 1
    try:
        names, token, pages = [], None, 0
        while True:
            params = {"filter": "labels.managed-by = onebox"}
            if token:
                params["pageToken"] = token
            page = http.get("/aggregated/instances", params=params).json()
            pages += 1
            for scoped in page["items"].values():
                names += [i["name"] for i in scoped.get("instances", [])]
                if "instances" not in scoped:
                    assert scoped["warning"]["code"] == "NO_RESULTS_ON_PAGE"
            token = page.get("nextPageToken")
            if not token:
                break
        assert sorted(names) == ["vm-0", "vm-1"] and pages == 2
    finally:
        fake.page_size = 500
    both = http.get("/aggregated/instances", params={"filter": '(labels.managed-by = onebox) (name = "vm-1")'}).json()
    assert [i["name"] for s in both["items"].values() for i in s.get("instances", [])] == ["vm-1"]
    regex = http.get(f"/zones/{ZONE}/instances", params={"filter": "name eq vm-[02]"}).json()
    assert sorted(i["name"] for i in regex["items"]) == ["vm-0", "vm-2"]


def test_cpu_quota_ends_the_insert_in_quota_exceeded(http, fake):
    fake.cpu_quota = 2
    try:
        wait_done(http, insert(http, instance_body("vm-a")).json())
        op = wait_done(http, insert(http, instance_body("vm-b")).json())
        assert op["error"]["errors"][0]["code"] == "QUOTA_EXCEEDED" and op["httpErrorStatusCode"] == 403
        assert http.get(f"/zones/{ZONE}/instances/vm-b").status_code == 404
    finally:
        fake.cpu_quota = 64


# ------------------------------------------------------------------------------ faults (control API over HTTP)


def test_http_faults(http, fake_server):
    ctl = f"{fake_server.url}/_fake"
    r = httpx.post(
        f"{ctl}/faults", json={"type": "http", "status": 503, "count": 2, "method": "GET", "path": "/zones$"}
    )
    assert r.status_code == 200
    assert httpx.get(f"{ctl}/faults").json()["faults"][0]["count"] == 2
    first = http.get("/zones")
    assert first.status_code == 503 and error_of(first)["errors"][0]["reason"] == "backendError"
    assert http.get(f"/zones/{ZONE}").status_code == 200  # does not match the path
    assert http.get("/zones").status_code == 503
    assert http.get("/zones").status_code == 200
    httpx.post(f"{ctl}/faults", json={"type": "http", "status": 429, "retry_after": 3})
    r = http.get("/zones")
    assert r.status_code == 429 and r.headers["Retry-After"] == "3"
    assert error_of(r)["errors"][0]["reason"] == "rateLimitExceeded"


@pytest.mark.parametrize("code, status", [("ZONE_RESOURCE_POOL_EXHAUSTED", 503), ("QUOTA_EXCEEDED", 403)])
def test_operation_error_faults(http, fake_server, code, status):
    httpx.post(
        f"{fake_server.url}/_fake/faults", json={"type": "operation_error", "code": code, "operation_type": "insert"}
    )
    op = insert(http, instance_body()).json()
    assert op["status"] == "RUNNING"
    done = wait_done(http, op)
    assert done["error"]["errors"][0]["code"] == code and done["httpErrorStatusCode"] == status
    assert done["httpErrorMessage"] in ("SERVICE UNAVAILABLE", "FORBIDDEN")
    assert http.get(f"/zones/{ZONE}/instances/vm-1").status_code == 404
    assert wait_done(http, insert(http, instance_body()).json()).get("error") is None  # only the next one


def test_slow_operation_fault(http, fake_server):
    httpx.post(
        f"{fake_server.url}/_fake/faults", json={"type": "slow_operation", "polls": 3, "operation_type": "insert"}
    )
    op = insert(http, instance_body()).json()
    statuses = [http.get(f"/zones/{ZONE}/operations/{op['name']}").json()["status"] for _ in range(4)]
    assert statuses == ["RUNNING", "RUNNING", "RUNNING", "DONE"]


def test_contains_and_hold_faults(http, fake, fake_server):
    """``contains`` picks one resource's calls (an operation's too, by its target); ``hold`` answers late."""
    one = fake.inject_http_error(503, -1, contains="vm-2")
    op = insert(http, instance_body()).json()  # vm-1: untouched
    assert wait_done(http, op).get("error") is None and fake.fired(one) == 0
    assert insert(http, instance_body("vm-2")).status_code == 503 and fake.fired(one) == 1
    fake.remove_fault(one)
    op = insert(http, instance_body("vm-2")).json()
    wait = fake.inject_http_error(429, 1, path="/wait$", contains="instances/vm-2")
    assert http.post(f"/zones/{ZONE}/operations/{op['name']}/wait").status_code == 429 and fake.fired(wait) == 1
    held = fake.inject_hold(1.0, method="GET", contains="vm-3")
    started = time.monotonic()
    assert http.get(f"/zones/{ZONE}/instances/vm-3").status_code == 404  # an error answer is held too
    assert time.monotonic() - started >= 1.0 and fake.fired(held) == 1
    with pytest.raises(httpx.ReadTimeout):
        fake.inject_hold(2.0, method="POST")
        http.post(f"/zones/{ZONE}/instances", json=instance_body("vm-4"), timeout=0.5)
    time.sleep(2.0)
    assert http.get(f"/zones/{ZONE}/instances/vm-4").status_code == 200  # it happened all the same


def test_reset_and_state(http, fake_server):
    assert insert(http, instance_body()).status_code == 200
    state = httpx.get(f"{fake_server.url}/_fake/state").json()
    assert [i["name"] for i in state["instances"]] == ["vm-1"] and state["disks"] and state["operations"]
    assert state["calls"][-1]["method_id"] == "compute.instances.insert"
    httpx.post(f"{fake_server.url}/_fake/faults", json={"type": "http", "status": 503})
    assert httpx.post(f"{fake_server.url}/_fake/reset").status_code == 200
    state = httpx.get(f"{fake_server.url}/_fake/state").json()
    assert state["instances"] == [] and state["faults"] == [] and state["calls"] == []


# ------------------------------------------------------------------------------ the real client


def test_real_client_round_trip(clients, fake):
    from google.cloud import compute_v1 as c

    image = clients["images"].get_from_family(project="debian-cloud", family="debian-12")
    inst = c.Instance(
        name="vm-1",
        machine_type=f"zones/{ZONE}/machineTypes/e2-small",
        labels={"managed-by": "onebox"},
        disks=[
            c.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=c.AttachedDiskInitializeParams(source_image=image.self_link, disk_size_gb=10),
            )
        ],
        network_interfaces=[c.NetworkInterface(access_configs=[c.AccessConfig(type_="ONE_TO_ONE_NAT")])],
    )
    op = clients["instances"].insert_unary(project=PROJECT, zone=ZONE, instance_resource=inst)
    assert op.status == c.Operation.Status.RUNNING
    op = clients["zone_ops"].wait(project=PROJECT, zone=ZONE, operation=op.name)
    assert op.status == c.Operation.Status.DONE
    while (vm := clients["instances"].get(project=PROJECT, zone=ZONE, instance="vm-1")).status != "RUNNING":
        pass
    assert vm.network_interfaces[0].access_configs[0].nat_i_p
    pages = clients["instances"].aggregated_list(
        request=c.AggregatedListInstancesRequest(project=PROJECT, filter="labels.managed-by = onebox")
    )
    assert [i.name for _, scoped in pages for i in scoped.instances] == ["vm-1"]
    op = clients["disks"].create_snapshot_unary(
        project=PROJECT, zone=ZONE, disk="vm-1", snapshot_resource=c.Snapshot(name="s-1")
    )
    clients["zone_ops"].wait(project=PROJECT, zone=ZONE, operation=op.name)
    assert clients["snapshots"].get(project=PROJECT, snapshot="s-1").status in ("UPLOADING", "READY")


def test_real_client_gets_the_refusals(clients):
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1 as c

    bad = c.Instance(
        name="vm-1",
        disks=[c.AttachedDisk(boot=True, initialize_params=c.AttachedDiskInitializeParams(source_image=IMAGE))],
        network_interfaces=[c.NetworkInterface()],
    )
    with pytest.raises(gexc.BadRequest) as excinfo:
        clients["instances"].insert_unary(project=PROJECT, zone=ZONE, instance_resource=bad)
    assert excinfo.value.errors[0]["reason"] == "required"
    assert "resource.machineType" in excinfo.value.message
    # compute_v1 cannot even express a misspelled field ...
    with pytest.raises(ValueError):
        c.Instance(name="vm-1", machineTyp="x")
    with pytest.raises(gexc.NotFound):
        clients["instances"].get(project=PROJECT, zone=ZONE, instance="nope")
    with pytest.raises(gexc.Conflict):
        good = c.Instance(
            name="vm-2",
            machine_type=f"zones/{ZONE}/machineTypes/e2-micro",
            disks=bad.disks,
            network_interfaces=bad.network_interfaces,
        )
        clients["instances"].insert_unary(project=PROJECT, zone=ZONE, instance_resource=good)
        clients["instances"].insert_unary(project=PROJECT, zone=ZONE, instance_resource=good)


def test_discovery_client_with_a_misspelled_field_is_refused(fake_server, fake):
    """... but the discovery-based client sends whatever dict it is given; the fake refuses it like the API."""
    from google.auth.credentials import AnonymousCredentials
    from googleapiclient import discovery
    from googleapiclient.errors import HttpError

    compute = discovery.build(
        "compute",
        "v1",
        credentials=AnonymousCredentials(),
        static_discovery=True,
        client_options={"api_endpoint": f"{fake_server.url}/compute/v1/"},
    )
    body = instance_body()
    body["machineTyp"] = body.pop("machineType")
    with pytest.raises(HttpError) as excinfo:
        compute.instances().insert(project=PROJECT, zone=ZONE, body=body).execute()
    assert excinfo.value.resp.status == 400 and "machineTyp" in str(excinfo.value)
    good = compute.instances().insert(project=PROJECT, zone=ZONE, body=instance_body()).execute()
    assert good["status"] == "RUNNING"


# ------------------------------------------------------------------------------ by hand


def test_starts_by_hand():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.gce", "--port", str(port), "--op-seconds", "0.2", "--step-seconds", "0.2"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/compute/v1/projects/{PROJECT}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{base}/zones", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "fake did not start"
            time.sleep(0.1)
        op = httpx.post(f"{base}/zones/{ZONE}/instances", json=instance_body()).json()
        time.sleep(0.25)  # no polling: the operation finishes with time
        assert httpx.get(f"{base}/zones/{ZONE}/operations/{op['name']}").json()["status"] == "DONE"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
