"""The ARM fake itself: real SDK clients and raw HTTPS against it, checking it behaves (and refuses) like ARM."""

from __future__ import annotations

import ssl

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.fakes.arm import IMAGES, VM_SIZES, ArmFake, FakeCredential

RG = "rg-test"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForArmFakeTestsXXXXXXXXXXXXXXXXXXXX t@x"
API_NET = "2024-05-01"
API_VM = "2024-07-01"


from tests.fakes.fixtures import arm, fake  # noqa: E402,F401  (fixtures)


@pytest.fixture
def clients(fake):
    from azure.mgmt.compute import ComputeManagementClient
    from azure.mgmt.network import NetworkManagementClient
    from azure.mgmt.resource.resources import ResourceManagementClient

    kw = dict(base_url=fake.url, connection_verify=fake.ca_path, polling_interval=0, retry_total=0,
              credential_scopes=["https://management.azure.com/.default"])
    cred = FakeCredential()
    rc = ResourceManagementClient(cred, fake.subscription_id, **kw)
    rc.resource_groups.create_or_update(RG, {"location": "eastus"})
    yield (ComputeManagementClient(cred, fake.subscription_id, **kw),
           NetworkManagementClient(cred, fake.subscription_id, **kw), rc)


@pytest.fixture
def http(fake):
    ctx = ssl.create_default_context(cafile=fake.ca_path)
    with httpx.Client(base_url=fake.url, verify=ctx, headers={"Authorization": "Bearer t"}) as client:
        yield client


def _sub(fake: ArmFake) -> str:
    return f"/subscriptions/{fake.subscription_id}"


def _code(exc_info) -> str:
    return exc_info.value.error.code


def _network(nc, name="n1", *, pip_delete=None, location="eastus"):
    """vnet + subnet, NSG, public IP and NIC; returns the NIC."""
    vnet = nc.virtual_networks.begin_create_or_update(RG, f"vnet-{location}", {
        "location": location, "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
                                             "subnets": [{"name": "s", "properties": {"addressPrefix": "10.1.0.0/24"}}]},
    }).result()
    nsg = nc.network_security_groups.begin_create_or_update(RG, f"{name}-nsg", {"location": location}).result()
    pip_props = {"publicIPAllocationMethod": "Static"}
    if pip_delete:
        pip_props["deleteOption"] = pip_delete
    pip = nc.public_ip_addresses.begin_create_or_update(RG, f"{name}-ip", {
        "location": location, "sku": {"name": "Standard"}, "properties": pip_props}).result()
    return nc.network_interfaces.begin_create_or_update(RG, f"{name}-nic", {
        "location": location, "properties": {
            "ipConfigurations": [{"name": "ipconfig1", "properties": {
                "subnet": {"id": vnet.subnets[0].id}, "publicIPAddress": {"id": pip.id}}}],
            "networkSecurityGroup": {"id": nsg.id}}}).result()


