"""The Azure provider against the local ARM fake (real SDK clients, HTTPS, trustme CA)."""

from __future__ import annotations

import uuid

import pytest

from providers.azure import AzureConfig, AzureProvider
from providers.azure.errors import map_code, map_error
from providers.azure.mapping import resource_names, snapshot_name
from providers.base import (
    INSTANCE_ID_TAG,
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
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
from tests.fakes.arm import ArmFake, FakeCredential
from tests.providers.contract import ProviderContract

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnebOxTestKeyOnlyForTheArmFakeXXXXXXXXXXXX alice@test"
ADMIN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdminKeyOfOnebOxForConfigurationXXXXXXXXX onebox-configure"
BOB_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDBobsKeyForTheSnapshotChildXXXXXXXXXXXX bob@test"

NIC = "Microsoft.Network/networkInterfaces"
PIP = "Microsoft.Network/publicIPAddresses"
NSG = "Microsoft.Network/networkSecurityGroups"
VM = "Microsoft.Compute/virtualMachines"
DISK = "Microsoft.Compute/disks"
SNAP = "Microsoft.Compute/snapshots"


from tests.fakes.fixtures import arm, fake  # noqa: E402,F401  (fixtures)


def _provider(fake: ArmFake, **overrides) -> AzureProvider:
    cfg = dict(subscription_id=fake.subscription_id, base_url=fake.url, ca_bundle=fake.ca_path,
               locations=("eastus", "westeurope"), polling_interval=0, retry_total=0, wait_timeout=20)
    cfg.update(overrides)
    return AzureProvider(AzureConfig(**cfg), credential=FakeCredential())


@pytest.fixture
def provider(fake):
    p = _provider(fake)
    yield p
    p.close()


@pytest.fixture
def make_spec():
    def make(**overrides) -> InstanceSpec:
        values = dict(instance_id=f"i-{uuid.uuid4().hex[:12]}", owner="u-alice", name="dev box", region="eastus",
                      zone=None, machine_type="Standard_B1s", ssh_user="alice", ssh_public_key=SSH_KEY, disk_gb=30,
                      image="ubuntu-22.04", admin_ssh_public_key=ADMIN_KEY)
        values.update(overrides)
        return InstanceSpec(**values)

    return make


@pytest.fixture
def disk_identity(fake):
    """The VM's OS disk as the fake holds it: id, unique id, size, and its guest state (who may log in)."""
    def identity(ref):
        [vm] = [d for d in fake.dump() if d["id"].lower() == ref.cloud_id.lower()]
        disk_id = vm["properties"]["storageProfile"]["osDisk"]["managedDisk"]["id"].lower()
        [disk] = [d for d in fake.dump() if d["id"].lower() == disk_id]
        return disk["id"], disk["properties"]["uniqueId"], disk["properties"]["diskSizeGB"], disk.get("_guest")

    return identity


class TestAzureContract(ProviderContract):
    wait_timeout = 10.0
    public_ip_kept_on_stop = True  # onebox's public IP is a Standard, static one: it survives a deallocation


def _mine(fake: ArmFake, instance_id: str) -> list[dict]:
    """Every resource that belongs to the instance: tagged with its id or named after it (untagged ones too)."""
    base = resource_names(instance_id).vm.lower()
    return [d for d in fake.dump()
            if (d.get("tags") or {}).get(INSTANCE_ID_TAG) == instance_id or d["name"].lower().startswith(base)]


def _count(resources: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in resources:
        out[d["type"]] = out.get(d["type"], 0) + 1
    return out


# ---------------------------------------------------------------- lifecycle
def test_full_lifecycle_leaves_nothing_behind(fake, provider, make_spec):
    spec = make_spec()
    provider.create_instance(spec)
    running = provider.wait_running(spec.ref, 10)
    assert running.state == InstanceState.RUNNING
    assert running.public_ip and running.private_ip and running.private_ip.startswith("10.42.")
    assert running.cloud_id.endswith(f"/virtualMachines/{resource_names(spec.instance_id).vm}")

    vm = fake.find(type=VM)[0]
    props = vm["properties"]
    assert props["osProfile"]["linuxConfiguration"]["disablePasswordAuthentication"] is True
    assert props["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"] == [
        {"path": "/home/alice/.ssh/authorized_keys", "keyData": SSH_KEY},
        {"path": "/home/alice/.ssh/authorized_keys", "keyData": ADMIN_KEY}]
    assert props["storageProfile"]["osDisk"]["deleteOption"] == "Delete"
    assert props["networkProfile"]["networkInterfaces"][0]["properties"]["deleteOption"] == "Delete"
    assert fake.find(type=PIP)[0]["properties"]["deleteOption"] == "Delete"
    assert fake.find(type=PIP)[0]["sku"]["name"] == "Standard"
    rule = fake.find(type=NSG)[0]["properties"]["securityRules"][0]["properties"]
    assert (rule["destinationPortRange"], rule["sourceAddressPrefix"], rule["access"]) == ("22", "0.0.0.0/0", "Allow")
    # The OS disk ARM made from the image is tagged afterwards (ARM does not copy VM tags to it).
    assert fake.find(INSTANCE_ID_TAG, spec.instance_id, type=DISK)

    snap_spec = SnapshotSpec("s-life", spec.owner, "snap", InstanceRef(spec.instance_id, "eastus", None,
                                                                       running.cloud_id))
    snap = provider.create_snapshot(snap_spec)
    assert snap.state == SnapshotState.AVAILABLE
    sref = SnapshotRef("s-life", "eastus", snap.cloud_id)

    child = make_spec(image=None, snapshot=sref, disk_gb=40, ssh_user="bob", ssh_public_key=BOB_KEY)
    provider.create_instance(child)
    child_info = provider.wait_running(child.ref, 10)
    assert child_info.state == InstanceState.RUNNING and child_info.public_ip != running.public_ip
    child_vm = next(d for d in fake.find(type=VM) if d["tags"][INSTANCE_ID_TAG] == child.instance_id)
    os_disk = child_vm["properties"]["storageProfile"]["osDisk"]
    assert os_disk["createOption"] == "Attach" and "osProfile" not in child_vm["properties"]
    child_disk = fake.find(INSTANCE_ID_TAG, child.instance_id, type=DISK)[0]
    assert child_disk["properties"]["creationData"] == {
        "createOption": "Copy", "sourceResourceId": snap.cloud_id,
        "sourceUniqueId": fake.find(type=SNAP)[0]["properties"]["uniqueId"]}
    assert child_disk["properties"]["diskSizeGB"] == 40
    # Azure forbids osProfile with an attached disk: VMAccessForLinux added bob and the keys afterwards.
    assert child_disk["_guest"] == {"alice": [SSH_KEY, ADMIN_KEY], "bob": [BOB_KEY, ADMIN_KEY]}
    assert provider.create_instance(child).cloud_id == child_info.cloud_id
    ext_puts = [p for m, p, _ in fake.requests if m == "PUT" and "/extensions/" in p]
    assert len(ext_puts) == 2, "one run per key, none again on resume"

    provider.delete_instance(child.ref)
    provider.delete_instance(spec.ref)
    assert provider.get_snapshot(sref).state == SnapshotState.AVAILABLE, "a snapshot outlives its instance"
    provider.delete_snapshot(sref)

    leftovers = [d for d in fake.dump() if d["type"] in (VM, NIC, PIP, NSG, DISK, SNAP)]
    assert leftovers == []
    managed = fake.find(MANAGED_BY_TAG, MANAGED_BY_VALUE)
    assert all(d["type"] == "Microsoft.Network/virtualNetworks" and d["tags"].get("onebox-shared") == "true"
               for d in managed), managed
    assert provider.list_managed() == []


def test_zone_and_westeurope(fake, provider, make_spec):
    spec = make_spec(region="westeurope", zone="2", machine_type="Standard_D2s_v5")
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 10)
    assert (info.region, info.zone) == ("westeurope", "2")
    assert fake.find(type=VM)[0]["zones"] == ["2"]
    assert fake.find(type=PIP)[0]["zones"] == ["2"]
    assert any(d["name"] == "onebox-vnet-westeurope" for d in fake.dump())
    provider.delete_instance(spec.ref)
    assert _mine(fake, spec.instance_id) == []


def test_region_outside_configuration_is_invalid(provider, make_spec):
    with pytest.raises(InvalidRequest):
        provider.create_instance(make_spec(region="westus"))


def test_catalog_from_the_api(fake, make_spec):
    fake.settings(restricted_skus=[["westeurope", "Standard_D2s_v5"]])
    p = _provider(fake)
    catalog = p.catalog()
    assert set(catalog.regions) == {"eastus", "westeurope"}
    east = catalog.regions["eastus"]
    assert east.zones == ("1", "2", "3")
    assert east.machine_types["Standard_B2s"].vcpus == 2 and east.machine_types["Standard_B2s"].memory_gb == 4.0
    assert "Standard_D2s_v5" not in catalog.regions["westeurope"].machine_types
    assert "ubuntu-24.04" in catalog.images and catalog.native_image_pattern
    calls = len(fake.requests)
    assert p.catalog() is catalog and len(fake.requests) == calls, "cached"
    limited = _provider(fake, machine_types=("Standard_B1s",)).catalog()
    assert list(limited.regions["eastus"].machine_types) == ["Standard_B1s"]


def test_catalog_names_gpus_and_indicative_prices(fake):
    types = _provider(fake).catalog().regions["eastus"].machine_types
    t4 = types["Standard_NC4as_T4_v3"]
    assert (t4.gpu_count, t4.gpu_type) == (1, "NVIDIA T4") and t4.hourly_usd and t4.hourly_usd > 0.5
    assert (types["Standard_B1s"].gpu_count, types["Standard_B1s"].gpu_type) == (0, None)
    assert types["Standard_B1s"].hourly_usd == 0.0104


def test_native_urn_and_bad_image(fake, provider, make_spec):
    spec = make_spec(image="Debian:debian-12:12-gen2:latest")
    provider.create_instance(spec)
    assert fake.find(type=VM)[0]["properties"]["storageProfile"]["imageReference"]["offer"] == "debian-12"
    provider.delete_instance(spec.ref)
    calls = len(fake.requests)
    with pytest.raises(InvalidRequest):
        provider.create_instance(make_spec(image="not an image"))
    assert not [m for m, _, _ in fake.requests[calls:] if m == "PUT"], "refused before creating anything"
    bad = make_spec(image="Canonical:nope:nope:latest")
    with pytest.raises(InvalidRequest, match="PlatformImageNotFound"):
        provider.create_instance(bad)
    provider.delete_instance(bad.ref)
    assert _mine(fake, bad.instance_id) == []


def test_small_disk_is_raised_to_the_image_size(fake, provider, make_spec):
    spec = make_spec(disk_gb=8)
    provider.create_instance(spec)
    assert fake.find(type=VM)[0]["properties"]["storageProfile"]["osDisk"]["diskSizeGB"] == 30
    provider.delete_instance(spec.ref)


# ---------------------------------------------------------------- failures mid-create and cleanup
@pytest.mark.parametrize("fault, made, error", [
    # after the security group: the public IP PUT fails
    (dict(method="PUT", resource_type=PIP, status=503, code="ServiceUnavailable"), {NSG}, ProviderError),
    # after the public IP: the NIC PUT fails
    (dict(method="PUT", resource_type=NIC, status=500, code="InternalServerError"), {NSG, PIP}, ProviderError),
    # after the NIC: the VM PUT is refused
    (dict(method="PUT", resource_type=VM, status=409, code="OperationNotAllowed",
          message="Operation could not be completed as it results in exceeding approved standardBSFamily Cores "
                  "quota."), {NSG, PIP, NIC}, QuotaError),
    # after the VM PUT: its operation ends in AllocationFailed (VM left in provisioningState Failed)
    (dict(action="lro_fail", method="PUT", resource_type=VM, code="AllocationFailed",
          message="Allocation failed. We do not have sufficient capacity for the requested VM size in this region."),
     {NSG, PIP, NIC, VM, DISK}, CapacityError),
    # after the VM PUT: QuotaExceeded at the end of the operation
    (dict(action="lro_fail", method="PUT", resource_type=VM, code="QuotaExceeded", message="Quota exceeded."),
     {NSG, PIP, NIC, VM, DISK}, QuotaError),
])
def test_failure_at_each_step_then_delete_cleans_up(fake, provider, make_spec, fault, made, error):
    spec = make_spec()
    fake.add_fault(**fault)
    with pytest.raises(error) as info:
        provider.create_instance(spec)
    assert isinstance(info.value, ProviderError)
    assert set(_count(_mine(fake, spec.instance_id))) == made
    if VM in made:
        assert fake.find(type=VM)[0]["properties"]["provisioningState"] == "Failed"
        with pytest.raises(error):
            provider.wait_running(spec.ref, 5)
    provider.delete_instance(spec.ref)
    assert _mine(fake, spec.instance_id) == []


def test_create_twice_and_resume_after_a_killed_worker(fake, provider, make_spec):
    spec = make_spec()
    # The first worker gets as far as the NIC, then dies (the VM PUT never lands).
    fake.add_fault(method="PUT", resource_type=VM, status=500, code="InternalServerError")
    with pytest.raises(ProviderError) as err:
        provider.create_instance(spec)
    assert err.value.retryable
    first = provider.create_instance(spec)  # the retry resumes
    second = provider.create_instance(spec)  # and again: nothing new
    assert first.cloud_id == second.cloud_id
    assert _count(_mine(fake, spec.instance_id)) == {NSG: 1, PIP: 1, NIC: 1, VM: 1, DISK: 1}
    puts = [p for m, p, _ in fake.requests if m == "PUT" and "virtualMachines" in p]
    assert len(puts) == 2, "one refused VM PUT, then exactly one more"
    provider.delete_instance(spec.ref)
    assert _mine(fake, spec.instance_id) == []


def _network_parts_first(fake: ArmFake, spec: InstanceSpec) -> None:
    """Create everything but the VM (its PUT is refused once), so later waits concern the VM alone."""
    fake.add_fault(method="PUT", resource_type=VM, status=400, code="InvalidParameter", message="not now")
    with pytest.raises(InvalidRequest):
        _provider(fake).create_instance(spec)


def test_create_retried_while_the_vm_is_still_provisioning(fake, make_spec):
    spec = make_spec()
    _network_parts_first(fake, spec)
    fake.add_fault(action="slow", method="PUT", resource_type=VM, seconds=0.8)
    impatient = _provider(fake, wait_timeout=0.2)
    info = impatient.create_instance(spec)  # gives up waiting; Azure keeps going
    assert info.state == InstanceState.PENDING
    again = _provider(fake).create_instance(spec)
    assert again.cloud_id == info.cloud_id
    assert _count(_mine(fake, spec.instance_id))[VM] == 1
    assert _provider(fake).wait_running(spec.ref, 10).state == InstanceState.RUNNING
    _provider(fake).delete_instance(spec.ref)
    assert _mine(fake, spec.instance_id) == []


def test_delete_cleans_a_nic_the_vm_delete_left_behind(fake, provider, make_spec):
    spec = make_spec()
    provider.create_instance(spec)
    fault = fake.add_fault(action="keep_parts", parts=["nic"])
    provider.delete_instance(spec.ref)
    assert fault.hits == 1
    deletes = [p.rsplit("/", 1)[-1] for m, p, _ in fake.requests if m == "DELETE"]
    names = resource_names(spec.instance_id)
    assert names.nic in deletes and names.ip in deletes
    assert _mine(fake, spec.instance_id) == []


def test_delete_cleans_disk_and_ip_the_vm_delete_left_behind(fake, provider, make_spec):
    spec = make_spec()
    provider.create_instance(spec)
    fake.add_fault(action="keep_parts", parts=["disk", "public_ip"])
    provider.delete_instance(spec.ref)
    assert _mine(fake, spec.instance_id) == []


def test_delete_finds_parts_by_tag_and_by_name(fake, provider, make_spec):
    spec = make_spec()
    fake.add_fault(method="PUT", resource_type=VM, status=500, code="InternalServerError")
    with pytest.raises(ProviderError):
        provider.create_instance(spec)
    # No VM, no recorded id: only tags and names lead to the NSG, IP and NIC.
    provider.delete_instance(InstanceRef(spec.instance_id, "eastus"))
    assert _mine(fake, spec.instance_id) == []


def test_get_instance_states(fake, provider, make_spec):
    spec = make_spec()
    provider.create_instance(spec)
    fake.state.set_power_state(resource_names(spec.instance_id).vm, "deallocated")
    info = provider.get_instance(spec.ref)
    assert info.state == InstanceState.STOPPED and info.extra["power_state"] == "deallocated"
    fake.state.set_power_state(resource_names(spec.instance_id).vm, "running")
    by_id = provider.get_instance(InstanceRef(spec.instance_id, "eastus", None, info.cloud_id))
    assert by_id.state == InstanceState.RUNNING
    provider.delete_instance(spec.ref)
    with pytest.raises(NotFound):
        provider.wait_running(spec.ref, 1)


def test_snapshot_of_unknown_instance_and_unknown_snapshot(provider, make_spec):
    spec = make_spec()
    with pytest.raises(NotFound):
        provider.create_snapshot(SnapshotSpec("s-x", "u", "x", spec.ref))
    with pytest.raises(NotFound):
        provider.create_instance(make_spec(image=None, snapshot=SnapshotRef("s-missing", "eastus")))
    provider.delete_snapshot(SnapshotRef("s-missing", "eastus"))  # gone already is fine


# ---------------------------------------------------------------- errors
def test_throttling_is_retryable_with_retry_after(fake, provider, make_spec):
    fake.add_fault(method="GET", path_contains="/resources", status=429, code="TooManyRequests",
                   message="Too many requests, retry later.", retry_after=7)
    with pytest.raises(ProviderError) as err:
        provider.list_managed()
    assert err.value.retryable and err.value.retry_after == 7.0 and err.value.code == "throttled"


def test_sdk_retries_are_bounded_and_configurable(fake, make_spec):
    fault = fake.add_fault(method="GET", path_contains="/resources", status=429, code="TooManyRequests",
                           retry_after=0, times=2)
    assert _provider(fake, retry_total=2, retry_backoff_factor=0).list_managed() == []
    assert fault.hits == 2
    fault = fake.add_fault(method="GET", path_contains="/resources", status=503, code="ServiceUnavailable",
                           times=-1)
    with pytest.raises(ProviderError) as err:
        _provider(fake, retry_total=1, retry_backoff_factor=0).list_managed()
    assert err.value.retryable and fault.hits == 2


def test_capacity_quota_and_invalid_from_the_api(fake, provider, make_spec):
    fake.settings(restricted_skus=[["eastus", "Standard_B2s"]], core_quota={"eastus": 1})
    spec = make_spec(machine_type="Standard_B2s")
    with pytest.raises(CapacityError, match="SkuNotAvailable"):
        provider.create_instance(spec)
    spec2 = make_spec(machine_type="Standard_D2s_v5")
    with pytest.raises(QuotaError, match="Cores quota"):
        provider.create_instance(spec2)
    spec3 = make_spec(machine_type="Standard_Z9")
    with pytest.raises(InvalidRequest, match="VM size is not valid"):
        provider.create_instance(spec3)
    for s in (spec, spec2, spec3):
        provider.delete_instance(s.ref)
        assert _mine(fake, s.instance_id) == []


def test_not_found_and_auth_errors_from_http(fake, provider):
    with pytest.raises(NotFound):
        provider.get_snapshot(SnapshotRef("s-nope", "eastus", "/subscriptions/x/resourceGroups/onebox/providers/"
                                                              "Microsoft.Compute/snapshots/nope"))
    fake.add_fault(method="GET", status=403, code="AuthorizationFailed",
                   message="The client 'app' does not have authorization to perform action "
                           "'Microsoft.Resources/subscriptions/resourcegroups/resources/read'.")
    with pytest.raises(ProviderError) as err:
        provider.list_managed()
    assert not err.value.retryable and err.value.code == "unauthorized"
    assert "does not have authorization" in err.value.message


@pytest.mark.parametrize("code, message, status, expected, retryable", [
    ("TooManyRequests", "slow down", 429, ProviderError, True),
    (None, "bad gateway", 502, ProviderError, True),
    ("InternalServerError", "oops", 500, ProviderError, True),
    ("SkuNotAvailable", "size not available", 409, CapacityError, False),
    ("AllocationFailed", "no capacity", None, CapacityError, False),
    ("ZonalAllocationFailed", "no capacity in zone", None, CapacityError, False),
    ("OverconstrainedAllocationRequest", "constraints", None, CapacityError, False),
    ("QuotaExceeded", "quota", None, QuotaError, False),
    ("OperationNotAllowed", "exceeding approved Total Regional Cores quota", 409, QuotaError, False),
    ("OperationNotAllowed", "Disk x is attached to VM y.", 409, ProviderError, False),
    ("InvalidParameter", "bad value", 400, InvalidRequest, False),
    ("PlatformImageNotFound", "no image", 404, InvalidRequest, False),
    ("ResourceNotFound", "gone", 404, NotFound, False),
    ("NotFound", "gone", 400, NotFound, False),
    ("ResourceGroupNotFound", "no group", 404, NotFound, False),
    ("AuthorizationFailed", "no rights", 403, ProviderError, False),
    ("NicInUse", "still attached", 400, ProviderError, True),
    ("PublicIPAddressCannotBeDeleted", "still allocated", 400, ProviderError, True),
    (None, "???", 418, ProviderError, False),
])
def test_map_code_table(code, message, status, expected, retryable):
    err = map_code(code, message, status=status, action="do things", retry_after=3.0)
    assert type(err) is expected
    assert err.retryable is retryable
    assert message in err.message and err.message.startswith("Azure could not do things")
    if status == 429:
        assert err.retry_after == 3.0


def test_map_error_on_sdk_exceptions():
    from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError

    err = map_error(ServiceRequestError("connection refused"), "list")
    assert err.retryable and "could not be reached" in err.message
    err = map_error(ClientAuthenticationError("DefaultAzureCredential failed: secret=hunter2"), "list")
    assert not err.retryable and err.code == "unauthorized" and "hunter2" not in err.message
    same = ProviderError("x")
    assert map_error(same) is same


def test_map_error_on_a_failed_lro(fake, provider, make_spec):
    """The error of a failed LRO arrives in a 200 status poll; the code decides, not the status."""
    spec = make_spec()
    fake.add_fault(action="lro_fail", method="PUT", resource_type=NSG, code="InternalServerError",
                   message="Transient failure.")
    with pytest.raises(ProviderError) as err:
        provider.create_instance(spec)
    assert err.value.retryable and "Transient failure" in err.value.message
    provider.delete_instance(spec.ref)


def test_names_are_deterministic_and_valid():
    names = resource_names("i-0123abcd")
    assert names.vm == "onebox-i-0123abcd" and names.nic == "onebox-i-0123abcd-nic"
    odd = resource_names("Weird_ID/with spaces and a very long tail that goes on and on")
    assert odd == resource_names("Weird_ID/with spaces and a very long tail that goes on and on")
    assert len(odd.vm) <= 64 and odd.vm.replace("-", "").isalnum()
    assert resource_names("A") != resource_names("a")
    assert snapshot_name("s-1") == "onebox-snap-s-1"


def test_os_disk_tagged_even_when_the_worker_died_before_tagging(fake, make_spec):
    spec = make_spec()
    _network_parts_first(fake, spec)
    fake.add_fault(action="slow", method="PUT", resource_type=VM, seconds=0.6)
    assert _provider(fake, wait_timeout=0.1).create_instance(spec).state == InstanceState.PENDING
    assert not fake.find(INSTANCE_ID_TAG, spec.instance_id, type=DISK), "ARM made the OS disk untagged"
    p = _provider(fake)
    p.wait_running(spec.ref, 10)
    assert fake.find(INSTANCE_ID_TAG, spec.instance_id, type=DISK)
    assert [r for r in p.list_managed() if r.kind == "disk" and r.instance_id == spec.instance_id]
    p.delete_instance(spec.ref)
    assert _mine(fake, spec.instance_id) == []


def test_failed_vm_delete_is_retryable_and_the_retry_finishes(fake, provider, make_spec):
    spec = make_spec()
    provider.create_instance(spec)
    fake.add_fault(action="lro_fail", method="DELETE", resource_type=VM, code="InternalServerError",
                   message="The delete failed, try again.")
    with pytest.raises(ProviderError) as err:
        provider.delete_instance(spec.ref)
    assert err.value.retryable
    provider.delete_instance(spec.ref)
    assert _mine(fake, spec.instance_id) == []


def test_labels_become_tags_without_overriding_ours(fake, provider, make_spec):
    spec = make_spec(labels={"project": "x", "Managed-By": "someone", "bad/key": "v"})
    provider.create_instance(spec)
    tags = fake.find(type=VM)[0]["tags"]
    assert tags["project"] == "x" and tags[MANAGED_BY_TAG] == MANAGED_BY_VALUE
    assert "Managed-By" not in tags and "bad/key" not in tags
    provider.delete_instance(spec.ref)


def test_error_codes_and_message_from_nested_arm_errors():
    from types import SimpleNamespace as NS

    from providers.azure.errors import error_codes

    ref = NS(error=NS(code="InvalidResourceReference", message="Resource S referenced by resource N was not found.",
                      details=[NS(code="NotFound", message="Resource S not found.", details=None)]))
    codes, message = error_codes(ref)
    assert codes == ["InvalidResourceReference", "NotFound"] and message.startswith("Resource S referenced")
    assert type(map_code(codes[0], message, status=400, codes=codes)) is InvalidRequest
    wrapped = NS(error=NS(code="DeploymentFailed", message="At least one resource deployment operation failed.",
                          details=[NS(code="AllocationFailed", message="No capacity.", details=None)]))
    codes, message = error_codes(wrapped)
    assert message == "No capacity."
    assert type(map_code(codes[0], message, codes=codes)) is CapacityError


@pytest.mark.parametrize("change, match", [
    (dict(ssh_user="admin"), "user name"),
    (dict(ssh_user="guest"), "user name"),
    (dict(ssh_public_key="ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= x@y"), "SSH keys"),
])
def test_logins_azure_refuses_are_refused_before_creating_anything(fake, provider, make_spec, change, match):
    calls = len(fake.requests)
    with pytest.raises(InvalidRequest, match=match):
        provider.create_instance(make_spec(**change))
    assert not [m for m, _, _ in fake.requests[calls:] if m == "PUT"]


def test_snapshot_child_resumes_key_authorization(fake, provider, make_spec):
    spec = make_spec()
    info = provider.create_instance(spec)
    snap = provider.create_snapshot(SnapshotSpec("s-keys", spec.owner, "k", InstanceRef(
        spec.instance_id, "eastus", None, info.cloud_id)))
    sref = SnapshotRef("s-keys", "eastus", snap.cloud_id)
    child = make_spec(image=None, snapshot=sref, ssh_user="bob", ssh_public_key=BOB_KEY)
    # The worker dies after the first key: the second extension run fails.
    fake.add_fault(method="PUT", resource_type="Microsoft.Compute/virtualMachines/extensions", skip=1,
                   status=500, code="InternalServerError")
    with pytest.raises(ProviderError):
        provider.create_instance(child)
    provider.create_instance(child)
    child_disk = fake.find(INSTANCE_ID_TAG, child.instance_id, type=DISK)[0]
    assert child_disk["_guest"]["bob"] == [BOB_KEY, ADMIN_KEY]
    ext_puts = [p for m, p, st in fake.requests if m == "PUT" and "/extensions/" in p and st < 300]
    assert len(ext_puts) == 2, "the key already authorized is not authorized again"
    provider.delete_instance(child.ref)
    provider.delete_instance(spec.ref)
    provider.delete_snapshot(sref)
    assert [d for d in fake.dump() if d["type"] in (VM, NIC, PIP, NSG, DISK, SNAP)] == []


def test_static_token_for_development_against_the_fake(fake):
    p = AzureProvider(AzureConfig(subscription_id=fake.subscription_id, base_url=fake.url, ca_bundle=fake.ca_path,
                                  static_token="dev", polling_interval=0, retry_total=0))
    assert p.list_managed() == []
    assert p.catalog().regions


def test_default_credential_is_azure_identity(fake):
    p = AzureProvider(AzureConfig(subscription_id=fake.subscription_id, base_url=fake.url, ca_bundle=fake.ca_path,
                                  retry_total=0))
    p._sdk()
    assert type(p._credential).__name__ == "DefaultAzureCredential"
    p.close()


# ---------------------------------------------------------------- stop, start, reboot
def _running(provider, make_spec):
    spec = make_spec()
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 10)
    return InstanceRef(spec.instance_id, spec.region, info.zone, info.cloud_id), info


