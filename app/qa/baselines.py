"""Baselines and verdicts: is a measurement as good as this machine type usually does?

A baseline belongs to (suite, check, provider, machine type). An admin may set
one (``PUT /v1/admin/qa-baselines/...``: a value and a tolerance); otherwise,
for checks whose ``auto_baseline`` is on, it is the median of that check's
values in the last ``qa_baseline_runs`` passed runs on the same provider and
machine type, once there are at least ``qa_baseline_min_runs`` of them (a
median, so one odd run does not move it). A measurement fails when it is worse
than the baseline by more than the tolerance: below it for "higher is better",
above it for "lower is better". Pure functions; the service reads the history.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal

from app.qa.suites import Check


@dataclass(frozen=True)
class Baseline:
    value: float
    tolerance_percent: float
    source: Literal["admin", "history"]
    samples: int = 0  # history: how many passed runs the median is of

    def as_doc(self) -> dict:
        return {"value": self.value, "tolerance_percent": self.tolerance_percent, "source": self.source,
                "samples": self.samples}


def from_history(values: list[float], check: Check, min_samples: int) -> Baseline | None:
    """The median of ``values`` (newest first, already limited to the runs that count)."""
    if not check.auto_baseline or check.kind != "measure" or len(values) < min_samples or not values:
        return None
    return Baseline(statistics.median(values), check.tolerance_percent, "history", len(values))


def limit_of(check: Check, baseline: Baseline) -> float:
    """The worst value that still passes."""
    factor = baseline.tolerance_percent / 100.0
    return baseline.value * (1 - factor) if check.better == "higher" else baseline.value * (1 + factor)


def format_value(value: float, unit: str = "") -> str:
    return f"{_fmt(value)} {unit}".strip()


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def judge(check: Check, value: float, baseline: Baseline | None) -> tuple[str, str]:
    """(verdict, message) of one measurement: ``pass`` or ``fail``, and why, in words."""
    unit = f" {check.unit}" if check.unit else ""
    shown = f"{_fmt(value)}{unit}"
    if baseline is None:
        why = "no baseline yet" if check.auto_baseline else "no baseline set (an admin may set one)"
        return "pass", f"{shown} ({why})"
    source = "set by an admin" if baseline.source == "admin" else f"median of {baseline.samples} passed runs"
    against = f"the baseline {_fmt(baseline.value)}{unit} ({source}, tolerance {baseline.tolerance_percent:g}%)"
    limit = limit_of(check, baseline)
    if baseline.value == 0:
        change = ""
    else:
        delta = (value - baseline.value) / abs(baseline.value) * 100
        change = f"{abs(delta):.1f}% {'above' if delta >= 0 else 'below'} "
    worse = value < limit if check.better == "higher" else value > limit
    if worse:
        return "fail", f"{shown} is {change or 'worse than '}{against}: worse than the tolerance allows"
    return "pass", f"{shown}, {change or 'at '}{against}"


def verdict_of(verdicts: list[str]) -> str:
    """A run's outcome from its checks: any ``fail`` → failed; else any ``error`` → error; else passed."""
    if "fail" in verdicts:
        return "failed"
    if "error" in verdicts:
        return "error"
    return "passed"