def _vm_body(nic_id, *, user="azureuser", size="Standard_B1s", nic_delete="Delete", disk_delete="Delete",
             os_profile=True, storage=True, disk_name=None):
    body = {"location": "eastus", "properties": {
        "hardwareProfile": {"vmSize": size},
        "networkProfile": {"networkInterfaces": [{"id": nic_id, "properties": {"deleteOption": nic_delete}}]}}}
    if storage:
        os_disk = {"createOption": "FromImage", "deleteOption": disk_delete, "managedDisk": {
            "storageAccountType": "StandardSSD_LRS"}}
        if disk_name:
            os_disk["name"] = disk_name
        body["properties"]["storageProfile"] = {
            "imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                               "version": "latest"}, "osDisk": os_disk}
    if os_profile:
        body["properties"]["osProfile"] = {
            "computerName": "host1", "adminUsername": user,
            "linuxConfiguration": {"disablePasswordAuthentication": True, "ssh": {"publicKeys": [
                {"path": f"/home/{user}/.ssh/authorized_keys", "keyData": KEY}]}}}
    return body


# ---------------------------------------------------------------- protocol
def test_api_version_and_auth_are_required(fake, http):
    r = http.get(f"{_sub(fake)}/resourceGroups/{RG}")
    assert r.status_code == 400 and r.json()["error"]["code"] == "MissingApiVersionParameter"
    r = http.get(f"{_sub(fake)}/resourceGroups/{RG}", params={"api-version": "yesterday"})
    assert r.json()["error"]["code"] == "InvalidApiVersionParameter"
    r = http.get(f"{_sub(fake)}/resourceGroups/{RG}", params={"api-version": "2025-04-01"},
                 headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["code"] == "AuthenticationFailed"
    r = http.get("/subscriptions/other/resourceGroups/x", params={"api-version": "2025-04-01"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "SubscriptionNotFound"


def test_bearer_auth_refuses_plain_http_so_the_fake_is_https(fake, clients):
    assert fake.url.startswith("https://")


def test_resource_groups_paths_are_case_insensitive(fake, http):
    q = {"api-version": "2025-04-01"}
    assert http.request("HEAD", f"{_sub(fake)}/resourcegroups/nope", params=q).status_code == 404
    r = http.put(f"{_sub(fake)}/resourcegroups/Grp", params=q, json={"location": "East US"})
    assert r.status_code == 201 and r.json()["location"] == "eastus"
    assert http.put(f"{_sub(fake)}/resourceGroups/grp", params=q, json={"location": "eastus"}).status_code == 200
    r = http.put(f"{_sub(fake)}/RESOURCEGROUPS/GRP", params=q, json={"location": "westeurope"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "InvalidResourceGroupLocation"
    assert http.request("HEAD", f"{_sub(fake)}/resourceGroups/GRP", params=q).status_code == 204
    r = http.get(f"{_sub(fake)}/resourceGroups/missing/providers/Microsoft.Network/networkSecurityGroups/x",
                 params=q)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceGroupNotFound"


def test_lro_put_and_delete_status_codes_and_headers(fake, http):
    q = {"api-version": API_NET}
    http.put(f"{_sub(fake)}/resourceGroups/{RG}", params=q, json={"location": "eastus"})
    url = f"{_sub(fake)}/resourceGroups/{RG}/providers/Microsoft.Network/networkSecurityGroups/web"
    r = http.put(url, params=q, json={"location": "eastus", "tags": {"a": "1"}})
    assert r.status_code == 201
    assert r.json()["properties"]["provisioningState"] == "Updating"
    op_url = r.headers["Azure-AsyncOperation"]
    assert op_url.startswith(fake.url) and "/providers/Microsoft.Network/locations/eastus/operations/" in op_url
    assert "Location" not in r.headers  # network PUTs answer with Azure-AsyncOperation only
    assert http.get(op_url).json()["status"] == "InProgress"
    assert http.get(op_url).json()["status"] == "Succeeded"
    assert http.get(url, params=q).json()["properties"]["provisioningState"] == "Succeeded"
    assert http.head(url, params=q).status_code == 204

    r = http.put(url, params=q, json={"location": "eastus", "tags": {"a": "2"}})
    assert r.status_code == 200, "PUT on an existing name updates it"
    assert [d["tags"] for d in fake.find(type="Microsoft.Network/networkSecurityGroups")] == [{"a": "2"}]

    r = http.delete(url, params=q)
    assert r.status_code == 202 and "Location" in r.headers and "Azure-AsyncOperation" in r.headers
    assert http.get(url, params=q).json()["properties"]["provisioningState"] == "Deleting"
    loc = r.headers["Location"]
    assert http.get(loc).status_code == 202
    assert http.get(loc).status_code == 204
    assert http.get(url, params=q).status_code == 404
    assert http.get(url, params=q).json()["error"]["code"] == "ResourceNotFound"
    assert http.delete(url, params=q).status_code == 204, "deleting what is gone is 204"


def test_compute_put_status_codes(fake, clients, http):
    compute, net, _ = clients
    nic = _network(net)
    q = {"api-version": API_VM}
    base = f"{_sub(fake)}/resourceGroups/{RG}/providers/Microsoft.Compute"
    r = http.put(f"{base}/virtualMachines/vm1", params=q, json=_vm_body(nic.id))
    assert r.status_code == 201 and r.json()["properties"]["provisioningState"] == "Creating"
    assert "/providers/Microsoft.Compute/locations/eastus/operations/" in r.headers["Azure-AsyncOperation"]
    iv = http.get(f"{base}/virtualMachines/vm1/instanceView", params=q).json()
    assert [s["code"] for s in iv["statuses"]] == ["ProvisioningState/creating", "PowerState/starting"]
    http.get(r.headers["Azure-AsyncOperation"])
    http.get(r.headers["Azure-AsyncOperation"])
    iv = http.get(f"{base}/virtualMachines/vm1", params={**q, "$expand": "instanceView"}).json()
    assert [s["code"] for s in iv["properties"]["instanceView"]["statuses"]] == [
        "ProvisioningState/succeeded", "PowerState/running"]
    r = http.put(f"{base}/disks/d1", params={"api-version": "2024-03-02"}, json={
        "location": "eastus", "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 4}})
    assert r.status_code == 202 and "Location" in r.headers and "Azure-AsyncOperation" in r.headers


def test_lro_failure_reports_error_and_sdk_raises(fake, clients):
    _, net, _ = clients
    fake.add_fault(action="lro_fail", method="PUT", resource_type="Microsoft.Network/publicIPAddresses",
                   code="InternalServerError", message="boom")
    with pytest.raises(HttpResponseError) as err:
        net.public_ip_addresses.begin_create_or_update(RG, "ip", {
            "location": "eastus", "sku": {"name": "Standard"},
            "properties": {"publicIPAllocationMethod": "Static"}}).result()
    assert _code(err) == "InternalServerError" and err.value.error.message == "boom"
    assert net.public_ip_addresses.get(RG, "ip").provisioning_state == "Failed"


# ---------------------------------------------------------------- strictness
def test_nic_needs_an_existing_subnet_and_public_ip(fake, clients):
    _, net, _ = clients
    ghost_subnet = (f"{_sub(fake)}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/none/"
                    "subnets/none")
    with pytest.raises(HttpResponseError) as err:
        net.network_interfaces.begin_create_or_update(RG, "nic", {"location": "eastus", "properties": {
            "ipConfigurations": [{"name": "c", "properties": {"subnet": {"id": ghost_subnet}}}]}}).result()
    assert err.value.status_code == 400 and _code(err) == "InvalidResourceReference"
    assert ghost_subnet in err.value.error.message
    nic = _network(net)
    subnet_id = nic.ip_configurations[0].subnet.id
    with pytest.raises(HttpResponseError) as err:
        net.network_interfaces.begin_create_or_update(RG, "nic2", {"location": "eastus", "properties": {
            "ipConfigurations": [{"name": "c", "properties": {
                "subnet": {"id": subnet_id},
                "publicIPAddress": {"id": subnet_id.split("/providers/")[0] +
                                    "/providers/Microsoft.Network/publicIPAddresses/nope"}}}]}}).result()
    assert _code(err) == "InvalidResourceReference"
    with pytest.raises(HttpResponseError) as err:  # a public IP belongs to one NIC at a time
        net.network_interfaces.begin_create_or_update(RG, "nic3", {"location": "eastus", "properties": {
            "ipConfigurations": [{"name": "c", "properties": {
                "subnet": {"id": subnet_id},
                "publicIPAddress": {"id": nic.ip_configurations[0].public_ip_address.id}}}]}}).result()
    assert _code(err) == "PublicIPAddressInUse"
    with pytest.raises(HttpResponseError) as err:  # subnets are regional
        net.network_interfaces.begin_create_or_update(RG, "nic4", {"location": "westeurope", "properties": {
            "ipConfigurations": [{"name": "c", "properties": {"subnet": {"id": subnet_id}}}]}}).result()
    assert _code(err) == "InvalidResourceReference"
    assert not fake.find(type="Microsoft.Network/networkInterfaces")[1:], "only the first NIC exists"


def test_in_use_resources_cannot_be_deleted(fake, clients):
    compute, net, _ = clients
    nic = _network(net)
    compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, disk_name="vm1-os")).result()
    with pytest.raises(HttpResponseError) as err:
        net.network_interfaces.begin_delete(RG, "n1-nic")
    assert err.value.status_code == 400 and _code(err) == "NicInUse"
    with pytest.raises(HttpResponseError) as err:
        net.public_ip_addresses.begin_delete(RG, "n1-ip")
    assert _code(err) == "PublicIPAddressCannotBeDeleted"
    with pytest.raises(HttpResponseError) as err:
        net.network_security_groups.begin_delete(RG, "n1-nsg")
    assert _code(err) == "InUseNetworkSecurityGroupCannotBeDeleted"
    with pytest.raises(HttpResponseError) as err:
        net.subnets.begin_delete(RG, "vnet-eastus", "s")
    assert _code(err) == "InUseSubnetCannotBeDeleted"
    with pytest.raises(HttpResponseError) as err:
        net.virtual_networks.begin_create_or_update(RG, "vnet-eastus", {"location": "eastus", "properties": {
            "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}}})  # no subnets: would remove the used one
    assert _code(err) == "InUseSubnetCannotBeDeleted"
    with pytest.raises(HttpResponseError) as err:
        compute.disks.begin_delete(RG, "vm1-os")
    assert err.value.status_code == 409 and _code(err) == "OperationNotAllowed"
    assert len(fake.dump()) == 7  # vnet, subnet, nsg, ip, nic, vm, disk: nothing went


def test_vm_references_and_profiles(fake, clients):
    compute, net, _ = clients
    nic = _network(net)
    ghost = nic.id.replace("n1-nic", "ghost-nic")
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(ghost))
    assert err.value.status_code == 400 and _code(err) == "NotFound" and ghost in err.value.error.message
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, os_profile=False))
    assert _code(err) == "InvalidParameter" and err.value.error.target == "osProfile"
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, storage=False))
    assert _code(err) == "InvalidParameter" and err.value.error.target == "storageProfile"
    body = _vm_body(nic.id)
    body["properties"]["networkProfile"] = {}
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", body)
    assert err.value.error.target == "networkProfile"
    assert fake.find(type="Microsoft.Compute/virtualMachines") == []


def test_vm_attach_os_disk_without_os_profile(fake, clients):
    compute, net, _ = clients
    nic = _network(net)
    disk = compute.disks.begin_create_or_update(RG, "boot", {
        "location": "eastus", "properties": {"creationData": {"createOption": "Empty"}, "diskSizeGB": 30}}).result()
    attach = {"location": "eastus", "properties": {
        "hardwareProfile": {"vmSize": "Standard_B1s"},
        "storageProfile": {"osDisk": {"createOption": "Attach", "osType": "Linux", "managedDisk": {"id": disk.id}}},
        "networkProfile": {"networkInterfaces": [{"id": nic.id}]}}}
    with_profile = _vm_body(nic.id)["properties"]["osProfile"]
    bad = {**attach, "properties": {**attach["properties"], "osProfile": with_profile}}
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", bad)
    assert _code(err) == "InvalidParameter" and "osProfile" in err.value.error.message
    vm = compute.virtual_machines.begin_create_or_update(RG, "vm1", attach).result()
    assert vm.storage_profile.os_disk.create_option == "Attach"
    assert compute.disks.get(RG, "boot").disk_state == "Attached"
    # Compute echoes ids with the group upper-cased; compare ids case-insensitively.
    assert vm.storage_profile.os_disk.managed_disk.id.lower() == disk.id.lower()
    assert f"/resourceGroups/{RG.upper()}/" in vm.storage_profile.os_disk.managed_disk.id
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm2", {**attach})
    assert err.value.status_code == 400  # the NIC is taken (NicReservedForAnotherVm)


@pytest.mark.parametrize("change, code, status", [
    (dict(size="Standard_Z99"), "InvalidParameter", 400),
    (dict(user="root"), "InvalidParameter", 400),
    (dict(user="admin"), "InvalidParameter", 400),
])
def test_vm_size_and_admin_name_refusals(fake, clients, change, code, status):
    compute, net, _ = clients
    nic = _network(net)
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, **change))
    assert (err.value.status_code, _code(err)) == (status, code)


def test_vm_detail_refusals(fake, clients):
    compute, net, _ = clients
    nic = _network(net)

    def refused(body, target_part):
        with pytest.raises(HttpResponseError) as err:
            compute.virtual_machines.begin_create_or_update(RG, "vm1", body)
        assert _code(err) in ("InvalidParameter", "PlatformImageNotFound"), err.value.error.code
        assert target_part in (err.value.error.target or "") + err.value.error.message
        return err

    body = _vm_body(nic.id)
    body["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["path"] = "/root/.ssh/keys"
    refused(body, "publicKeys.path")
    body = _vm_body(nic.id)
    body["properties"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"][0]["keyData"] = "not a key"
    refused(body, "keyData")
    body = _vm_body(nic.id)
    body["properties"]["osProfile"]["linuxConfiguration"] = {"disablePasswordAuthentication": False}
    refused(body, "adminPassword")
    body = _vm_body(nic.id)
    body["properties"]["osProfile"]["computerName"] = "bad_host"
    refused(body, "computerName")
    body = _vm_body(nic.id)
    body["properties"]["storageProfile"]["imageReference"]["offer"] = "nope"
    err = refused(body, "platform image")
    assert err.value.status_code == 404
    body = _vm_body(nic.id)
    body["properties"]["storageProfile"]["osDisk"]["diskSizeGB"] = 10
    refused(body, "smaller than the size")
    assert fake.find(type="Microsoft.Compute/virtualMachines") == []


def test_restricted_sku_and_core_quota(fake, clients):
    compute, net, _ = clients
    nic = _network(net)
    fake.settings(restricted_skus=[["eastus", "Standard_B2s"]], core_quota={"eastus": 1})
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, size="Standard_B2s"))
    assert (err.value.status_code, _code(err)) == (409, "SkuNotAvailable")
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, size="Standard_D2s_v5"))
    assert (err.value.status_code, _code(err)) == (409, "OperationNotAllowed")
    assert "Cores quota" in err.value.error.message
    skus = {s.name: s for s in compute.resource_skus.list(filter="location eq 'eastus'")}
    assert skus["Standard_B2s"].restrictions[0].reason_code == "NotAvailableForSubscription"


