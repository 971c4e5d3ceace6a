"""Indicative hourly prices and GPU facts the clouds' catalog APIs do not give.

Cloud catalog APIs name machine types, vCPUs and memory (and, on AWS and GCP,
GPUs) but not prices: those live in separate billing APIs needing extra
permissions. The web dashboard only needs a hint to compare sizes, so this
module keeps a small table of on-demand Linux list prices in USD per hour
(AWS us-east-1, GCP us-central1, Azure eastus, as published late 2026; other
regions differ, and discounts are ignored). A type not listed has no price:
the catalog says ``hourly_usd: null`` rather than guessing.
"""

from __future__ import annotations

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


def azure_gpu_type(size: str, gpu_count: int) -> str | None:
    if gpu_count <= 0:
        return None
    for marker, name in AZURE_GPU_FAMILIES:
        if marker in size:
            return name
    return "GPU"


def gcp_accelerator_name(accelerator_type: str) -> str:
    return GCP_ACCELERATOR_NAMES.get(accelerator_type.rsplit("/", 1)[-1], accelerator_type.rsplit("/", 1)[-1])
