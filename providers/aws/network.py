"""Where the AWS provider puts instances: default VPC, default subnet, shared SSH group.

``Network`` finds each region's default VPC and its default subnets (cached
for ``cache_ttl``), picks a subnet in a zone offering the machine type, and
makes, once per VPC, the ``onebox-ssh`` security group allowing TCP 22 from
``ssh_cidr``. It is shared by all threads of one ``AwsProvider``.
"""

from __future__ import annotations

import logging
import threading
import time
import zlib
from typing import Any

from botocore.exceptions import ClientError

from providers.aws.config import AwsConfig
from providers.aws.mapping import paginate, tag_list
from providers.aws.errors import error_code
from providers.base import MANAGED_BY_TAG, MANAGED_BY_VALUE, InstanceSpec, InvalidRequest, ProviderError

log = logging.getLogger(__name__)


class Network:
    """The default network of each region, and the SSH security group in it."""

    def __init__(self, config: AwsConfig) -> None:
        self.config = config
        self._lock = threading.Lock()  # the subnet cache
        self._group_lock = threading.Lock()  # one security-group setup at a time
        self._subnets: dict[str, tuple[float, str, list[dict[str, Any]]]] = {}
        self._groups: dict[tuple[str, str], str] = {}

    def subnet_for(self, client: Any, spec: InstanceSpec) -> dict[str, Any]:
        """A default subnet of the default VPC, in ``spec.zone`` or a zone offering the type.

        The choice among the suitable zones is a stable hash of the instance id, so
        a repeated create sends the same parameters (RunInstances' ClientToken insists).
        """
        _, subnets = self.default_network(client, spec.region)
        if spec.zone:
            subnets = [s for s in subnets if s["AvailabilityZone"] == spec.zone]
            if not subnets:
                raise InvalidRequest(f"Zone {spec.zone} has no default subnet in AWS {spec.region}")
        else:
            offered = {o["Location"] for o in paginate(
                client, "describe_instance_type_offerings", "InstanceTypeOfferings",
                LocationType="availability-zone",
                Filters=[{"Name": "instance-type", "Values": [spec.machine_type]}])}
            subnets = [s for s in subnets if s["AvailabilityZone"] in offered] or subnets  # none: EC2 will say
        subnets = sorted(subnets, key=lambda s: (s["AvailabilityZone"], s["SubnetId"]))
        return subnets[zlib.crc32(spec.instance_id.encode()) % len(subnets)]

    def default_network(self, client: Any, region: str) -> tuple[str, list[dict[str, Any]]]:
        """The default VPC's id and its available default subnets."""
        with self._lock:
            hit = self._subnets.get(region)
        if hit is not None and time.monotonic() - hit[0] < self.config.cache_ttl:
            return hit[1], hit[2]
        vpcs = client.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}]).get("Vpcs") or []
        if not vpcs:
            raise ProviderError(f"AWS {region} has no default VPC; onebox needs one there "
                                "(an operator can create it with 'aws ec2 create-default-vpc')",
                                retryable=False)
        vpc_id = vpcs[0]["VpcId"]
        subnets = [s for s in paginate(client, "describe_subnets", "Subnets", Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "default-for-az", "Values": ["true"]},
        ]) if s.get("State", "available") == "available"]
        if not subnets:
            raise ProviderError(f"The default VPC of AWS {region} has no default subnet",
                                retryable=False)
        with self._lock:
            self._subnets[region] = (time.monotonic(), vpc_id, subnets)
        return vpc_id, subnets

    def forget(self, region: str) -> None:
        """Drop what is cached for ``region`` (an operator changed its network)."""
        with self._lock:
            self._subnets.pop(region, None)
        with self._group_lock:
            for key in [k for k in self._groups if k[0] == region]:
                del self._groups[key]

    def security_group(self, client: Any, region: str, vpc_id: str) -> str:
        """The shared group letting ssh_cidr reach TCP 22, found or made once per VPC."""
        key = (region, vpc_id)
        with self._group_lock:
            group_id = self._groups.get(key)
            if group_id:
                return group_id
            name = self.config.security_group_name
            lookup = {"Filters": [{"Name": "vpc-id", "Values": [vpc_id]},
                                  {"Name": "group-name", "Values": [name]}]}
            groups = client.describe_security_groups(**lookup).get("SecurityGroups") or []
            if not groups:
                try:
                    group_id = client.create_security_group(
                        GroupName=name, VpcId=vpc_id,
                        Description="onebox: SSH access to onebox instances",
                        TagSpecifications=[{"ResourceType": "security-group", "Tags": tag_list(
                            {MANAGED_BY_TAG: MANAGED_BY_VALUE, "Name": name})}],
                    )["GroupId"]
                    log.info("aws: created security group %s (%s) in %s", name, group_id, vpc_id)
                except ClientError as exc:  # another onebox process made it meanwhile
                    if error_code(exc) != "InvalidGroup.Duplicate":
                        raise
                    groups = client.describe_security_groups(**lookup).get("SecurityGroups") or []
                    if not groups:
                        raise
            if groups:
                group_id = groups[0]["GroupId"]
            self._ensure_ssh_rule(client, group_id, groups[0] if groups else None)
            self._groups[key] = group_id
            return group_id

    def _ensure_ssh_rule(self, client: Any, group_id: str, group: dict[str, Any] | None) -> None:
        cidr = self.config.ssh_cidr
        v6 = ":" in cidr
        ranges_key, cidr_key = ("Ipv6Ranges", "CidrIpv6") if v6 else ("IpRanges", "CidrIp")
        for perm in (group or {}).get("IpPermissions") or []:
            if perm.get("IpProtocol") == "tcp" and perm.get("FromPort") == 22 and perm.get("ToPort") == 22:
                if any(r.get(cidr_key) == cidr for r in perm.get(ranges_key) or []):
                    return
        try:
            client.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                ranges_key: [{cidr_key: cidr, "Description": "onebox ssh"}],
            }])
        except ClientError as exc:
            if error_code(exc) != "InvalidPermission.Duplicate":
                raise