@pytest.mark.parametrize("type_, name", [
    ("virtualMachines", "has_underscore"),
    ("virtualMachines", "ends-with-dash-"),
    ("virtualMachines", "x" * 65),
    ("networkSecurityGroups", "-starts-badly"),
    ("networkSecurityGroups", "bad name"),
    ("publicIPAddresses", "y" * 81),
])
def test_bad_names_are_refused(fake, http, type_, name):
    q = {"api-version": "2024-07-01"}
    http.put(f"{_sub(fake)}/resourceGroups/{RG}", params=q, json={"location": "eastus"})
    ns = "Microsoft.Compute" if type_ == "virtualMachines" else "Microsoft.Network"
    r = http.put(f"{_sub(fake)}/resourceGroups/{RG}/providers/{ns}/{type_}/{name}", params=q,
                 json={"location": "eastus"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidResourceName"


def test_bad_tags_and_locations_are_refused(fake, clients):
    _, net, _ = clients
    with pytest.raises(HttpResponseError) as err:
        net.network_security_groups.begin_create_or_update(RG, "a", {"location": "eastus", "tags": {"a/b": "1"}})
    assert _code(err) == "InvalidTagNameCharacters"
    with pytest.raises(HttpResponseError) as err:
        net.network_security_groups.begin_create_or_update(RG, "a", {"location": "mars"})
    assert _code(err) == "LocationNotAvailableForResourceType"
    with pytest.raises(HttpResponseError) as err:
        net.public_ip_addresses.begin_create_or_update(RG, "ip", {
            "location": "eastus", "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Dynamic"}})
    assert _code(err) == "StandardSkuPublicIPAddressesMustBeStatic"


def test_immutable_vm_properties(fake, clients):
    compute, net, _ = clients
    nic = _network(net)
    compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id)).result()
    changed = _vm_body(nic.id, user="someoneelse")
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machines.begin_create_or_update(RG, "vm1", changed)
    assert (err.value.status_code, _code(err)) == (409, "PropertyChangeNotAllowed")
    resized = compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, size="Standard_B2s"))
    assert resized.result().hardware_profile.vm_size == "Standard_B2s"
    assert len(fake.find(type="Microsoft.Compute/virtualMachines")) == 1
    assert len(fake.find(type="Microsoft.Compute/disks")) == 1


