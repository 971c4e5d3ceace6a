"""The AWS provider against moto's EC2 server: the shared contract, then AWS specifics.

Everything goes over HTTP to a real ``moto.server`` (see ``aws_fixtures``):
the provider through boto3, and the assertions through a plain boto3 client
(``ec2``) describing what the provider left behind. Failures moto cannot
produce (throttling, capacity, quota, eventual consistency) are injected at
the botocore layer, with event hooks on the provider's own client: the
provider code under test is the code that runs in production.
"""

from __future__ import annotations

import base64
import json
import re
import threading

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from providers.aws import AwsConfig, AwsProvider
from providers.aws.errors import map_botocore_error, map_client_error, translate
from providers.aws.mapping import IMAGE_FILTERS, client_token, image_name
from providers.base import (
    IMAGE_ALIASES,
    CapacityError,
    InstanceRef,
    InstanceState,
    InvalidRequest,
    NotFound,
    ProviderError,
    QuotaError,
    SnapshotRef,
    SnapshotSpec,
    SnapshotState,
)
from tests.providers.aws_fixtures import (  # noqa: F401  (fixtures)
    ACCOUNT_ID,
    NEWEST,
    aws_env,
    ec2,
    moto_ec2,
    new_spec,
    tags_of,
)
from providers.cloudinit import cloud_config
from tests.providers.contract import ProviderContract

WAIT = 10.0


def _config(server, **overrides) -> AwsConfig:
    values = dict(endpoint_url=server.url, wait_timeout=WAIT, poll_delay=0.02, consistency_grace=0.3,
                  max_attempts=2, connect_timeout=2.0, read_timeout=20.0)
    values.update(overrides)
    return AwsConfig(**values)


@pytest.fixture
def provider(aws_env):
    return AwsProvider(_config(aws_env))


@pytest.fixture
def deployed(aws_env):
    return lambda deployment: AwsProvider(_config(aws_env, deployment=deployment))


@pytest.fixture
def make_spec():
    return new_spec


@pytest.fixture
def disk_identity(ec2):
    """The EBS volumes attached to the instance, as EC2 describes them (moto keeps no content)."""
    def identity(ref):
        volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [ref.cloud_id]}])
        return sorted((v["VolumeId"], v["Size"], v["Attachments"][0]["Device"]) for v in volumes["Volumes"])

    return identity


class TestAwsContract(ProviderContract):
    wait_timeout = WAIT
    public_ip_kept_on_stop = False  # no Elastic IP: EC2 gives the instance a new public IP on every start


# ---------------------------------------------------------------------------
# helpers


def _snapshot_spec(spec, info, snapshot_id=None, **kw) -> SnapshotSpec:
    ref = InstanceRef(spec.instance_id, spec.region, None, info.cloud_id)
    return SnapshotSpec(snapshot_id or "s-" + spec.instance_id[2:], spec.owner, f"snap of {spec.name}", ref, **kw)


