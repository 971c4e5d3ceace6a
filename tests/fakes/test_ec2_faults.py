"""The EC2 fault proxy: real boto3 through it to moto, and what the AWS provider makes of each fault."""

from __future__ import annotations

import pytest

from providers.aws import AwsConfig, AwsProvider
from providers.base import CapacityError, InstanceRef, ProviderError, QuotaError
from tests.fakes.ec2_faults import Ec2FaultProxy
from tests.providers.aws_fixtures import aws_env, moto_ec2, new_spec  # noqa: F401  (fixtures)


@pytest.fixture
def proxy(aws_env):  # noqa: F811
    import boto3

    # moto builds a region's state on its first call after a reset, which can take a second or more
    boto3.client("ec2", region_name="us-east-1", endpoint_url=aws_env.url).describe_vpcs()
    proxy = Ec2FaultProxy(aws_env.url).start()
    yield proxy
    proxy.stop()


def provider(proxy, **overrides) -> AwsProvider:
    values = dict(endpoint_url=proxy.url, poll_delay=0.05, consistency_grace=0.5, max_attempts=2, read_timeout=3.0,
                  connect_timeout=1.0)
    values.update(overrides)
    return AwsProvider(AwsConfig(**values))


def test_calls_pass_through_and_are_logged(proxy):
    info = provider(proxy).create_instance(new_spec())
    assert info.cloud_id.startswith("i-")
    assert ("RunInstances", 200, None) in proxy.calls


def test_boto3_retries_throttling_itself_before_the_provider_sees_it(proxy):
    proxy.add_fault(action="RunInstances", code="RequestLimitExceeded", count=1)
    provider(proxy).create_instance(new_spec())
    assert [c for c in proxy.calls if c[0] == "RunInstances"] == [("RunInstances", 503, "error"),
                                                                 ("RunInstances", 200, None)]


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "Throttling", "InternalError", "Unavailable"])
def test_transient_codes_beyond_boto3s_attempts_are_retryable(proxy, code):
    proxy.add_fault(action="RunInstances", code=code, count=2)
    with pytest.raises(ProviderError) as caught:
        provider(proxy).create_instance(new_spec())
    assert caught.value.retryable and code in caught.value.message


@pytest.mark.parametrize("code,error", [("InsufficientInstanceCapacity", CapacityError),
                                        ("InstanceLimitExceeded", QuotaError), ("VcpuLimitExceeded", QuotaError)])
def test_capacity_and_quota_are_final(proxy, code, error):
    proxy.add_fault(action="RunInstances", code=code, count=-1)
    with pytest.raises(error) as caught:
        provider(proxy).create_instance(new_spec())
    assert not caught.value.retryable


def test_a_held_answer_is_a_retryable_timeout_and_the_retry_makes_no_second_instance(proxy, aws_env):  # noqa: F811
    import boto3

    spec = new_spec()
    proxy.add_fault(action="RunInstances", hold=3.5, count=1)
    with pytest.raises(ProviderError) as caught:
        provider(proxy, max_attempts=1).create_instance(spec)
    assert caught.value.retryable
    info = provider(proxy).create_instance(spec)  # the engine's next try: resumes what the lost answers made
    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=aws_env.url)
    found = [i["InstanceId"] for r in ec2.describe_instances(
        Filters=[{"Name": "tag:onebox-instance-id", "Values": [spec.instance_id]}])["Reservations"]
        for i in r["Instances"]]
    assert found == [info.cloud_id]


def test_contains_matches_our_id_through_the_aws_ids_it_learned(proxy):
    p = provider(proxy)
    spec = new_spec()
    info = p.create_instance(spec)
    proxy.add_fault(action="DescribeInstances", code="InternalError", contains=spec.instance_id, count=-1)
    with pytest.raises(ProviderError):
        p.wait_running(InstanceRef(spec.instance_id, spec.region, cloud_id=info.cloud_id), 5)
    other = new_spec()
    p.create_instance(other)  # not ours: passes


# --- stop, start, reboot: the proxy faults them by our id, and the provider's next try finishes the job


def _running(p, spec):
    info = p.create_instance(spec)
    return InstanceRef(spec.instance_id, spec.region, cloud_id=info.cloud_id)


STOP, START, REBOOT = ("StopInstances", "stop_instance", "stopped"), ("StartInstances", "start_instance", "running"), \
    ("RebootInstances", "reboot_instance", "running")


@pytest.mark.parametrize("action,verb,end,fault", [
    (*STOP, dict(code="RequestLimitExceeded")), (*STOP, dict(code="InternalError")), (*STOP, dict(hold=3.5)),
    (*START, dict(code="Unavailable")), (*START, dict(hold=3.5)),
    (*REBOOT, dict(code="RequestLimitExceeded")), (*REBOOT, dict(hold=3.5)),
], ids=["stop-throttle", "stop-5xx", "stop-timeout", "start-5xx", "start-timeout", "reboot-throttle",
        "reboot-timeout"])
def test_power_calls_fault_retryably_and_the_next_try_ends_in_the_state(proxy, action, verb, end, fault):
    p = provider(proxy, max_attempts=1)
    spec = new_spec()
    ref = _running(p, spec)
    if action == "StartInstances":
        p.stop_instance(ref, 10)
    other = new_spec()  # another instance's calls pass: the fault is aimed at ours
    p.create_instance(other)
    added = proxy.add_fault(action=action, contains=spec.instance_id, count=1, **fault)
    with pytest.raises(ProviderError) as caught:
        getattr(p, verb)(ref, 10)
    assert caught.value.retryable, caught.value
    assert proxy.fired(added.id) == 1
    info = getattr(p, verb)(ref, 10)  # what the engine does next
    assert info.state.value == end
    assert p.get_instance(ref).state.value == end
    if end == "running":
        assert info.public_ip == p.get_instance(ref).public_ip


def test_boto3_absorbs_one_throttled_stop(proxy):
    p = provider(proxy)  # two attempts per call
    spec = new_spec()
    ref = _running(p, spec)
    proxy.add_fault(action="StopInstances", code="RequestLimitExceeded", contains=spec.instance_id, count=1)
    assert p.stop_instance(ref, 10).state.value == "stopped"
    assert [c[1:] for c in proxy.calls if c[0] == "StopInstances"] == [(503, "error"), (200, None)]