# ---------------------------------------------------------------- behaviour
def test_delete_options_are_honoured(fake, clients):
    compute, net, _ = clients
    nic = _network(net, pip_delete="Delete")
    compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id)).result()
    compute.virtual_machines.begin_delete(RG, "vm1").result()
    left = {d["type"] for d in fake.dump()}
    assert left == {"Microsoft.Network/virtualNetworks", "Microsoft.Network/virtualNetworks/subnets",
                    "Microsoft.Network/networkSecurityGroups"}, "NIC, its IP (deleteOption Delete) and disk went"


def test_detach_leaves_parts_detached(fake, clients):
    compute, net, _ = clients
    nic = _network(net)  # public IP without deleteOption
    compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(
        nic.id, nic_delete="Detach", disk_delete="Detach", disk_name="keep-os")).result()
    assert net.network_interfaces.get(RG, "n1-nic").virtual_machine is not None
    compute.virtual_machines.begin_delete(RG, "vm1").result()
    assert net.network_interfaces.get(RG, "n1-nic").virtual_machine is None
    disk = compute.disks.get(RG, "keep-os")
    assert disk.disk_state == "Unattached" and disk.managed_by is None and disk.tags is None
    net.network_interfaces.begin_delete(RG, "n1-nic").result()  # detached now: deletable
    assert net.public_ip_addresses.get(RG, "n1-ip").ip_configuration is None, "a NIC delete keeps its IP"