def _live(ec2, instance_id):
    pages = ec2.get_paginator("describe_instances").paginate(Filters=[
        {"Name": "tag:onebox-instance-id", "Values": [instance_id]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
    ])
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def _our_ebs_snapshots(ec2):
    # moto ignores OwnerIds=["self"] on DescribeSnapshots; the owner-id filter works
    return ec2.describe_snapshots(Filters=[{"Name": "owner-id", "Values": [ACCOUNT_ID]}])["Snapshots"]


def _error(code: str, message: str = "AWS says no", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "RunInstances")


class Hook:
    """Intercepts one EC2 operation of the provider's client (botocore ``before-call``).

    ``respond(body) -> None | (status, parsed)``: None lets the call reach moto.
    """

    def __init__(self, provider, operation, respond, region="us-east-1"):
        self.calls = 0
        self.faked = 0
        self._respond = respond
        provider._client(region).meta.events.register(f"before-call.ec2.{operation}", self)

    def __call__(self, params, **_):
        self.calls += 1
        answer = self._respond(params.get("body") or {})
        if answer is None:
            return None
        self.faked += 1
        status, parsed = answer
        parsed.setdefault("ResponseMetadata", {"HTTPStatusCode": status})
        return AWSResponse("http://moto.invalid", status, {}, None), parsed


def _fail_with(code, message="injected", status=400, times=None):
    left = [times]

    def respond(body):
        if left[0] is not None:
            if left[0] <= 0:
                return None
            left[0] -= 1
        return status, {"Error": {"Code": code, "Message": message}}

    return respond


# ---------------------------------------------------------------------------
# tags, lifecycle, idempotency


def test_every_resource_carries_the_tags(provider, ec2):
    spec = new_spec(labels={"team": "dev", "Name": "not mine", "managed-by": "someone-else"})
    info = provider.create_instance(spec)
    provider.wait_running(spec.ref, WAIT)
    snap_spec = _snapshot_spec(spec, info)
    snap = provider.create_snapshot(snap_spec)

    ours = {"managed-by": "onebox", "onebox-instance-id": spec.instance_id, "onebox-owner": "alice"}
    inst = ec2.describe_instances(InstanceIds=[info.cloud_id])["Reservations"][0]["Instances"][0]
    assert tags_of(inst) == {**ours, "Name": spec.name, "team": "dev"}, "labels never override ours"

    volumes = ec2.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [info.cloud_id]}])["Volumes"]
    assert len(volumes) == 1
    assert tags_of(volumes[0]) == {**ours, "Name": spec.name, "team": "dev"}

    image = ec2.describe_images(ImageIds=[snap.cloud_id])["Images"][0]
    snap_tags = {**ours, "onebox-snapshot-id": snap_spec.snapshot_id}
    assert snap_tags.items() <= tags_of(image).items()
    ebs_ids = [m["Ebs"]["SnapshotId"] for m in image["BlockDeviceMappings"] if "Ebs" in m]
    assert ebs_ids
    for ebs in ec2.describe_snapshots(SnapshotIds=ebs_ids)["Snapshots"]:
        assert snap_tags.items() <= tags_of(ebs).items()

    # moto lists the groups of the network interface only, not under the instance
    (group_id,) = [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]]
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    assert tags_of(group)["managed-by"] == "onebox"
    assert group["GroupName"] == "onebox-ssh"
    ssh = [p for p in group["IpPermissions"] if p.get("FromPort") == 22]
    assert ssh and ssh[0]["IpProtocol"] == "tcp" and ssh[0]["IpRanges"][0]["CidrIp"] == "0.0.0.0/0"


def test_snapshot_round_trip_leaves_nothing_behind(provider, ec2):
    spec = new_spec(disk_gb=30)
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, WAIT)
    snap_spec = _snapshot_spec(spec, info)
    snap = provider.create_snapshot(snap_spec)
    assert snap.state == SnapshotState.AVAILABLE
    sref = SnapshotRef(snap_spec.snapshot_id, spec.region, snap.cloud_id)

    child = new_spec(image=None, snapshot=sref, disk_gb=10)
    created = provider.create_instance(child)
    assert created.extra["image_id"] == snap.cloud_id
    child_info = provider.wait_running(child.ref, WAIT)
    assert child_info.state == InstanceState.RUNNING and child_info.public_ip
    child_inst = ec2.describe_instances(InstanceIds=[child_info.cloud_id])["Reservations"][0]["Instances"][0]
    assert child_inst["ImageId"] == snap.cloud_id
    (root,) = ec2.describe_volumes(Filters=[
        {"Name": "attachment.instance-id", "Values": [child_info.cloud_id]}])["Volumes"]
    image = ec2.describe_images(ImageIds=[snap.cloud_id])["Images"][0]
    image_gb = image["BlockDeviceMappings"][0]["Ebs"]["VolumeSize"]
    assert root["Size"] == max(10, image_gb), "a root disk is never smaller than its image"

    provider.delete_instance(child.ref)
    provider.delete_instance(spec.ref)
    provider.delete_snapshot(sref)

    both = ec2.describe_instances(InstanceIds=[info.cloud_id, child_info.cloud_id])["Reservations"]
    assert {i["State"]["Name"] for r in both for i in r["Instances"]} == {"terminated"}
    assert ec2.describe_images(Owners=["self"])["Images"] == []
    assert _our_ebs_snapshots(ec2) == []
    assert ec2.describe_volumes(Filters=[{"Name": "tag:managed-by", "Values": ["onebox"]}])["Volumes"] == []
    assert [r for r in provider.list_managed() if r.kind != "instance"] == []
    with pytest.raises(NotFound):
        provider.get_snapshot(sref)


