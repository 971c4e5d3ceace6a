"""What a client may send about QA runs and baselines, and what it gets back."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.instances.models import InstanceError
from app.qa.suites import SUITES

SuiteName = Literal["smoke", "network", "disk", "cpu", "memory", "gpu"]
assert set(SuiteName.__args__) == set(SUITES)  # the Literal documents the table in OpenAPI; keep them one

Verdict = Literal["pass", "fail", "skip", "error"]
INSTANCE_ID = r"^i-[0-9a-hjkmnp-tv-z]{26}$"


class QaRunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"suite": "network", "instances": ["i-01jd0000000000000000000000", "i-01jd0000000000000000000001"],
         "params": {"duration_seconds": 5, "parallel_streams": 2}}]})

    suite: SuiteName
    instances: list[str] = Field(min_length=1, max_length=8,
                                 description="your running instances; network: two (client, server) or one "
                                             "(against onebox's host)")
    params: dict[str, Any] | None = Field(default=None, description="the suite's parameters (GET /v1/qa-suites "
                                                                    "lists them); unknown names are refused")


class QaBaselineView(BaseModel):
    value: float
    tolerance_percent: float
    source: Literal["admin", "history"]
    samples: int = Field(default=0, description="history: how many passed runs the median is of")


class QaResult(BaseModel):
    check: str
    title: str
    instance_id: str
    target: str | None = Field(default=None, description="what was measured when an instance has several "
                                                         "(a bucket mount)")
    verdict: Verdict
    value: float | None = None
    unit: str = ""
    better: Literal["higher", "lower"] | None = None
    message: str
    baseline: QaBaselineView | None = None
    details: dict[str, Any] | None = Field(default=None, description="the data behind the charts (per-stream "
                                                                     "series, percentiles, IOPS by block size)")
    step: str
    at: dt.datetime


class QaTarget(BaseModel):
    instance_id: str
    role: str = Field(description="network: client or server; otherwise subject")
    name: str
    provider: str
    region: str
    machine_type: str
    image: str | None = None
    gpu_count: int = 0
    gpu_type: str | None = None


class QaRunPublic(BaseModel):
    id: str
    owner: str
    suite: str
    status: str
    params: dict[str, Any]
    targets: list[QaTarget]
    results: list[QaResult] = Field(default_factory=list, description="every check's result so far, in order")
    summary: dict[str, int] = Field(default_factory=dict, description="results by verdict")
    error: InstanceError | None = None
    cancel_requested: bool = False
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @classmethod
    def from_doc(cls, doc: dict[str, Any], cancel_requested: bool = False) -> "QaRunPublic":
        results = flatten_results(doc)
        summary: dict[str, int] = {}
        for r in results:
            summary[r["verdict"]] = summary.get(r["verdict"], 0) + 1
        fields = {k: v for k, v in doc.items() if k in cls.model_fields and k not in ("results",)}
        return cls(id=doc["_id"], **fields, results=[QaResult(**r) for r in results], summary=summary,
                   cancel_requested=cancel_requested)


def flatten_results(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's results in step order (they are stored per step, each step writing its own list)."""
    by_step = doc.get("results") or {}
    order = list(doc.get("steps") or by_step)
    return [r for step in order for r in by_step.get(step, [])]


class QaRunList(BaseModel):
    items: list[QaRunPublic]
    next_cursor: str | None = None


class QaBaselineSet(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"value": 9000, "tolerance_percent": 20}]})

    value: float = Field(ge=0, description="in the check's unit")
    tolerance_percent: float | None = Field(default=None, ge=0, le=1000,
                                            description="how much worse still passes; default: the check's own")


class QaBaselineAdmin(BaseModel):
    suite: str
    check: str
    provider: str
    machine_type: str
    value: float
    tolerance_percent: float
    set_by: str
    set_at: dt.datetime


class QaHistoryPoint(BaseModel):
    run_id: str
    instance_id: str
    target: str | None = None
    provider: str
    region: str
    machine_type: str
    value: float
    verdict: Verdict
    run_status: str
    at: dt.datetime


class QaHistory(BaseModel):
    suite: str
    check: str
    unit: str
    better: Literal["higher", "lower"] | None
    items: list[QaHistoryPoint] = Field(description="newest first")
    baselines: list[dict[str, Any]] = Field(description="the effective baseline of each (provider, machine type) "
                                                        "in items: {provider, machine_type, value, "
                                                        "tolerance_percent, source, samples}")


class QaCheckView(BaseModel):
    name: str
    title: str
    kind: str
    unit: str
    better: str | None
    tolerance_percent: float
    auto_baseline: bool


class QaParamView(BaseModel):
    name: str
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    choices: list[str] = Field(default_factory=list)
    description: str


class QaSuiteView(BaseModel):
    name: str
    description: str
    min_instances: int
    max_instances: int
    checks: list[QaCheckView]
    params: list[QaParamView]
    charts: list[str]
    main_check: str