def test_nic_delete_with_vm_delete_keeps_ip_without_delete_option(fake, clients):
    compute, net, _ = clients
    nic = _network(net, pip_delete="Detach")
    compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id)).result()
    compute.virtual_machines.begin_delete(RG, "vm1").result()
    assert net.public_ip_addresses.get(RG, "n1-ip").ip_address
    with pytest.raises(ResourceNotFoundError):
        net.network_interfaces.get(RG, "n1-nic")


def test_keep_parts_fault_leaves_the_nic(fake, clients):
    compute, net, _ = clients
    nic = _network(net, pip_delete="Delete")
    compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id)).result()
    fake.add_fault(action="keep_parts", parts=["nic"])
    compute.virtual_machines.begin_delete(RG, "vm1").result()
    left = net.network_interfaces.get(RG, "n1-nic")
    assert left.virtual_machine is None
    assert net.public_ip_addresses.get(RG, "n1-ip").ip_configuration is not None
    assert fake.find(type="Microsoft.Compute/disks") == [], "the disk still followed its deleteOption"


def test_snapshot_and_disk_copy(fake, clients):
    compute, net, _ = clients
    nic = _network(net)
    vm = compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, disk_name="os1")).result()
    snap = compute.snapshots.begin_create_or_update(RG, "snap1", {
        "location": "eastus", "tags": {"k": "v"},
        "properties": {"creationData": {"createOption": "Copy",
                                        "sourceResourceId": vm.storage_profile.os_disk.managed_disk.id}}}).result()
    assert snap.disk_size_gb == 30 and snap.os_type == "Linux" and snap.provisioning_state == "Succeeded"
    with pytest.raises(HttpResponseError) as err:
        compute.disks.begin_create_or_update(RG, "copy", {"location": "eastus", "properties": {
            "creationData": {"createOption": "Copy", "sourceResourceId": snap.id}, "diskSizeGB": 10}})
    assert _code(err) == "InvalidParameter"
    copy = compute.disks.begin_create_or_update(RG, "copy", {"location": "eastus", "properties": {
        "creationData": {"createOption": "Copy", "sourceResourceId": snap.id}}}).result()
    assert copy.disk_size_gb == 30 and copy.os_type == "Linux"
    with pytest.raises(ResourceNotFoundError):
        compute.disks.begin_create_or_update(RG, "copy2", {"location": "eastus", "properties": {
            "creationData": {"createOption": "Copy", "sourceResourceId": snap.id.replace("snap1", "gone")}}})
    compute.snapshots.begin_delete(RG, "snap1").result()
    with pytest.raises(ResourceNotFoundError):
        compute.snapshots.get(RG, "snap1")