def test_create_again_after_the_worker_died_makes_one_instance(aws_env, ec2):
    spec = new_spec()
    first = AwsProvider(_config(aws_env)).create_instance(spec)  # the worker dies right after RunInstances
    replacement = AwsProvider(_config(aws_env))  # a new worker, nothing cached
    second = replacement.create_instance(spec)
    assert second.cloud_id == first.cloud_id
    assert [i["InstanceId"] for i in _live(ec2, spec.instance_id)] == [first.cloud_id]
    assert replacement.wait_running(spec.ref, WAIT).cloud_id == first.cloud_id


def test_run_instances_carries_a_stable_client_token(provider):
    seen = []
    provider._client("us-east-1").meta.events.register(
        "provide-client-params.ec2.RunInstances", lambda params, **_: seen.append(params["ClientToken"]))
    spec = new_spec()
    provider.create_instance(spec)
    assert seen == [client_token(spec.instance_id)]


def test_idempotent_parameter_mismatch_resumes_the_earlier_launch(aws_env, ec2):
    spec = new_spec()
    first = AwsProvider(_config(aws_env)).create_instance(spec)
    # The replacement worker's tag lookup misses the instance (eventual consistency); real EC2
    # then refuses the repeated token because the alias now names a newer image.
    replacement = AwsProvider(_config(aws_env))
    hidden = Hook(replacement, "DescribeInstances",
                  lambda body: (200, {"Reservations": []}) if hidden.calls == 1 else None)
    Hook(replacement, "RunInstances", _fail_with("IdempotentParameterMismatch", "Arguments are inconsistent"))
    assert replacement.create_instance(spec).cloud_id == first.cloud_id
    assert len(_live(ec2, spec.instance_id)) == 1


def test_client_token_is_deterministic_and_short():
    assert client_token("i-abc") == client_token("i-abc") == "onebox-i-abc"
    long_id = "x" * 200
    assert len(client_token(long_id)) <= 64 and client_token(long_id) == client_token(long_id)
    assert client_token(long_id) != client_token(long_id + "y")
    assert len(client_token("é" * 10)) <= 64 and client_token("é" * 10).isascii()


def test_create_resumes_a_stopped_instance(provider, ec2):
    spec = new_spec()
    info = provider.create_instance(spec)
    ec2.stop_instances(InstanceIds=[info.cloud_id])
    again = provider.create_instance(spec)
    assert again.cloud_id == info.cloud_id
    assert provider.wait_running(spec.ref, WAIT).state == InstanceState.RUNNING


def test_reusing_an_id_after_delete_is_refused(provider, monkeypatch):
    spec = new_spec()
    info = provider.create_instance(spec)
    provider.delete_instance(spec.ref)
    # Real EC2 answers a repeated ClientToken with the (now terminated) first instance.
    client = provider._client("us-east-1")
    original = client.run_instances

    def same_token_same_instance(**kwargs):
        response = original(**kwargs)
        client.terminate_instances(InstanceIds=[response["Instances"][0]["InstanceId"]])
        response["Instances"][0]["InstanceId"] = info.cloud_id
        response["Instances"][0]["State"] = {"Code": 48, "Name": "terminated"}
        return response

    monkeypatch.setattr(client, "run_instances", same_token_same_instance)
    with pytest.raises(ProviderError) as caught:
        provider.create_instance(spec)
    assert not caught.value.retryable and "cannot be used again" in caught.value.message


