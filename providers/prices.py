"""List prices, dated and sourced, and GPU facts the clouds' catalog APIs do not give.

Cloud catalog APIs name machine types, vCPUs and memory (and, on AWS and GCP,
GPUs) but not prices: those live in separate billing APIs needing extra
permissions. onebox keeps one small price sheet per cloud instead: on-demand
Linux list prices in USD (one basis region per cloud, discounts ignored),
each sheet dated and naming the page it was read from. The catalog shows the
hourly prices as hints; the cost ledger (``app.costs``) charges with all of
them — compute per hour, root disk per GB-month (730 hours, the clouds' own
convention), a public IPv4 address per hour, and snapshot storage per
GB-month — unless an admin overrides a machine type's hourly price
(``PUT /v1/admin/prices/...``). A type not listed has no price: the catalog
says ``hourly_usd: null`` rather than guessing. The local provider (and any
provider without a sheet) is free unless an admin prices it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

HOURS_PER_MONTH = 730.0  # what "per GB-month" divides by on every cloud's price page

HOURLY_USD: dict[str, dict[str, float]] = {
    "aws": {
        "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t3.large": 0.0832, "t3.xlarge": 0.1664,
        "m5.large": 0.096, "m5.xlarge": 0.192, "m6i.large": 0.096, "m6i.xlarge": 0.192, "m7i.large": 0.1008,
        "c5.large": 0.085, "c6i.large": 0.085, "r5.large": 0.126, "r6i.large": 0.126,
        "g4dn.xlarge": 0.526, "g4dn.2xlarge": 0.752, "g5.xlarge": 1.006, "g5.2xlarge": 1.212, "g6.xlarge": 0.8048,
        "p3.2xlarge": 3.06, "p4d.24xlarge": 32.7726,
    },
    "gcp": {
        "e2-micro": 0.0084, "e2-small": 0.0168, "e2-medium": 0.0335, "e2-standard-2": 0.067,
        "e2-standard-4": 0.134, "n2-standard-2": 0.0971, "n2-standard-4": 0.1942, "n2-standard-8": 0.3885,
        "c3-standard-4": 0.2014, "g2-standard-4": 0.7068, "g2-standard-8": 0.8536, "a2-highgpu-1g": 3.6732,
    },
    "azure": {
        "Standard_B1s": 0.0104, "Standard_B2s": 0.0416, "Standard_B2ms": 0.0832, "Standard_D2s_v5": 0.096,
        "Standard_D4s_v5": 0.192, "Standard_E2s_v5": 0.126, "Standard_F2s_v2": 0.0846,
        "Standard_NC4as_T4_v3": 0.526, "Standard_NC8as_T4_v3": 0.752, "Standard_NC6s_v3": 3.06,
        "Standard_NC24ads_A100_v4": 3.673,
    },
    "local": {"local": 0.0},
}

@dataclass(frozen=True)
class PriceSheet:
    """Everything one cloud charges an instance for, as list prices on one date."""

    provider: str
    as_of: str  # when these figures were read from ``source`` (YYYY-MM)
    source: str  # the public price pages they come from
    basis_region: str  # the region they are quoted for; other regions differ by a few percent
    hourly_usd: dict[str, float] = field(default_factory=dict)  # compute, per machine type
    unlisted_hourly_usd: float | None = None  # a type not listed: None = unknown (clouds), 0.0 = free (this machine)
    disk_gb_month_usd: float = 0.0  # the root disk, per GB-month, while it exists (stopped included)
    public_ip_hourly_usd: float = 0.0  # one public IPv4 address
    # When the address costs: "running" for an address released at stop (EC2's automatic public IP, GCE's
    # ephemeral one), "exists" for a static address kept until deletion (Azure's Standard public IP).
    public_ip_while: Literal["running", "exists"] = "running"
    snapshot_gb_month_usd: float = 0.0  # per GB of the disk snapshotted (an upper bound: clouds bill blocks used)


SHEETS: dict[str, PriceSheet] = {
    "aws": PriceSheet(
        provider="aws", as_of="2026-11", basis_region="us-east-1",
        source="https://aws.amazon.com/ec2/pricing/on-demand/ (Linux); https://aws.amazon.com/ebs/pricing/ "
               "(gp3, snapshots standard tier); https://aws.amazon.com/vpc/pricing/ (public IPv4 address)",
        hourly_usd=HOURLY_USD["aws"], disk_gb_month_usd=0.08, public_ip_hourly_usd=0.005, public_ip_while="running",
        snapshot_gb_month_usd=0.05),
    "gcp": PriceSheet(
        provider="gcp", as_of="2026-11", basis_region="us-central1",
        source="https://cloud.google.com/compute/vm-instance-pricing; https://cloud.google.com/compute/disks-image-"
               "pricing (pd-standard, the API default; standard snapshots); https://cloud.google.com/vpc/network-"
               "pricing (external IPv4 address in use)",
        hourly_usd=HOURLY_USD["gcp"], disk_gb_month_usd=0.04, public_ip_hourly_usd=0.005, public_ip_while="running",
        snapshot_gb_month_usd=0.05),
    "azure": PriceSheet(
        provider="azure", as_of="2026-11", basis_region="eastus",
        source="https://azure.microsoft.com/pricing/details/virtual-machines/linux/; https://azure.microsoft.com/"
               "pricing/details/managed-disks/ (Standard SSD LRS, E-tiers per GB; snapshots Standard HDD LRS); "
               "https://azure.microsoft.com/pricing/details/ip-addresses/ (Standard static IPv4)",
        hourly_usd=HOURLY_USD["azure"], disk_gb_month_usd=0.075, public_ip_hourly_usd=0.005, public_ip_while="exists",
        snapshot_gb_month_usd=0.05),
    # This machine: free. An on-premises team prices its own machines with the admin route.
    "local": PriceSheet(provider="local", as_of="2026-11", basis_region="local", source="this machine: free",
                        hourly_usd=HOURLY_USD["local"], unlisted_hourly_usd=0.0),
}


def sheet_for(provider: str) -> PriceSheet:
    """The provider's sheet; a provider without one (qemu) is free like the local provider."""
    return SHEETS.get(provider) or PriceSheet(provider=provider, as_of="2026-11", basis_region="",
                                              source="no price sheet: free unless an admin prices it",
                                              unlisted_hourly_usd=0.0)


