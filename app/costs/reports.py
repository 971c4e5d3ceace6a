"""Cost reports: the ledger's segments summed per period and per group, as JSON rows or CSV.

Pure functions of the segments, so the JSON and the CSV of one report are the same numbers; both
round to the micro-dollar (6 decimals) only when written out.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from typing import Iterable

from app.costs.ledger import KINDS, Granularity, Segment, periods

NO_TEAM = "(none)"
CSV_COLUMNS = ("period", "group", "label", "compute_usd", "disk_usd", "public_ip_usd", "snapshot_usd", "total_usd")


def group_of(segment: Segment, group_by: str) -> tuple[str, str | None]:
    r = segment.record
    if group_by == "instance":
        return r.id, r.name
    if group_by == "provider":
        return r.provider, None
    if group_by == "region":
        return f"{r.provider}/{r.region}", None
    if group_by == "machine_type":
        return (f"{r.provider}/{r.machine_type}" if r.machine_type else f"{r.provider}/snapshots"), None
    if group_by == "user":
        return r.owner, None
    if group_by == "team":
        return r.team or NO_TEAM, None
    raise ValueError(group_by)


def rows(items: Iterable[Segment], start: dt.datetime, end: dt.datetime, group_by: str,
         granularity: Granularity) -> list[dict]:
    """One row per period and group with a cost (or a free resource) in it, newest period last,
    the costliest group first within a period."""
    items = list(items)
    out: list[dict] = []
    for period in periods(start, end, granularity):
        groups: dict[str, dict] = {}
        for segment in items:
            if segment.end <= period.start or segment.start >= period.end:
                continue
            key, label = group_of(segment, group_by)
            row = groups.setdefault(key, {"period": period.label, "group": key, "label": label,
                                          **{f"{k}_usd": 0.0 for k in KINDS}})
            row[f"{segment.kind}_usd"] += segment.usd_between(period.start, period.end)
        for row in groups.values():
            row["total_usd"] = sum(row[f"{k}_usd"] for k in KINDS)
        out.extend(sorted(groups.values(), key=lambda r: (-r["total_usd"], r["group"])))
    return out


def rounded(row: dict) -> dict:
    return {k: (round(v, 6) + 0.0 if isinstance(v, float) else v) for k, v in row.items()}


def unpriced(items: Iterable[Segment]) -> list[str]:
    return sorted({f"{s.record.provider}/{s.record.region}/{s.record.machine_type}" for s in items if not s.priced})


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    text = str(value)
    # A spreadsheet would run a cell starting with these as a formula (user names come from tokens).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(report_rows: Iterable[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for row in report_rows:
        writer.writerow([_cell(row[c]) for c in CSV_COLUMNS])
    return buffer.getvalue()