def test_concurrent_creates_share_one_security_group(provider, ec2):
    specs = [new_spec() for _ in range(4)]
    errors: list[BaseException] = []

    def run(spec):
        try:
            provider.create_instance(spec)
            provider.wait_running(spec.ref, WAIT)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    groups = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["onebox-ssh"]}])
    assert len(groups["SecurityGroups"]) == 1
    for spec in specs:
        assert len(_live(ec2, spec.instance_id)) == 1

    threads = [threading.Thread(target=provider.delete_instance, args=(s.ref,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not _live(ec2, s.instance_id) for s in specs)


def test_existing_security_group_gets_the_configured_rule(aws_env, ec2):
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    ec2.create_security_group(GroupName="onebox-ssh", Description="made earlier", VpcId=vpc)
    provider = AwsProvider(_config(aws_env, ssh_cidr="203.0.113.0/24"))
    spec = new_spec()
    info = provider.create_instance(spec)
    inst = ec2.describe_instances(InstanceIds=[info.cloud_id])["Reservations"][0]["Instances"][0]
    (group_id,) = [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]]
    (group,) = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"]
    cidrs = [r["CidrIp"] for p in group["IpPermissions"] if p.get("FromPort") == 22 for r in p["IpRanges"]]
    assert cidrs == ["203.0.113.0/24"]


def test_user_data_creates_the_ssh_user(provider, ec2):
    admin = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOneboxAdminKeyForConfigurationOnly000000000 onebox-configure"
    spec = new_spec(ssh_user="bob", admin_ssh_public_key=admin)
    info = provider.create_instance(spec)
    raw = ec2.describe_instance_attribute(InstanceId=info.cloud_id, Attribute="userData")["UserData"]["Value"]
    text = base64.b64decode(raw).decode()
    assert text == cloud_config(spec), "EC2 boots with the shared cloud-config (tests/vm boots it on a real Linux)"
    (user,) = json.loads(text.split("\n", 1)[1])["users"]
    assert user["name"] == "bob"
    # onebox's own key too: the configure step logs in as the user with it
    assert user["ssh_authorized_keys"] == [spec.ssh_public_key, admin]
    assert user["sudo"] == "ALL=(ALL) NOPASSWD:ALL" and user["shell"] == "/bin/bash"


@pytest.mark.parametrize("bad", [
    {"ssh_user": "Root Admin"}, {"ssh_user": "root"}, {"ssh_public_key": "ssh-rsa AAA\nssh-rsa BBB"},
    {"labels": {"aws:thing": "x"}}, {"labels": {"k": "v" * 300}}, {"image": "windows-95"},
    {"image": "ami-0123456789abcdef0"}, {"region": "mars-north-1"}, {"zone": "us-east-1z"},
])
def test_bad_requests_are_invalid_and_create_nothing(provider, ec2, bad):
    spec = new_spec(**bad)
    with pytest.raises(InvalidRequest):
        provider.create_instance(spec)
    assert ec2.describe_instances(Filters=[{"Name": "tag:managed-by", "Values": ["onebox"]}])["Reservations"] == []


# ---------------------------------------------------------------------------
# images


@pytest.mark.parametrize("alias", IMAGE_ALIASES)
def test_alias_resolves_to_the_newest_image(provider, alias):
    image = provider.resolve_alias("us-east-1", alias)
    assert image["ImageId"] == NEWEST[alias]
    assert image["OwnerId"] == IMAGE_FILTERS[alias][0]


def test_alias_is_cached(provider):
    hook = Hook(provider, "DescribeImages", lambda body: None)
    provider.resolve_alias("us-east-1", "ubuntu-22.04")
    provider.resolve_alias("us-east-1", "ubuntu-22.04")
    assert hook.calls == 1


def test_default_image_and_root_device_come_from_the_ami(provider, ec2):
    default = provider.create_instance(new_spec(image=None))
    inst = ec2.describe_instances(InstanceIds=[default.cloud_id])["Reservations"][0]["Instances"][0]
    assert inst["ImageId"] == NEWEST["ubuntu-24.04"]

    debian = provider.create_instance(new_spec(image="debian-12", disk_gb=25, machine_type="m5.large"))
    inst = ec2.describe_instances(InstanceIds=[debian.cloud_id])["Reservations"][0]["Instances"][0]
    assert inst["ImageId"] == NEWEST["debian-12"] and inst["InstanceType"] == "m5.large"
    (mapping,) = inst["BlockDeviceMappings"]
    assert mapping["DeviceName"] == "/dev/xvda"
    (volume,) = ec2.describe_volumes(VolumeIds=[mapping["Ebs"]["VolumeId"]])["Volumes"]
    assert volume["Size"] == 25 and volume["VolumeType"] == "gp3"

    native = provider.create_instance(new_spec(image=NEWEST["ubuntu-22.04"], zone="us-east-1c"))
    assert native.extra["image_id"] == NEWEST["ubuntu-22.04"]
    assert native.zone == "us-east-1c"


def test_image_name_is_valid_and_unique():
    assert image_name("s-123") == "onebox-s-123"
    odd = image_name("s/ä*" + "x" * 300)
    assert len(odd) <= 128 and re.fullmatch(r"[A-Za-z0-9()\[\]./'@_ -]{3,128}", odd)
    assert image_name("s-ä") != image_name("s-ö")


# ---------------------------------------------------------------------------
# waiting and deleting


def test_wait_running_times_out_retryably(provider):
    spec = new_spec()
    provider.create_instance(spec)

    def still_pending(http_response, parsed, **_):
        for r in parsed.get("Reservations", []):
            for i in r["Instances"]:
                i["State"] = {"Code": 0, "Name": "pending"}

    provider._client("us-east-1").meta.events.register("after-call.ec2.DescribeInstances", still_pending)
    with pytest.raises(ProviderError) as caught:
        provider.wait_running(spec.ref, 0.2)
    assert caught.value.retryable and caught.value.code == "timeout"


def test_wait_running_on_a_terminated_instance_fails_for_good(provider, ec2):
    spec = new_spec()
    info = provider.create_instance(spec)
    ec2.terminate_instances(InstanceIds=[info.cloud_id])
    with pytest.raises(ProviderError) as caught:
        provider.wait_running(InstanceRef(spec.instance_id, spec.region, None, info.cloud_id), WAIT)
    assert not caught.value.retryable and "terminated" in caught.value.message


def test_delete_sees_through_a_new_instance_being_invisible(provider, ec2):
    spec = new_spec()
    info = provider.create_instance(spec)
    # Right after RunInstances, EC2 reads may not show the instance: tag lookups come back
    # empty and lookups by id say InvalidInstanceID.NotFound, for a little while.
    budget = {"n": 4}

    def invisible(body):
        if budget["n"] <= 0:
            return None
        budget["n"] -= 1
        if "InstanceId.1" in body:
            return 400, {"Error": {"Code": "InvalidInstanceID.NotFound", "Message": "not yet"}}
        return 200, {"Reservations": []}

    hook = Hook(provider, "DescribeInstances", invisible)
    provider.delete_instance(InstanceRef(spec.instance_id, spec.region, None, info.cloud_id))
    assert hook.faked == 4
    (inst,) = [i for r in ec2.describe_instances(InstanceIds=[info.cloud_id])["Reservations"] for i in r["Instances"]]
    assert inst["State"]["Name"] == "terminated"


def test_wait_running_waits_for_a_new_instance_to_become_visible(provider):
    spec = new_spec()
    provider.create_instance(spec)
    hook = Hook(provider, "DescribeInstances",
                lambda body: (200, {"Reservations": []}) if hook.calls <= 3 else None)
    info = provider.wait_running(spec.ref, WAIT)  # no cloud id: found by tag once visible
    assert info.state == InstanceState.RUNNING and hook.faked == 3


def test_stale_cached_network_is_looked_up_again(provider):
    provider.create_instance(new_spec())  # caches the default network and the group
    groups = Hook(provider, "DescribeSecurityGroups", lambda body: None)
    Hook(provider, "RunInstances", _fail_with("InvalidGroup.NotFound", "The security group does not exist",
                                              times=1))
    info = provider.create_instance(new_spec())
    assert info.cloud_id and groups.calls == 1


def test_delete_of_a_long_gone_instance_returns(provider):
    provider.delete_instance(InstanceRef("i-gone", "us-east-1", None, "i-0123456789abcdef0"))


def test_delete_removes_a_volume_that_outlived_its_instance(provider, ec2):
    spec = new_spec()
    provider.create_instance(spec)
    leftover = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=[{
        "ResourceType": "volume", "Tags": [{"Key": "onebox-instance-id", "Value": spec.instance_id},
                                           {"Key": "managed-by", "Value": "onebox"}]}])
    provider.delete_instance(spec.ref)
    assert ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [leftover["VolumeId"]]}])["Volumes"] == []
    assert [r for r in provider.list_managed() if r.instance_id == spec.instance_id
            and r.state not in ("terminated", "deleted")] == []