# Azure's SKU list counts GPUs ("GPUs" capability) but does not name them; the size family does.
AZURE_GPU_FAMILIES: tuple[tuple[str, str], ...] = (
    ("_T4_", "NVIDIA T4"),
    ("_A100_", "NVIDIA A100"),
    ("_A10_", "NVIDIA A10"),
    ("_H100_", "NVIDIA H100"),
    ("Standard_NC", "NVIDIA V100"),  # NCv3 (NC6s_v3 …), after the more specific names above
    ("Standard_ND", "NVIDIA"),
    ("Standard_NV", "NVIDIA"),
)

# GCE names accelerators by id; people know them by these names.
GCP_ACCELERATOR_NAMES: dict[str, str] = {
    "nvidia-l4": "NVIDIA L4",
    "nvidia-tesla-t4": "NVIDIA T4",
    "nvidia-tesla-v100": "NVIDIA V100",
    "nvidia-tesla-a100": "NVIDIA A100 40GB",
    "nvidia-a100-80gb": "NVIDIA A100 80GB",
    "nvidia-h100-80gb": "NVIDIA H100 80GB",
}


def hourly_usd(provider: str, machine_type: str) -> float | None:
    """The indicative on-demand price of one machine type, or None when onebox does not know it."""
    return HOURLY_USD.get(provider, {}).get(machine_type)


def listed_hourly_usd(provider: str, machine_type: str) -> float | None:
    """The sheet's compute price of one machine type: listed, free (no sheet), or None (unknown)."""
    sheet = sheet_for(provider)
    return sheet.hourly_usd.get(machine_type, sheet.unlisted_hourly_usd)


def azure_gpu_type(size: str, gpu_count: int) -> str | None:
    if gpu_count <= 0:
        return None
    for marker, name in AZURE_GPU_FAMILIES:
        if marker in size:
            return name
    return "GPU"


def gcp_accelerator_name(accelerator_type: str) -> str:
    return GCP_ACCELERATOR_NAMES.get(accelerator_type.rsplit("/", 1)[-1], accelerator_type.rsplit("/", 1)[-1])