def test_listing_by_tag_pages_through_next_link(fake, clients, http):
    _, net, rc = clients
    fake.settings(page_size=3)
    for i in range(7):
        net.network_security_groups.begin_create_or_update(RG, f"g{i}", {
            "location": "eastus", "tags": {"team": "a" if i % 2 == 0 else "b"}}).result()
    net.network_security_groups.begin_create_or_update(RG, "untagged", {"location": "eastus"}).result()
    got = list(rc.resources.list_by_resource_group(RG, filter="tagName eq 'team' and tagValue eq 'a'",
                                                   expand="provisioningState"))
    assert sorted(r.name for r in got) == ["g0", "g2", "g4", "g6"]
    assert {r.provisioning_state for r in got} == {"Succeeded"}
    assert len(list(rc.resources.list_by_resource_group(RG, filter="tagName eq 'team'"))) == 7
    assert len(list(rc.resources.list_by_resource_group(RG))) == 8
    raw = http.get(f"{_sub(fake)}/resourcegroups/{RG}/resources",
                   params={"$filter": "tagName eq 'team' and tagValue eq 'a'", "api-version": "2025-04-01"}).json()
    assert len(raw["value"]) == 3 and "%24skiptoken=" in raw["nextLink"] and raw["nextLink"].startswith(fake.url)
    r = http.get(f"{_sub(fake)}/resourcegroups/{RG}/resources",
                 params={"$filter": "name eq 'x'", "api-version": "2025-04-01"})
    assert r.status_code == 400


def test_seeded_catalog_and_images(fake, clients):
    compute, _, _ = clients
    sizes = {s.name: s for s in compute.virtual_machine_sizes.list("westeurope")}
    assert set(sizes) == set(VM_SIZES)
    assert (sizes["Standard_B1s"].number_of_cores, sizes["Standard_B1s"].memory_in_mb) == (1, 1024)
    skus = [s for s in compute.resource_skus.list(filter="location eq 'eastus'") if s.resource_type ==
            "virtualMachines"]
    caps = {c.name: c.value for c in skus[0].capabilities}
    assert caps["vCPUs"] and caps["MemoryGB"] and skus[0].location_info[0].zones == ["1", "2", "3"]
    (pub, offer, sku), versions = next(iter(IMAGES.items()))
    listed = compute.virtual_machine_images.list("eastus", pub, offer, sku)
    assert [v.name for v in listed] == list(versions)


# ---------------------------------------------------------------- faults and control API
def test_throttle_and_server_error_faults(fake, clients, http):
    _, net, _ = clients
    net.network_security_groups.begin_create_or_update(RG, "a", {"location": "eastus"}).result()
    fault = fake.add_fault(method="GET", resource_type="Microsoft.Network/networkSecurityGroups", status=429,
                           code="TooManyRequests", message="slow down", retry_after=12, skip=1)
    net.network_security_groups.get(RG, "a")  # skip=1 lets the first one through
    with pytest.raises(HttpResponseError) as err:
        net.network_security_groups.get(RG, "a")
    assert err.value.status_code == 429 and err.value.response.headers["Retry-After"] == "12"
    assert _code(err) == "TooManyRequests" and fault.hits == 1
    net.network_security_groups.get(RG, "a")  # times=1: spent
    fake.add_fault(method="*", path_contains="/networkSecurityGroups/a", status=503, code="ServiceUnavailable",
                   times=-1)
    for _ in range(2):
        with pytest.raises(HttpResponseError) as err:
            net.network_security_groups.get(RG, "a")
        assert err.value.status_code == 503
    fake.clear_faults()
    assert net.network_security_groups.get(RG, "a").name == "a"


def test_contains_and_hold_faults(fake, clients, http):
    """``contains`` picks one resource's calls (operation polls included); ``hold`` answers late, but acts."""
    import time

    _, net, _ = clients
    net.network_security_groups.begin_create_or_update(RG, "a", {"location": "eastus"}).result()
    fault = fake.add_fault(method="GET", contains="/networkSecurityGroups/b", status=500, times=-1)
    assert net.network_security_groups.get(RG, "a").name == "a"  # not b
    poll = fake.add_fault(method="GET", path_contains="/operations/", contains="networksecuritygroups/c",
                          status=503, code="ServiceUnavailable")
    with pytest.raises(HttpResponseError) as err:
        net.network_security_groups.begin_create_or_update(RG, "c", {"location": "eastus"}).result()
    assert err.value.status_code == 503 and poll.hits == 1 and fault.hits == 0
    fake.remove_fault(fault.id)
    assert fake.state.faults == [poll]
    held = fake.add_fault(action="hold", method="PUT", contains="/networkSecurityGroups/d", seconds=1.0)
    started = time.monotonic()
    net.network_security_groups.begin_create_or_update(RG, "d", {"location": "eastus"}).result()
    assert time.monotonic() - started >= 1.0 and held.hits == 1
    held = fake.add_fault(action="hold", method="GET", seconds=1.0)
    started = time.monotonic()
    assert http.get(f"{_sub(fake)}/resourceGroups/{RG}/providers/Microsoft.Network/networkSecurityGroups/zz",
                    params={"api-version": API_NET}).status_code == 404  # an error answer is held too
    assert time.monotonic() - started >= 1.0