def test_get_instance_reports_state_and_addresses(provider):
    spec = new_spec()
    info = provider.create_instance(spec)
    assert info.state in (InstanceState.PENDING, InstanceState.RUNNING)
    got = provider.get_instance(spec.ref)
    assert got.cloud_id == info.cloud_id and got.public_ip and got.private_ip and got.zone
    assert got.extra["instance_type"] == "t3.micro"
    by_id = provider.get_instance(InstanceRef("i-not-tagged", "us-east-1", None, info.cloud_id))
    assert by_id.cloud_id == info.cloud_id, "a recorded cloud id is a fallback for the tag"


# ---------------------------------------------------------------------------
# snapshots


@pytest.mark.parametrize(("config_reboot", "spec_reboot", "no_reboot"),
                         [(False, False, True), (True, False, False), (False, True, False)])
def test_snapshot_reboots_only_when_asked(aws_env, config_reboot, spec_reboot, no_reboot):
    provider = AwsProvider(_config(aws_env, reboot_on_snapshot=config_reboot))
    seen = []
    provider._client("us-east-1").meta.events.register(
        "provide-client-params.ec2.CreateImage", lambda params, **_: seen.append(params["NoReboot"]))
    spec = new_spec()
    info = provider.create_instance(spec)
    provider.create_snapshot(_snapshot_spec(spec, info, reboot=spec_reboot))
    assert seen == [no_reboot]


