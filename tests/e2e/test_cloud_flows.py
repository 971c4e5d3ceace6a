"""AWS, GCP (and Azure) through onebox's API and worker, against their local stand-ins."""

from __future__ import annotations

import os
import signal

import pytest

from tests.api.helpers import wait_status
from tests.conftest import make_settings
from tests.e2e.cloud_support import Cloud, full_flow, onebox_for
from tests.providers.aws_fixtures import aws_env, moto_ec2  # noqa: F401  (fixtures)
from tests.fakes.fixtures import GCE_PROJECT as PROJECT, arm, fake, gce, gce_server  # noqa: F401  (fixtures)



@pytest.fixture
def aws_cloud(aws_env):  # noqa: F811
    import boto3

    from providers.aws import AwsConfig, AwsProvider

    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=aws_env.url)

    def alive() -> list[str]:
        found = []
        for page in ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "tag:managed-by", "Values": ["onebox"]}]):
            for reservation in page["Reservations"]:
                found += [i["InstanceId"] for i in reservation["Instances"]
                          if i["State"]["Name"] not in ("terminated", "shutting-down")]
        found += [i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
        found += [s["SnapshotId"] for s in ec2.describe_snapshots(
            Filters=[{"Name": "tag:managed-by", "Values": ["onebox"]}])["Snapshots"]]
        return found

    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    env["ONEBOX_AWS_ENDPOINT_URL"] = aws_env.url
    env["ONEBOX_AWS_POLL_SECONDS"] = "0.1"
    return Cloud("aws", "us-east-1", "t3.micro", "ubuntu-24.04",
                 lambda: AwsProvider(AwsConfig(endpoint_url=aws_env.url, poll_delay=0.05, consistency_grace=1.0)),
                 alive, env)


@pytest.fixture
def gcp_cloud(gce_server, gce):  # noqa: F811
    from google.auth.credentials import AnonymousCredentials

    from providers.gcp import GcpConfig, GcpProvider

    def alive() -> list[str]:
        return [r.cloud_id for r in make().list_managed() if r.kind in ("instance", "snapshot")]

    def make():
        return GcpProvider(GcpConfig(project=PROJECT, zones=("us-central1-a",), api_endpoint=gce_server.url,
                                     wait_timeout=20.0, poll_interval=0.0, retry_base_delay=0.0),
                           credentials=AnonymousCredentials())

    env = {"ONEBOX_GCP_PROJECT": PROJECT, "ONEBOX_GCP_ZONES": "us-central1-a",
           "ONEBOX_GCP_API_ENDPOINT": gce_server.url, "ONEBOX_GCP_ANONYMOUS_CREDENTIALS": "true",
           "ONEBOX_GCP_POLL_SECONDS": "0.1"}
    return Cloud("gcp", "us-central1", "e2-small", "ubuntu-24.04", make, alive, env, zone="us-central1-a")


AZURE_TYPES = ("Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces",
               "Microsoft.Network/networkSecurityGroups",
               "Microsoft.Network/publicIPAddresses", "Microsoft.Compute/disks", "Microsoft.Compute/snapshots")


@pytest.fixture
def azure_cloud(fake):
    arm = fake
    from providers.azure import AzureConfig, AzureProvider

    def make():
        return AzureProvider(AzureConfig(subscription_id=arm.subscription_id, base_url=arm.url, ca_bundle=arm.ca_path,
                                         static_token="dev", polling_interval=0, retry_total=0))

    def alive() -> list[str]:
        # Every per-instance resource tagged managed-by=onebox (the shared VNet is not one).
        return [r["id"] for r in arm.find("managed-by", "onebox") if r["type"] in AZURE_TYPES]

    env = {"ONEBOX_AZURE_SUBSCRIPTION_ID": arm.subscription_id, "ONEBOX_AZURE_BASE_URL": arm.url,
           "ONEBOX_AZURE_CA_BUNDLE": arm.ca_path, "ONEBOX_AZURE_STATIC_TOKEN": "dev",
           "ONEBOX_AZURE_POLLING_INTERVAL": "0"}
    return Cloud("azure", "eastus", "Standard_B1s", "ubuntu-24.04", make, alive, env, parts=5)  # VM, NIC, NSG, IP, disk


CLOUDS = ["aws_cloud", "gcp_cloud", "azure_cloud"]


def settings_for(cloud: Cloud, dbserver, tmp_path, **overrides):
    return make_settings(dbserver, tmp_path / "data", providers=[cloud.name], **overrides)


@pytest.mark.parametrize("cloud_fixture", CLOUDS)
async def test_full_flow_through_the_api(cloud_fixture, request, dbserver, tmp_path, mint):
    cloud: Cloud = request.getfixturevalue(cloud_fixture)
    async with onebox_for(cloud, settings_for(cloud, dbserver, tmp_path)) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        await full_flow(api, headers, cloud)


@pytest.mark.parametrize("cloud_fixture", CLOUDS)
@pytest.mark.parametrize("step", ["create", "wait_running", "configure"])
async def test_failure_at_each_step_leaves_nothing(cloud_fixture, step, request, dbserver, tmp_path):
    cloud: Cloud = request.getfixturevalue(cloud_fixture)
    async with onebox_for(cloud, settings_for(cloud, dbserver, tmp_path, inject_faults=[step])) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = (await api.post("/v1/instances", json=cloud.body(), headers=headers)).json()
        done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"failed", "running"}, 120)
        assert done["status"] == "failed" and done["error"]["step"] == step
        assert cloud.alive() == []


