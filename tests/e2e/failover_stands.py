"""The cloud stand-ins as failover tests drive them: two zones in one region and a fallback region
each, and per-zone capacity and per-region quota errors injected where the cloud would answer
them (the EC2 fault proxy in front of moto, the GCE fake's operations, the ARM fake's VM PUT).

Used by ``test_failover`` (the stand-in tests) and ``test_kill_matrix`` (a worker killed between
two attempts). What is left in a zone is asked of the stand-in itself, never of onebox."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from tests.e2e.cloud_support import SSH_KEY
from tests.fakes.fixtures import GCE_PROJECT


@dataclass
class FailoverStand:
    name: str
    region: str
    zone_a: str
    zone_b: str
    fallback: str  # a second region
    machine_type: str
    make_provider: Callable[[], Any]
    capacity: Callable[[str, str], Any]  # (region, zone) -> a handle: that zone has no capacity until cleared
    quota: Callable[[str], Any]  # region -> a handle: every launch there is over quota until cleared
    clear: Callable[[Any], None]
    hits: Callable[[Any], int]  # how often a fault fired
    parts_in: Callable[[str, str, str | None], list[str]]  # (instance id, region, zone) -> what exists there
    alive: Callable[[], list[str]]  # every managed resource that costs money
    worker_env: dict[str, str]
    capacity_code: str  # the cloud's error code the stand-in answers
    quota_code: str

    def body(self, name: str, **overrides) -> dict:
        body = {"name": name, "provider": self.name, "region": self.region, "machine_type": self.machine_type,
                "image": "ubuntu-24.04", "ssh_user": "alice", "ssh_public_key": SSH_KEY, "disk_gb": 30}
        body.update(overrides)
        return body


def aws_stand(moto_url: str, proxy) -> FailoverStand:
    """AWS on moto (at ``moto_url``) behind the EC2 fault proxy ``proxy`` (started). boto3 takes its
    credentials from the environment."""
    import boto3

    from providers.aws import AwsConfig, AwsProvider

    regions = ("us-east-1", "us-west-2")
    for region in regions:  # moto builds a region's default VPC on its first call
        boto3.client("ec2", region_name=region, endpoint_url=moto_url).describe_vpcs()

    def make():
        # EC2 answers InsufficientInstanceCapacity with a 500, which botocore retries: two tries, not five
        return AwsProvider(AwsConfig(regions=regions, endpoint_url=proxy.url, poll_delay=0.05, consistency_grace=1.0,
                                     max_attempts=2))

    def instances(region: str, instance_id: str | None = None) -> list[dict]:
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=moto_url)
        flt = [{"Name": "tag:managed-by", "Values": ["onebox"]}]
        if instance_id:
            flt.append({"Name": "tag:onebox-instance-id", "Values": [instance_id]})
        return [i for r in ec2.describe_instances(Filters=flt)["Reservations"] for i in r["Instances"]
                if i["State"]["Name"] not in ("terminated", "shutting-down")]

    def parts_in(instance_id: str, region: str, zone: str | None) -> list[str]:
        return [i["InstanceId"] for i in instances(region, instance_id)
                if zone is None or i["Placement"]["AvailabilityZone"] == zone]

    env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    env.update({"ONEBOX_AWS_ENDPOINT_URL": proxy.url, "ONEBOX_AWS_REGIONS": ",".join(regions),
                "ONEBOX_AWS_POLL_SECONDS": "0.1"})
    return FailoverStand(
        "aws", "us-east-1", "us-east-1a", "us-east-1b", "us-west-2", "t3.micro", make,
        capacity=lambda region, zone: proxy.add_fault(action="RunInstances", zone=zone, count=-1,
                                                      code="InsufficientInstanceCapacity").id,
        quota=lambda region: proxy.add_fault(action="RunInstances", region=region, count=-1,
                                             code="VcpuLimitExceeded").id,
        clear=proxy.remove_fault, hits=proxy.fired, parts_in=parts_in,
        alive=lambda: [i["InstanceId"] for region in regions for i in instances(region)],
        worker_env=env, capacity_code="InsufficientInstanceCapacity", quota_code="VcpuLimitExceeded")


@pytest.fixture
def aws_failover(aws_env):
    from tests.fakes.ec2_faults import Ec2FaultProxy

    proxy = Ec2FaultProxy(aws_env.url).start()
    yield aws_stand(aws_env.url, proxy)
    proxy.stop()


def gcp_stand(gce_server) -> FailoverStand:
    """GCP on the GCE fake (a ``GceFakeServer``, started)."""
    from google.auth.credentials import AnonymousCredentials

    from providers.gcp import GcpConfig, GcpProvider

    gce = gce_server.fake
    zones = ("us-central1-a", "us-central1-b", "europe-west1-b")

    def make():
        return GcpProvider(GcpConfig(project=GCE_PROJECT, zones=zones, api_endpoint=gce_server.url,
                                     wait_timeout=20.0, poll_interval=0.0, retry_base_delay=0.0),
                           credentials=AnonymousCredentials())

    def managed() -> list[dict]:
        found = gce.managed()
        return found["instances"] + found["disks"]

    def parts_in(instance_id: str, region: str, zone: str | None) -> list[str]:
        return [r["name"] for r in managed() if (r.get("labels") or {}).get("onebox-instance-id") == instance_id
                and r["zone"].rsplit("/", 1)[-1].startswith(zone or region)]

    env = {"ONEBOX_GCP_PROJECT": GCE_PROJECT, "ONEBOX_GCP_ZONES": ",".join(zones),
           "ONEBOX_GCP_API_ENDPOINT": gce_server.url, "ONEBOX_GCP_ANONYMOUS_CREDENTIALS": "true",
           "ONEBOX_GCP_POLL_SECONDS": "0.1"}
    return FailoverStand(
        "gcp", "us-central1", "us-central1-a", "us-central1-b", "europe-west1", "e2-small", make,
        capacity=lambda region, zone: gce.inject_operation_error("ZONE_RESOURCE_POOL_EXHAUSTED", -1,
                                                                 operation_type="insert", target=f"/zones/{zone}/"),
        quota=lambda region: gce.inject_operation_error("QUOTA_EXCEEDED", -1, operation_type="insert",
                                                        target=f"/zones/{region}-"),
        clear=gce.remove_fault, hits=gce.fired, parts_in=parts_in,
        alive=lambda: [r["name"] for r in managed()], worker_env=env,
        capacity_code="ZONE_RESOURCE_POOL_EXHAUSTED", quota_code="QUOTA_EXCEEDED")


@pytest.fixture
def gcp_failover(gce_server, gce):
    return gcp_stand(gce_server)


AZURE_PARTS = ("Microsoft.Compute/virtualMachines", "Microsoft.Network/networkInterfaces",
               "Microsoft.Network/networkSecurityGroups", "Microsoft.Network/publicIPAddresses",
               "Microsoft.Compute/disks")
AZURE_QUOTA = ("Operation could not be completed as it results in exceeding approved standardBSFamily Cores quota. "
               "Additional details - Deployment Model: Resource Manager, Location: {region}, Current Limit: 0.")


def azure_stand(arm) -> FailoverStand:
    """Azure on the ARM fake (an ``ArmFake``, started)."""
    from providers.azure import AzureConfig, AzureProvider

    locations = ("eastus", "westeurope")

    def make():
        return AzureProvider(AzureConfig(subscription_id=arm.subscription_id, base_url=arm.url, ca_bundle=arm.ca_path,
                                         static_token="dev", polling_interval=0, retry_total=0, locations=locations))

    def parts(instance_id: str | None = None) -> list[dict]:
        return [r for r in arm.find("managed-by", "onebox") if r["type"] in AZURE_PARTS
                and (instance_id is None or (r.get("tags") or {}).get("onebox-instance-id") == instance_id)]

    def parts_in(instance_id: str, region: str, zone: str | None) -> list[str]:
        # NICs and NSGs are regional: "in a zone" are the VM, its public IP and its disk
        return [r["id"] for r in parts(instance_id) if r["location"] == region
                and (zone is None or zone in (r.get("zones") or []))]

    def quota(region: str):
        return arm.add_fault(action="error", method="PUT", resource_type="Microsoft.Compute/virtualMachines",
                             location=region, status=409, code="OperationNotAllowed",
                             message=AZURE_QUOTA.format(region=region), times=-1).id

    env = {"ONEBOX_AZURE_SUBSCRIPTION_ID": arm.subscription_id, "ONEBOX_AZURE_BASE_URL": arm.url,
           "ONEBOX_AZURE_CA_BUNDLE": arm.ca_path, "ONEBOX_AZURE_STATIC_TOKEN": "dev",
           "ONEBOX_AZURE_POLLING_INTERVAL": "0", "ONEBOX_AZURE_LOCATIONS": ",".join(locations)}
    return FailoverStand(
        "azure", "eastus", "1", "2", "westeurope", "Standard_B1s", make,
        capacity=lambda region, zone: arm.add_fault(
            action="lro_fail", method="PUT", resource_type="Microsoft.Compute/virtualMachines", location=region,
            zone=zone, code="ZonalAllocationFailed", times=-1,
            message="Allocation failed. We do not have sufficient capacity for the requested VM size in this zone.").id,
        quota=quota, clear=arm.remove_fault, hits=lambda fault_id: next(
            (f.hits for f in arm.state.faults if f.id == fault_id), 0),
        parts_in=parts_in, alive=lambda: [r["id"] for r in parts()], worker_env=env,
        capacity_code="ZonalAllocationFailed", quota_code="OperationNotAllowed")


@pytest.fixture
def azure_failover(fake):
    return azure_stand(fake)


STANDS = ["aws_failover", "gcp_failover", "azure_failover"]