def test_failed_image_fails_the_snapshot_with_its_reason(provider):
    spec = new_spec()
    info = provider.create_instance(spec)

    def failed(http_response, parsed, **_):
        for image in parsed.get("Images", []):
            image["State"] = "failed"
            image["StateReason"] = {"Code": "Server.InternalError", "Message": "disk read error"}

    provider._client("us-east-1").meta.events.register("after-call.ec2.DescribeImages", failed)
    snap_spec = _snapshot_spec(spec, info)
    with pytest.raises(ProviderError) as caught:
        provider.create_snapshot(snap_spec)
    assert not caught.value.retryable and "disk read error" in caught.value.message
    got = provider.get_snapshot(SnapshotRef(snap_spec.snapshot_id, spec.region))
    assert got.state == SnapshotState.FAILED and got.message == "disk read error"


def test_delete_snapshot_finishes_an_interrupted_delete(provider, ec2):
    spec = new_spec()
    info = provider.create_instance(spec)
    snap_spec = _snapshot_spec(spec, info)
    snap = provider.create_snapshot(snap_spec)
    ec2.deregister_image(ImageId=snap.cloud_id)  # a worker died between the two steps
    assert _our_ebs_snapshots(ec2), "the EBS snapshot is left"
    provider.delete_snapshot(SnapshotRef(snap_spec.snapshot_id, spec.region, snap.cloud_id))
    assert _our_ebs_snapshots(ec2) == []


def test_delete_snapshot_leaves_images_it_does_not_own(provider, ec2):
    provider.delete_snapshot(SnapshotRef("s-not-ours", "us-east-1", NEWEST["ubuntu-24.04"]))
    assert ec2.describe_images(ImageIds=[NEWEST["ubuntu-24.04"]])["Images"]


def test_instance_from_a_missing_snapshot_is_invalid(provider):
    spec = new_spec(image=None, snapshot=SnapshotRef("s-nope", "us-east-1", "ami-0123456789abcdef0"))
    with pytest.raises(InvalidRequest):
        provider.create_instance(spec)


# ---------------------------------------------------------------------------
# catalog, listing, configuration


def test_catalog_describes_configured_regions_and_is_cached(provider):
    hook = Hook(provider, "DescribeInstanceTypes", lambda body: None)
    catalog = provider.catalog()
    assert list(catalog.regions) == ["us-east-1"]
    region = catalog.regions["us-east-1"]
    assert "us-east-1a" in region.zones
    assert region.machine_types["t3.micro"].vcpus == 2
    assert region.machine_types["t3.micro"].memory_gb == 1.0
    assert "a1.large" not in region.machine_types, "arm64 types are left out by default"
    assert re.match(catalog.native_image_pattern, "ami-0a00000000000a221")
    assert re.match(catalog.native_image_pattern, "ami-1e749f67")
    assert set(catalog.images) == set(IMAGE_ALIASES)
    assert provider.catalog() is catalog
    assert hook.calls == 1


def test_catalog_names_gpus_and_indicative_prices(provider):
    types = provider.catalog().regions["us-east-1"].machine_types
    g4 = types["g4dn.xlarge"]
    assert (g4.gpu_count, g4.gpu_type) == (1, "NVIDIA T4") and g4.hourly_usd and g4.hourly_usd > 0.5
    assert (types["t3.micro"].gpu_count, types["t3.micro"].gpu_type) == (0, None)
    assert types["t3.micro"].hourly_usd == 0.0104


def test_catalog_failure_is_a_provider_error(provider):
    Hook(provider, "DescribeRegions", _fail_with("UnauthorizedOperation", "You are not authorized"))
    with pytest.raises(ProviderError) as caught:
        provider.catalog()
    assert caught.value.code == "auth" and not caught.value.retryable


def test_unreachable_endpoint_is_retryable(aws_env):
    from tests.providers.aws_fixtures import _free_port

    provider = AwsProvider(AwsConfig(endpoint_url=f"http://127.0.0.1:{_free_port()}", max_attempts=1,
                                     connect_timeout=1.0, read_timeout=1.0))
    with pytest.raises(ProviderError) as caught:
        provider.catalog()
    assert caught.value.retryable