@pytest.mark.parametrize("cloud_fixture", CLOUDS)
async def test_bad_region_and_machine_type_refused_before_queueing(cloud_fixture, request, dbserver, tmp_path):
    cloud: Cloud = request.getfixturevalue(cloud_fixture)
    async with onebox_for(cloud, settings_for(cloud, dbserver, tmp_path), worker=False) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        for overrides, field in [({"region": "atlantis-1"}, "region"), ({"machine_type": "x99.huge"}, "machine_type")]:
            response = await api.post("/v1/instances", json=cloud.body(**overrides), headers=headers)
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["field"] == field
        assert await svc.db.instances.count_documents({}) == 0


@pytest.mark.parametrize("cloud_fixture", CLOUDS)
async def test_worker_killed_right_after_create_gives_one_vm(cloud_fixture, request, dbserver, tmp_path):
    from tests.e2e.test_workers import start_worker, stop, wait_until

    cloud: Cloud = request.getfixturevalue(cloud_fixture)
    settings = settings_for(cloud, dbserver, tmp_path, lease_seconds=2.0)
    async with onebox_for(cloud, settings, worker=False) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        headers_idem = {**headers, "Idempotency-Key": "once"}
        inst = (await api.post("/v1/instances", json=cloud.body(), headers=headers_idem)).json()
        again = (await api.post("/v1/instances", json=cloud.body(), headers=headers_idem)).json()
        assert again["id"] == inst["id"]
        env = {**cloud.worker_env, "ONEBOX_PROVIDERS": cloud.name, "ONEBOX_CONFIGURE": "skip",
               "ONEBOX_INJECT_DELAYS": '{"create": 60}'}
        first = start_worker(settings, tmp_path / "a.log", **env)
        try:
            async def created():
                return len(cloud.alive()) >= cloud.parts
            await wait_until(created, timeout=60, what="the first worker to create the VM")
        finally:
            stop(first, signal.SIGKILL)
        made = sorted(cloud.alive())
        env.pop("ONEBOX_INJECT_DELAYS")
        second = start_worker(settings, tmp_path / "b.log", **env)
        try:
            done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"running", "failed"}, 120)
            assert done["status"] == "running", (done, (tmp_path / "b.log").read_text()[-2000:])
            assert sorted(cloud.alive()) == made, "the second worker resumed the first one's resources"
            assert len(made) == cloud.parts
            await api.delete(f"/v1/instances/{inst['id']}", headers=headers)
            await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"}, 120)
            assert cloud.alive() == []
        finally:
            stop(second)


@pytest.mark.parametrize("fault,outcome,code", [
    ("http_503", "running", None),
    ("http_429", "running", None),
    ("slow", "running", None),
    # no other zone to try (the request names none): no_capacity, the attempt listed (app.placement)
    ("ZONE_RESOURCE_POOL_EXHAUSTED", "failed", "no_capacity"),
    ("QUOTA_EXCEEDED", "failed", "no_capacity"),
])
async def test_gcp_faults_retry_or_fail_clean(fault, outcome, code, gcp_cloud, gce, dbserver, tmp_path):  # noqa: F811
    if fault.startswith("http_"):
        gce.inject_http_error(int(fault[5:]), count=3, method="POST", path="/instances$")
    elif fault == "slow":
        gce.inject_slow_operation(5, operation_type="insert", target="/instances/")
    else:
        gce.inject_operation_error(fault, operation_type="insert", target="/instances/")
    async with onebox_for(gcp_cloud, settings_for(gcp_cloud, dbserver, tmp_path)) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = (await api.post("/v1/instances", json=gcp_cloud.body(), headers=headers)).json()
        done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"failed", "running"}, 120)
        assert done["status"] == outcome, done
        if outcome == "failed":
            assert done["error"]["code"] == code and done["error"]["step"] == "create"
            assert gcp_cloud.alive() == []
        else:
            labels = [i["labels"] for i in gce.state()["instances"]]
            assert labels and labels[0]["managed-by"] == "onebox" and labels[0]["onebox-instance-id"] == inst["id"]
            assert labels[0]["onebox-owner"] == "alice"
            await api.delete(f"/v1/instances/{inst['id']}", headers=headers)
            await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"}, 120)
            assert gcp_cloud.alive() == []