def test_control_api_over_http(fake, http):
    q = {"api-version": "2025-04-01"}
    http.put(f"{_sub(fake)}/resourceGroups/{RG}", params=q, json={"location": "eastus"})
    nsg = f"{_sub(fake)}/resourceGroups/{RG}/providers/Microsoft.Network/networkSecurityGroups"
    r = http.post("/_fake/faults", json={"method": "PUT", "resource_type": "Microsoft.Network/networkSecurityGroups",
                                         "status": 500, "code": "InternalServerError"})
    assert r.status_code == 201 and r.json()[0]["times"] == 1
    assert http.put(f"{nsg}/x", params=q, json={"location": "eastus", "tags": {"t": "1"}}).status_code == 500
    assert http.put(f"{nsg}/x", params=q, json={"location": "eastus", "tags": {"t": "1"}}).status_code == 201
    assert [d["name"] for d in http.get("/_fake/resources", params={"tagName": "t", "tagValue": "1"}).json()] == ["x"]
    assert http.get("/_fake/requests").json()[-1][0] == "PUT"
    http.post("/_fake/settings", json={"lro_polls": 0})
    assert http.post("/_fake/reset").json() == {"ok": True}
    assert http.get("/_fake/resources").json() == []
    assert http.get("/_fake/faults").json() == []


def test_operations_complete_without_polling(fake, http):
    """Azure finishes an operation whether or not anyone polls it."""
    fake.settings(lro_max_seconds=0)
    q = {"api-version": API_NET}
    http.put(f"{_sub(fake)}/resourceGroups/{RG}", params=q, json={"location": "eastus"})
    url = f"{_sub(fake)}/resourceGroups/{RG}/providers/Microsoft.Network/networkSecurityGroups/x"
    http.put(url, params=q, json={"location": "eastus"})
    assert http.get(url, params=q).json()["properties"]["provisioningState"] == "Succeeded"


def test_vm_access_extension(fake, clients):
    compute, net, _ = clients
    nic = _network(net)
    compute.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id, disk_name="os1")).result()
    ext = {"location": "eastus", "properties": {
        "publisher": "Microsoft.OSTCExtensions", "type": "VMAccessForLinux", "typeHandlerVersion": "1.5",
        "protectedSettings": {"username": "carol", "ssh_key": KEY.replace("t@x", "carol")}}}
    done = compute.virtual_machine_extensions.begin_create_or_update(RG, "vm1", "access", ext).result()
    assert done.provisioning_state == "Succeeded" and done.protected_settings is None  # write-only
    disk = next(d for d in fake.dump() if d["name"] == "os1")
    assert disk["_guest"] == {"azureuser": [KEY], "carol": [KEY.replace("t@x", "carol")]}
    with pytest.raises(HttpResponseError) as err:  # one extension per handler
        compute.virtual_machine_extensions.begin_create_or_update(RG, "vm1", "again", ext)
    assert err.value.status_code == 409
    with pytest.raises(HttpResponseError) as err:
        compute.virtual_machine_extensions.begin_create_or_update(RG, "nope", "access", ext)
    assert _code(err) == "ParentResourceNotFound"
    compute.virtual_machines.begin_delete(RG, "vm1").result()
    assert not [d for d in fake.dump() if "/extensions/" in d["id"]], "extensions go with their VM"


# ---------------------------------------------------------------- VM power actions
def _dynamic_network(nc, name="d1"):
    """vnet + subnet and a NIC with a Basic, Dynamic public IP; returns (NIC, public IP name)."""
    vnet = nc.virtual_networks.begin_create_or_update(RG, "vnet-eastus", {
        "location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
                                             "subnets": [{"name": "s", "properties": {"addressPrefix": "10.1.0.0/24"}}]},
    }).result()
    pip = nc.public_ip_addresses.begin_create_or_update(RG, f"{name}-ip", {
        "location": "eastus", "sku": {"name": "Basic"}, "properties": {"publicIPAllocationMethod": "Dynamic"}}).result()
    nic = nc.network_interfaces.begin_create_or_update(RG, f"{name}-nic", {
        "location": "eastus", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {
            "subnet": {"id": vnet.subnets[0].id}, "publicIPAddress": {"id": pip.id}}}]}}).result()
    return nic, f"{name}-ip"


def _power(cc, name="vm1"):
    view = cc.virtual_machines.instance_view(RG, name)
    return [s.code for s in view.statuses if s.code.startswith("PowerState/")][0].split("/")[1]


