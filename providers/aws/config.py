"""Settings of the AWS provider: which regions, where EC2 lives, how long to wait.

``AwsConfig`` is plain data the app builds from its own settings and hands to
``AwsProvider``. It holds no credentials: boto3 finds them through its default
chain (environment, shared files, SSO, instance/task roles).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AwsConfig:
    """How the AWS provider talks to EC2."""

    # Regions onebox may use; the catalog offers exactly these (those enabled in the account).
    regions: tuple[str, ...] = ("us-east-1",)
    # EC2 endpoint; None keeps boto3's own choice, which honours AWS_ENDPOINT_URL(_EC2).
    endpoint_url: str | None = None
    # Who may reach sshd on the instances (the shared security group's one ingress rule).
    ssh_cidr: str = "0.0.0.0/0"
    # Let create_image reboot the instance for a file-system-consistent image.
    reboot_on_snapshot: bool = False
    # Longest wait for a delete, an image or an eventually consistent read (seconds).
    wait_timeout: float = 900.0
    # Pause between two polls while waiting (seconds).
    poll_delay: float = 5.0
    # How long an instance id we were given may stay invisible to EC2 right
    # after its creation before we believe it is gone (seconds).
    consistency_grace: float = 15.0
    # botocore "standard" retry mode: total attempts per API call, including the first.
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    # How long the catalog, the default network and resolved image aliases are kept (seconds).
    cache_ttl: float = 3600.0
    # CPU architectures of the machine types offered (the image aliases are amd64 builds).
    architectures: tuple[str, ...] = ("x86_64",)
    # EBS type of the root volume.
    volume_type: str = "gp3"
    # Name of the shared security group created once per VPC.
    security_group_name: str = "onebox-ssh"
    # This onebox deployment: tagged onebox-deployment on everything made; list_managed skips other
    # deployments' resources. None (tools, tests): no such tag, everything listed.
    deployment: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.regions, str):  # a lone "eu-west-1" would iterate as letters
            object.__setattr__(self, "regions", (self.regions,))
        else:
            object.__setattr__(self, "regions", tuple(self.regions))
        object.__setattr__(self, "architectures", tuple(self.architectures))
        if not self.regions:
            raise ValueError("AwsConfig.regions must name at least one region")
        if self.poll_delay <= 0 or self.wait_timeout <= 0:
            raise ValueError("AwsConfig.poll_delay and wait_timeout must be positive")
        if self.max_attempts < 1:
            raise ValueError("AwsConfig.max_attempts must be at least 1")