@pytest.mark.parametrize("fault", [
    dict(method="PUT", resource_type="Microsoft.Network/networkInterfaces", status=500, code="InternalServerError",
         times=-1),  # after the public IP
    dict(method="PUT", resource_type="Microsoft.Compute/virtualMachines", status=400, code="InvalidParameter",
         message="refused"),  # after the NIC
    dict(action="lro_fail", method="PUT", resource_type="Microsoft.Compute/virtualMachines",
         code="AllocationFailed", message="no capacity"),  # after the VM PUT
])
async def test_azure_failure_at_each_sub_step_removes_every_part(fault, azure_cloud, fake, dbserver, tmp_path):
    arm = fake
    arm.add_fault(**fault)
    settings = settings_for(azure_cloud, dbserver, tmp_path, max_attempts=2)
    async with onebox_for(azure_cloud, settings) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = (await api.post("/v1/instances", json=azure_cloud.body(), headers=headers)).json()
        done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"failed", "running"}, 120)
        assert done["status"] == "failed" and done["error"]["step"] == "create", done
        assert arm.find("onebox-instance-id", inst["id"]) == [], "every already-created part was removed"
        assert azure_cloud.alive() == []


async def test_azure_full_flow_leaves_one_of_each_and_then_nothing(azure_cloud, fake, dbserver, tmp_path):
    arm = fake
    async with onebox_for(azure_cloud, settings_for(azure_cloud, dbserver, tmp_path)) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        inst = (await api.post("/v1/instances", json=azure_cloud.body(), headers=headers)).json()
        done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"failed", "running"}, 120)
        assert done["status"] == "running" and done["public_ip"], done
        types = sorted(r["type"] for r in arm.find("onebox-instance-id", inst["id"]))
        assert types == sorted(["Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces",
                                "Microsoft.Network/publicIPAddresses", "Microsoft.Compute/disks",
                                "Microsoft.Network/networkSecurityGroups"]), types
        for r in arm.find("onebox-instance-id", inst["id"]):
            assert r["tags"]["managed-by"] == "onebox" and r["tags"]["onebox-owner"] == "alice"
        await api.delete(f"/v1/instances/{inst['id']}", headers=headers)
        await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"}, 120)
        assert arm.find("onebox-instance-id", inst["id"]) == []


async def test_aws_instance_configured_for_real_through_a_mapped_sshd(aws_cloud, dbserver, tmp_path, ssh_keypair):
    """moto runs no VMs: a local sshd stands in for the EC2 instance, and onebox reaches it through
    ONEBOX_SSH_ENDPOINT_MAP, so the real playbook and the real agent run for an "EC2" instance."""
    import asyncio

    from app.configure.keys import deploy_key
    from providers.base import InstanceSpec
    from providers.local import LocalConfig, LocalProvider
    from tests.e2e.test_configure_flow import configured_settings, served_app

    data_dir = tmp_path / "data"
    standin = LocalProvider(LocalConfig(root=tmp_path / "standin"))
    spec = InstanceSpec(instance_id="ec2-standin", owner="alice", name="standin", region="local", zone=None,
                        machine_type="local", ssh_user="alice", ssh_public_key=ssh_keypair.public, disk_gb=20,
                        admin_ssh_public_key=deploy_key(data_dir)[1])
    standin.create_instance(spec)
    vm = standin.wait_running(spec.ref, 20)
    try:
        settings = configured_settings(dbserver, tmp_path, providers=["aws"],
                                       ssh_endpoint_map={"*": f"{vm.public_ip}:{vm.ssh_port}"},
                                       ssh_endpoint_kind="local")
        assert settings.data_dir == data_dir
        async with served_app(settings, providers={"aws": aws_cloud.make_provider()}) as (api, svc):
            headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            inst = (await api.post("/v1/instances", json=aws_cloud.body(bootstrap_script="#!/bin/sh\necho on-ec2\n"),
                                   headers=headers)).json()
            path = f"/v1/instances/{inst['id']}"
            done = await wait_status(api, path, headers, {"running", "failed"}, 240)
            assert done["status"] == "running", (done, (await api.get(path + "/events", headers=headers)).json()[-5:])
            assert done["cloud_id"].startswith("i-") and done["public_ip"]
            events = (await api.get(path + "/events", headers=headers)).json()
            assert any(e["type"] == "bootstrap.output" and "on-ec2" in e["message"] for e in events)
            for _ in range(80):
                health = (await api.get(path, headers=headers)).json()["health"]
                if health["state"] == "healthy":
                    break
                await asyncio.sleep(0.5)
            assert health["state"] == "healthy" and health["cpu_percent"] is not None
            await api.delete(path, headers=headers)
            await wait_status(api, path, headers, {"deleted"}, 120)
            assert aws_cloud.alive() == []
    finally:
        standin.delete_instance(spec.ref)


async def test_azure_refuses_what_azure_refuses_before_queueing(azure_cloud, dbserver, tmp_path):
    ecdsa = ("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrY"
             "MjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg= alice@laptop")
    async with onebox_for(azure_cloud, settings_for(azure_cloud, dbserver, tmp_path), worker=False) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        for overrides, field in [({"ssh_public_key": ecdsa}, "ssh_public_key"), ({"ssh_user": "admin"}, "ssh_user")]:
            response = await api.post("/v1/instances", json=azure_cloud.body(**overrides), headers=headers)
            assert response.status_code == 422, response.text
            assert response.json()["errors"][0]["field"] == field
        assert await svc.db.instances.count_documents({}) == 0