def test_deallocate_start_restart(fake, clients, http):
    cc, nc, _ = clients
    nic, pip_name = _dynamic_network(nc)
    vm = cc.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id)).result()
    static_nic = _network(nc, "s1")
    cc.virtual_machines.begin_create_or_update(RG, "vm2", _vm_body(static_nic.id, disk_name="vm2-os")).result()
    first_ip = nc.public_ip_addresses.get(RG, pip_name).ip_address
    static_ip = nc.public_ip_addresses.get(RG, "s1-ip").ip_address
    assert first_ip and _power(cc) == "running"

    url = f"{vm.id}/deallocate"
    r = http.post(url, params={"api-version": API_VM})
    assert r.status_code == 202 and not r.content
    assert "Azure-AsyncOperation" in r.headers and "Location" in r.headers
    view = http.get(f"{vm.id}/instanceView", params={"api-version": API_VM}).json()
    assert [s["code"] for s in view["statuses"]] == ["ProvisioningState/updating", "PowerState/deallocating"]
    while http.get(r.headers["Azure-AsyncOperation"]).json()["status"] == "InProgress":
        pass
    assert _power(cc) == "deallocated"
    assert nc.public_ip_addresses.get(RG, pip_name).ip_address is None, "a Dynamic IP is released"
    cc.virtual_machines.begin_deallocate(RG, "vm2").result()
    assert nc.public_ip_addresses.get(RG, "s1-ip").ip_address == static_ip, "a Static IP is kept"
    cc.virtual_machines.begin_deallocate(RG, "vm1").result()  # deallocated already: nothing changes
    with pytest.raises(HttpResponseError) as caught:
        cc.virtual_machines.begin_restart(RG, "vm1").result()
    assert caught.value.status_code == 409 and _code(caught) == "OperationNotAllowed"
    with pytest.raises(HttpResponseError) as caught:
        cc.virtual_machines.begin_power_off(RG, "vm1").result()
    assert _code(caught) == "OperationNotAllowed"

    cc.virtual_machines.begin_start(RG, "vm1").result()
    assert _power(cc) == "running"
    second_ip = nc.public_ip_addresses.get(RG, pip_name).ip_address
    assert second_ip and second_ip != first_ip, "a Dynamic IP gets a new address on start"
    boots = {d["name"]: d["_boots"] for d in fake.dump() if d["type"] == "Microsoft.Compute/virtualMachines"}
    cc.virtual_machines.begin_start(RG, "vm1").result()  # running already: nothing changes
    cc.virtual_machines.begin_restart(RG, "vm1").result()
    after = {d["name"]: d["_boots"] for d in fake.dump() if d["type"] == "Microsoft.Compute/virtualMachines"}
    assert after["vm1"] == boots["vm1"] + 1 and _power(cc) == "running"
    assert nc.public_ip_addresses.get(RG, pip_name).ip_address == second_ip, "a restart keeps the address"
    cc.virtual_machines.begin_power_off(RG, "vm1").result()
    assert _power(cc) == "stopped", "powered off (still billed), not deallocated"
    disk = [d for d in fake.dump() if d["type"] == "Microsoft.Compute/disks" and d["name"].startswith("vm1")]
    assert disk and disk[0]["properties"]["diskState"] == "Attached", "the OS disk stays with the VM"

    # an update of a deallocated VM leaves it deallocated
    cc.virtual_machines.begin_deallocate(RG, "vm1").result()
    body = _vm_body(nic.id)
    body["tags"] = {"x": "1"}
    cc.virtual_machines.begin_create_or_update(RG, "vm1", body).result()
    assert _power(cc) == "deallocated"


def test_power_actions_refused_while_deleting_or_creating_and_preempted(fake, clients, http):
    cc, nc, _ = clients
    nic = _network(nc)
    fake.settings(lro_polls=5, lro_max_seconds=30)
    creating = cc.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id))  # still creating
    with pytest.raises(HttpResponseError) as caught:
        cc.virtual_machines.begin_start(RG, "vm1")
    assert caught.value.status_code == 409
    fake.settings(lro_polls=1, lro_max_seconds=2)
    creating.result()
    slow = fake.add_fault(action="slow", method="POST", path_contains="/deallocate", polls=50, seconds=30)
    deallocating = cc.virtual_machines.begin_deallocate(RG, "vm1")
    started = cc.virtual_machines.begin_start(RG, "vm1")  # preempts the deallocation
    with pytest.raises(HttpResponseError) as caught:
        deallocating.result()
    assert _code(caught) == "OperationPreempted"
    started.result()
    assert _power(cc) == "running" and slow.hits == 1
    # A delete still in progress (a loaded machine must not finish it before the start arrives).
    fake.add_fault(action="slow", method="DELETE", path_contains="/virtualMachines/vm1", polls=50, seconds=30)
    cc.virtual_machines.begin_delete(RG, "vm1")  # not awaited: marked for deletion
    with pytest.raises(HttpResponseError) as caught:
        cc.virtual_machines.begin_start(RG, "vm1")
    assert caught.value.status_code == 409 and "marked for deletion" in caught.value.error.message


def test_power_actions_take_faults(fake, clients):
    cc, nc, _ = clients
    nic = _network(nc)
    cc.virtual_machines.begin_create_or_update(RG, "vm1", _vm_body(nic.id)).result()
    fake.add_fault(action="error", method="POST", path_contains="/deallocate", status=429, code="TooManyRequests")
    with pytest.raises(HttpResponseError) as caught:
        cc.virtual_machines.begin_deallocate(RG, "vm1")
    assert caught.value.status_code == 429 and _power(cc) == "running"
    fake.add_fault(action="lro_fail", method="POST", path_contains="/deallocate", code="InternalExecutionError",
                   message="An internal execution error occurred.")
    with pytest.raises(HttpResponseError) as caught:
        cc.virtual_machines.begin_deallocate(RG, "vm1").result()
    assert _code(caught) == "InternalExecutionError" and _power(cc) == "running", "a failed action changes nothing"
    cc.virtual_machines.begin_deallocate(RG, "vm1").result()
    assert _power(cc) == "deallocated"
