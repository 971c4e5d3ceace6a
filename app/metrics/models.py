"""What an agent posts, and what users read back."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

MAX_SAMPLES_PER_POST = 100
MAX_GPUS = 16


class GpuSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, le=255)
    name: str | None = Field(default=None, max_length=128)
    utilization_percent: float | None = Field(default=None, ge=0, le=100)
    memory_used_mib: float | None = Field(default=None, ge=0, le=10_000_000)
    memory_total_mib: float | None = Field(default=None, ge=0, le=10_000_000)
    temperature_c: float | None = Field(default=None, ge=-50, le=200)
    power_draw_w: float | None = Field(default=None, ge=0, le=10_000)
    power_limit_w: float | None = Field(default=None, ge=0, le=10_000)


class AgentSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    at: dt.datetime
    cpu_percent: float | None = Field(default=None, ge=0, le=100)
    load_avg: list[float] | None = Field(default=None, min_length=3, max_length=3)
    memory_percent: float | None = Field(default=None, ge=0, le=100)
    disk_percent: float | None = Field(default=None, ge=0, le=100)
    net_rx_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1)
    net_tx_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1)
    disk_read_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1, description="since boot, all disks")
    disk_write_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1, description="since boot, all disks")
    ssh_sessions: int | None = Field(default=None, ge=0, le=100_000, description="logged-in SSH sessions")
    uptime_seconds: float | None = Field(default=None, ge=0, le=10**10)
    gpus: list[GpuSample] = Field(default_factory=list, max_length=MAX_GPUS)


class AgentMetrics(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{
            "instance_id": "i-01jd2x4h5k6m7n8p9q0r1s2t3v",
            "samples": [{"at": "2026-11-22T01:00:00Z", "cpu_percent": 12.5, "load_avg": [0.3, 0.2, 0.1],
                         "memory_percent": 41.2, "disk_percent": 18.0, "net_rx_bytes": 123456,
                         "net_tx_bytes": 654321, "disk_read_bytes": 1048576, "disk_write_bytes": 2097152,
                         "ssh_sessions": 1, "uptime_seconds": 3600.0,
                         "gpus": [{"index": 0, "name": "NVIDIA A100-SXM4-40GB", "utilization_percent": 37.0,
                                   "memory_used_mib": 1024.0, "memory_total_mib": 40960.0,
                                   "temperature_c": 45.0, "power_draw_w": 95.12, "power_limit_w": 400.0}]}],
        }]},
    )

    instance_id: str = Field(min_length=1, max_length=64)
    samples: list[AgentSample] = Field(min_length=1, max_length=MAX_SAMPLES_PER_POST)


class MetricsAccepted(BaseModel):
    accepted: int
    duplicates: int = 0


class MetricPoint(AgentSample):
    model_config = ConfigDict(extra="ignore")


class MetricSeries(BaseModel):
    items: list[MetricPoint]
