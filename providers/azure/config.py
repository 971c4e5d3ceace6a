"""Settings of the Azure provider: which subscription, group and regions, where ARM is, how long to wait.

``AzureConfig`` is plain data the app builds from its own settings. It holds no
secret but ``static_token``, a fixed bearer token for the local ARM fake only:
real credentials come from ``DefaultAzureCredential``.
"""

from __future__ import annotations

from dataclasses import dataclass

ARM_SCOPE = "https://management.azure.com/.default"


@dataclass(frozen=True)
class AzureConfig:
    """How onebox reaches Azure and lays out its resources."""

    subscription_id: str
    resource_group: str = "onebox"
    locations: tuple[str, ...] = ("eastus",)  # regions onebox offers; the group lives in the first
    base_url: str | None = None  # None: the real ARM endpoint; the fake's URL for development
    ca_bundle: str | None = None  # PEM file to trust instead of the system CAs (the fake's CA)
    static_token: str | None = None  # development against the fake only: a fixed bearer token, no Azure login
    credential_scope: str = ARM_SCOPE
    vnet_name: str = "onebox-vnet"  # one per region: "<vnet_name>-<region>"
    subnet_name: str = "onebox-subnet"
    vnet_address_space: str = "10.42.0.0/16"
    subnet_prefix: str = "10.42.0.0/20"
    ssh_cidr: str = "0.0.0.0/0"
    os_disk_type: str = "StandardSSD_LRS"
    default_image: str = "ubuntu-24.04"
    machine_types: tuple[str, ...] | None = None  # limit the catalog to these sizes; None: all the API lists
    polling_interval: float = 5.0  # seconds between LRO polls (tests: 0)
    wait_timeout: float = 900.0  # longest wait for one long-running operation or for deletion to settle
    request_timeout: float = 60.0  # connect and read timeout of one HTTP request
    retry_total: int = 3  # azure-core's own retries of 429/5xx/connection errors per request
    retry_backoff_factor: float = 0.8
    retry_backoff_max: float = 30.0
    catalog_ttl: float = 3600.0