def _power_calls(fake) -> list[str]:
    return [path.rsplit("/", 1)[1].lower() for method, path, status in fake.requests
            if method == "POST" and status == 202 and "/virtualmachines/" in path.lower()]


def test_stop_deallocates_and_reboot_restarts(fake, provider, make_spec):
    ref, _ = _running(provider, make_spec)
    stopped = provider.stop_instance(ref, 10)
    assert stopped.extra["power_state"] == "deallocated", "stop ends compute billing: deallocate, not power off"
    provider.stop_instance(ref, 10)
    provider.reboot_instance(ref, 10)  # deallocated: a start
    provider.start_instance(ref, 10)  # running: nothing to do
    boots = next(d["_boots"] for d in fake.dump() if d["id"].lower() == ref.cloud_id.lower())
    provider.reboot_instance(ref, 10)
    assert next(d["_boots"] for d in fake.dump() if d["id"].lower() == ref.cloud_id.lower()) == boots + 1
    assert _power_calls(fake) == ["deallocate", "start", "restart"]


@pytest.mark.parametrize("verb,action,fault", [
    ("stop_instance", "deallocate", dict(action="error", status=429, code="TooManyRequests", retry_after=0)),
    ("stop_instance", "deallocate", dict(action="error", status=500, code="InternalServerError")),
    ("stop_instance", "deallocate", dict(action="lro_fail", code="InternalExecutionError")),
    ("start_instance", "start", dict(action="error", status=503, code="ServiceUnavailable")),
    ("start_instance", "start", dict(action="hold", seconds=2.5)),
    ("reboot_instance", "restart", dict(action="lro_fail", code="OperationPreempted")),
])
def test_a_faulted_power_call_is_retryable_and_the_next_try_ends_in_the_state(fake, make_spec, verb, action, fault):
    provider = _provider(fake, request_timeout=1.5)
    ref, _ = _running(provider, make_spec)
    if action == "start":
        provider.stop_instance(ref, 10)
    name = resource_names(ref.instance_id).vm
    added = fake.add_fault(method="POST", path_contains=f"/{name}/{action}", times=1, **fault)
    with pytest.raises(ProviderError) as caught:
        getattr(provider, verb)(ref, 10)
    assert caught.value.retryable, caught.value
    assert added.hits == 1
    info = getattr(provider, verb)(ref, 10)  # the engine's next try
    want = InstanceState.STOPPED if action == "deallocate" else InstanceState.RUNNING
    assert info.state == want and provider.get_instance(ref).state == want
    provider.close()


def test_start_of_a_vm_being_deleted_is_not_found(fake, provider, make_spec):
    ref, _ = _running(provider, make_spec)
    provider.stop_instance(ref, 10)
    fake.settings(lro_polls=50, lro_max_seconds=30)
    # someone else's delete, still running
    provider._compute.virtual_machines.begin_delete(provider.config.resource_group, resource_names(ref.instance_id).vm)
    with pytest.raises(NotFound):
        provider.start_instance(ref, 10)