def test_max_attempts_counts_every_attempt_the_first_included(aws_env):
    """botocore's own ``max_attempts`` counts retries (one more attempt in all); ours counts attempts."""
    calls = []
    provider = AwsProvider(_config(aws_env, max_attempts=3))
    client = provider._client("us-east-1")
    client.meta.events.register("before-send.ec2.DescribeRegions", lambda request, **kw: calls.append(1) or
                                _throttled(request))
    with pytest.raises(ProviderError) as caught:
        provider.catalog()
    assert caught.value.retryable and len(calls) == 3


def _throttled(request):
    from botocore.awsrequest import AWSResponse

    body = (b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>Request limit exceeded."
            b"</Message></Error></Errors><RequestID>r</RequestID></Response>")
    return AWSResponse(request.url, 503, {}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **kwargs):
        yield self._body


def test_missing_credentials_are_an_operator_problem(aws_env, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    provider = AwsProvider(_config(aws_env))
    with pytest.raises(ProviderError) as caught:
        provider.list_managed()
    assert caught.value.code == "auth" and not caught.value.retryable


def test_aws_endpoint_url_environment_is_honoured(aws_env, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws_env.url)
    provider = AwsProvider(AwsConfig(poll_delay=0.02, consistency_grace=0.1))
    spec = new_spec()
    info = provider.create_instance(spec)
    assert provider.get_instance(spec.ref).cloud_id == info.cloud_id


def test_list_managed_covers_every_region(aws_env):
    provider = AwsProvider(_config(aws_env, regions=("us-east-1", "eu-west-1")))
    east, west = new_spec(), new_spec(region="eu-west-1")
    provider.create_instance(east)
    west_info = provider.create_instance(west)
    assert west_info.zone.startswith("eu-west-1")
    found = {(r.kind, r.region, r.instance_id) for r in provider.list_managed()}
    assert ("instance", "us-east-1", east.instance_id) in found
    assert ("instance", "eu-west-1", west.instance_id) in found
    assert ("disk", "eu-west-1", west.instance_id) in found
    provider.delete_instance(west.ref)
    states = {r.state for r in provider.list_managed() if r.instance_id == west.instance_id}
    assert states == {"terminated"}


def test_config_rejects_nonsense():
    assert AwsConfig(regions="eu-west-1").regions == ("eu-west-1",)
    with pytest.raises(ValueError):
        AwsConfig(regions=())
    with pytest.raises(ValueError):
        AwsConfig(poll_delay=0)


# ---------------------------------------------------------------------------
# error mapping


@pytest.mark.parametrize(("code", "status", "kind", "retryable"), [
    ("RequestLimitExceeded", 503, ProviderError, True),
    ("Throttling", 400, ProviderError, True),
    ("InternalError", 500, ProviderError, True),
    ("Unavailable", 503, ProviderError, True),
    ("SomethingNewAndBroken", 500, ProviderError, True),
    ("InsufficientInstanceCapacity", 500, CapacityError, False),
    ("VcpuLimitExceeded", 400, QuotaError, False),
    ("InstanceLimitExceeded", 400, QuotaError, False),
    ("InvalidAMIID.NotFound", 400, InvalidRequest, False),
    ("InvalidAMIID.Malformed", 400, InvalidRequest, False),
    ("InvalidParameterValue", 400, InvalidRequest, False),
    ("Unsupported", 400, InvalidRequest, False),
    ("InvalidInstanceID.NotFound", 400, NotFound, False),
    ("UnauthorizedOperation", 403, ProviderError, False),
    ("AuthFailure", 401, ProviderError, False),
    ("SomethingNew", 400, ProviderError, False),
])
def test_client_errors_map_to_typed_provider_errors(code, status, kind, retryable):
    err = map_client_error(_error(code, "Details from AWS.", status), "create the instance")
    assert type(err) is kind
    assert err.retryable is retryable
    assert "create the instance" in err.message
    assert "Details from AWS." in err.message and code in err.message
    if code in ("UnauthorizedOperation", "AuthFailure"):
        assert err.code == "auth"


def test_error_messages_never_carry_access_keys():
    err = map_client_error(_error("AuthFailure", "Key AKIAIOSFODNN7EXAMPLE is not valid"), "list")
    assert "AKIAIOSFODNN7EXAMPLE" not in str(err)
    assert "<redacted>" in str(err)


@pytest.mark.parametrize(("error", "retryable", "kind"), [
    (EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com"), True, ProviderError),
    (ReadTimeoutError(endpoint_url="https://ec2.us-east-1.amazonaws.com"), True, ProviderError),
    (NoCredentialsError(), False, ProviderError),
    (ParamValidationError(report="Invalid type for parameter MinCount"), False, InvalidRequest),
])
def test_botocore_errors_map_to_typed_provider_errors(error, retryable, kind):
    err = map_botocore_error(error, "create the instance")
    assert type(err) is kind and err.retryable is retryable
    assert translate(error, "x").__class__ is kind
    assert translate(ValueError("mine"), "x").__class__ is ValueError


@pytest.mark.parametrize(("code", "kind", "retryable"), [
    ("InsufficientInstanceCapacity", CapacityError, False),
    ("VcpuLimitExceeded", QuotaError, False),
    ("RequestLimitExceeded", ProviderError, True),
])
def test_run_instances_failures_surface_typed_and_leave_nothing(provider, ec2, code, kind, retryable):
    Hook(provider, "RunInstances", _fail_with(code, "We currently do not have sufficient t3.micro capacity."))
    with pytest.raises(kind) as caught:
        provider.create_instance(new_spec())
    assert caught.value.retryable is retryable
    assert "sufficient t3.micro capacity" in caught.value.message
    assert ec2.describe_instances(Filters=[{"Name": "tag:managed-by", "Values": ["onebox"]}])["Reservations"] == []


def test_throttled_lookup_is_retryable_then_works(provider):
    spec = new_spec()
    provider.create_instance(spec)
    Hook(provider, "DescribeInstances", _fail_with("RequestLimitExceeded", "Request limit exceeded.", 503, times=1))
    with pytest.raises(ProviderError) as caught:
        provider.get_instance(spec.ref)
    assert caught.value.retryable
    assert provider.get_instance(spec.ref).instance_id == spec.instance_id


# ---------------------------------------------------------------------------
# stop, start, reboot


def test_stop_start_reboot_make_the_ec2_calls_once(provider, ec2):
    spec = new_spec()
    created = provider.create_instance(spec)
    ref = InstanceRef(spec.instance_id, spec.region, None, created.cloud_id)
    calls = {op: Hook(provider, op, lambda body: None) for op in ("StopInstances", "StartInstances",
                                                                  "RebootInstances")}
    provider.stop_instance(ref, WAIT)
    provider.stop_instance(ref, WAIT)
    assert ec2.describe_instances(InstanceIds=[created.cloud_id])["Reservations"][0]["Instances"][0][
        "State"]["Name"] == "stopped"
    provider.reboot_instance(ref, WAIT)  # stopped: a start, not a RebootInstances
    assert (calls["StopInstances"].calls, calls["StartInstances"].calls, calls["RebootInstances"].calls) == (1, 1, 0)
    info = provider.reboot_instance(ref, WAIT)
    assert calls["RebootInstances"].calls == 1
    assert info.public_ip == ec2.describe_instances(InstanceIds=[created.cloud_id])["Reservations"][0][
        "Instances"][0]["PublicIpAddress"]
    provider.start_instance(ref, WAIT)
    assert calls["StartInstances"].calls == 1, "starting a running instance makes no call"


def test_power_verbs_on_a_terminated_instance_are_not_found(provider):
    spec = new_spec()
    created = provider.create_instance(spec)
    ref = InstanceRef(spec.instance_id, spec.region, None, created.cloud_id)
    provider.delete_instance(ref)
    for verb in (provider.stop_instance, provider.start_instance, provider.reboot_instance):
        with pytest.raises(NotFound):
            verb(ref, WAIT)


def test_a_stop_that_times_out_is_retryable(provider, monkeypatch):
    spec = new_spec()
    created = provider.create_instance(spec)
    ref = InstanceRef(spec.instance_id, spec.region, None, created.cloud_id)
    real = provider._describe_id

    def still_stopping(client, cloud_id):  # a slow stop: EC2 keeps saying "stopping"
        return {**real(client, cloud_id), "State": {"Name": "stopping", "Code": 64}}

    monkeypatch.setattr(provider, "_describe_id", still_stopping)
    with pytest.raises(ProviderError) as caught:
        provider.stop_instance(ref, 0.3)
    assert caught.value.retryable and caught.value.code == "timeout"
    monkeypatch.undo()
    assert provider.stop_instance(ref, WAIT).state == InstanceState.STOPPED
