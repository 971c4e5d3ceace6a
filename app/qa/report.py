"""A QA run's report: charts drawn with matplotlib, a self-contained HTML page, a zip, JUnit XML.

Charts use matplotlib's object API on the Agg canvas (never ``pyplot``, whose
global state is not thread-safe), and are rendered in a thread, off the event
loop. The HTML page embeds every chart as a PNG data URI and escapes every
text it shows, so it opens anywhere, offline, and API data cannot inject
markup. The zip holds the page, each chart as a PNG, the run as JSON and its
results as JUnit XML (one test case per check and instance: what CI systems
display).

Charts of a run (``chart_names``): ``checks`` (every measurement against its
baseline and tolerance), ``throughput`` (iperf3, each TCP stream over time,
both directions), ``latency`` (the TCP round trip's distribution and
percentiles), ``iops`` (random reads by block size), ``disk_latency`` (fio's
completion-latency percentiles), and ``trend`` (the suite's main check in
earlier runs on the same provider and machine type, with the baseline).
``history_png`` draws the comparisons of ``GET /v1/qa-history/chart``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import html
import io
import json
import statistics
import zipfile
from typing import Any
from xml.etree import ElementTree as ET

from app.clock import as_utc
from app.qa.models import QaRunPublic
from app.qa.suites import SUITES

COLORS = {"pass": "#2e9d5b", "fail": "#d64541", "skip": "#9aa3ad", "error": "#e08a1e", "none": "#6c7a89"}
RATIO_CAP = 300.0
PALETTE = ["#3b6fd8", "#e0793a", "#2e9d5b", "#a24bcf", "#d64541", "#1aa3a3", "#8c6d46", "#6c7a89"]


def _figure(width: float = 8.0, height: float = 3.6):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3g}"
    return f"{text} {unit}".strip()


def _when(value: dt.datetime | str) -> dt.datetime:
    return as_utc(value) if isinstance(value, dt.datetime) else as_utc(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))


def _empty(figure, message: str):
    ax = figure.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", color="#6c7a89", fontsize=11)


# --- the charts of one run --------------------------------------------------------------------------

def chart_checks(run: dict[str, Any]) -> bytes:
    measured = [r for r in run["results"] if r["value"] is not None and r["verdict"] in ("pass", "fail")]
    figure = _figure(8.0, max(2.2, 0.42 * len(measured) + 1.2))
    if not measured:
        _empty(figure, "no measurement to compare (pass/fail checks only, or none yet)")
        return _png(figure)
    ax = figure.add_subplot()
    labels, ratios, colors = [], [], []
    for r in measured:
        baseline = r.get("baseline")
        reference = baseline["value"] if baseline and baseline["value"] else None
        ratio = r["value"] / reference * 100 if reference else 100.0
        where = f" [{r['target']}]" if r.get("target") else ""
        labels.append(f"{r['check']}{where}\n{r['instance_id'][-6:]}")
        ratios.append(ratio)
        colors.append(COLORS[r["verdict"]] if reference else COLORS["none"])
    positions = list(range(len(measured)))[::-1]
    shown = [min(ratio, RATIO_CAP) for ratio in ratios]  # one far-off value must not squash the others
    ax.barh(positions, shown, color=colors, height=0.6)
    for y, r, ratio in zip(positions, measured, shown):
        baseline = r.get("baseline")
        text = _fmt(r["value"], r["unit"])
        if baseline:
            tol = baseline["tolerance_percent"]
            limit = 100 - tol if r["better"] == "higher" else 100 + tol
            ax.plot([limit, limit], [y - 0.35, y + 0.35], color="#222", linewidth=1.2, linestyle=":")
            text += f" (baseline {_fmt(baseline['value'], r['unit'])})"
        else:
            text += " (no baseline)"
        if ratio >= RATIO_CAP:
            text = f"≥{RATIO_CAP:.0f}%: " + text
        ax.text(ratio + 1, y, text, va="center", fontsize=8)
    ax.axvline(100, color="#222", linewidth=1, linestyle="--")
    ax.set_yticks(positions, labels, fontsize=8)
    ax.set_xlabel("% of baseline (dashed: the baseline; dotted: the tolerance limit; grey: no baseline yet)")
    ax.set_xlim(0, max(200, max(shown) * 1.6))
    ax.set_title(f"{run['suite']} checks against their baselines", fontsize=11)
    return _png(figure)


def chart_throughput(run: dict[str, Any]) -> bytes:
    series = [r for r in run["results"] if r["check"] in ("tcp_mbps", "tcp_reverse_mbps") and r.get("details")]
    figure = _figure(8.0, 3.4 * max(1, len(series)))
    if not series:
        _empty(figure, "no TCP throughput measured")
        return _png(figure)
    axes = figure.subplots(len(series), 1, squeeze=False)[:, 0]
    for ax, r in zip(axes, series):
        streams = r["details"]["streams"]
        for index, stream in enumerate(streams):
            ax.plot(stream["seconds"], stream["mbps"], marker="o", markersize=3,
                    color=PALETTE[index % len(PALETTE)], label=f"stream {index + 1}")
        if len(streams) > 1:  # the streams report the same intervals: add them up interval by interval
            count = min(len(s["mbps"]) for s in streams)
            totals = [sum(s["mbps"][i] for s in streams) for i in range(count)]
            ax.plot(streams[0]["seconds"][:count], totals, color="#222", linewidth=1.5, linestyle="--",
                    label="all streams")
        ax.set_title(f"TCP {r['details']['direction']}: {_fmt(r['value'], 'Mbit/s')} ({r['verdict']})", fontsize=10)
        ax.set_xlabel("seconds")
        ax.set_ylabel("Mbit/s")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", ncols=min(5, len(streams) + 1))
    return _png(figure)


def chart_latency(run: dict[str, Any]) -> bytes:
    found = next((r for r in run["results"] if r["check"] == "latency_p50_ms" and r.get("details")), None)
    figure = _figure(8.0, 3.4)
    if found is None:
        _empty(figure, "no round trip measured")
        return _png(figure)
    details = found["details"]
    left, right = figure.subplots(1, 2, width_ratios=[2, 1])
    samples = details["samples_ms"]
    left.plot(range(1, len(samples) + 1), samples, marker="o", markersize=3, color=PALETTE[0])
    left.set_title(f"TCP round trips to {details['target']}", fontsize=10)
    left.set_xlabel("connection")
    left.set_ylabel("ms")
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    names = [f"p{item['p']:g}" for item in details["percentiles"]]
    values = [item["ms"] for item in details["percentiles"]]
    right.bar(names, values, color=PALETTE[1])
    for i, v in enumerate(values):
        right.text(i, v, _fmt(v, "ms"), ha="center", va="bottom", fontsize=8)
    right.set_title("percentiles", fontsize=10)
    right.set_ylim(0, max(values) * 1.3 if values else 1)
    return _png(figure)


def chart_iops(run: dict[str, Any]) -> bytes:
    found = [r for r in run["results"] if r["check"] == "rand_read_iops" and r.get("details")]
    figure = _figure(8.0, 3.4)
    if not found:
        _empty(figure, "no random-read IOPS measured")
        return _png(figure)
    ax = figure.add_subplot()
    sizes = sorted({bs for r in found for bs in r["details"]["iops_by_block_size"]},
                   key=lambda bs: _bytes(bs))
    width = 0.8 / len(found)
    for index, r in enumerate(found):
        values = [r["details"]["iops_by_block_size"].get(bs, 0) for bs in sizes]
        xs = [i + index * width for i in range(len(sizes))]
        bars = ax.bar(xs, values, width=width, color=PALETTE[index % len(PALETTE)], label=r["instance_id"])
        for bar, v in zip(bars, values):
            ax.text(bar.get_x() + bar.get_width() / 2, v, _fmt(v), ha="center", va="bottom", fontsize=7)
        baseline = r.get("baseline")
        if baseline and "4k" in sizes:
            x = sizes.index("4k") + index * width
            ax.plot([x - width / 2, x + width / 2], [baseline["value"]] * 2, color="#222", linestyle="--",
                    label="4k baseline" if index == 0 else None)
    ax.set_xticks([i + width * (len(found) - 1) / 2 for i in range(len(sizes))], sizes)
    ax.set_xlabel("block size (random read)")
    ax.set_ylabel("IOPS")
    ax.set_title("random-read IOPS by block size", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    return _png(figure)


def _bytes(size: str) -> int:
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    return int(size[:-1]) * units[size[-1]] if size and size[-1] in units else int(size or 0)


def chart_disk_latency(run: dict[str, Any]) -> bytes:
    found = [r for r in run["results"] if r["check"] == "rand_read_iops" and r.get("details")]
    figure = _figure(8.0, 3.4)
    if not found:
        _empty(figure, "no latency percentiles measured")
        return _png(figure)
    ax = figure.add_subplot()
    index = 0
    for r in found:
        for kind, pct in r["details"]["latency_percentiles"].items():
            ax.plot([f"p{item['p']:g}" for item in pct], [item["ms"] for item in pct], marker="o",
                    color=PALETTE[index % len(PALETTE)], label=f"{kind.replace('_', ' ')} 4k ({r['instance_id'][-6:]})")
            index += 1
    ax.set_yscale("log")
    ax.set_ylabel("completion latency, ms (log)")
    ax.set_title("fio latency percentiles", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _png(figure)


def chart_trend(run: dict[str, Any], history: dict[str, Any] | None) -> bytes:
    if not history or not history["items"]:
        figure = _figure(8.0, 3.0)
        _empty(figure, "no earlier runs to compare with yet")
        return _png(figure)
    return _history_figure(history, "time")


# --- comparisons across runs ---------------------------------------------------------------------------

def _history_figure(history: dict[str, Any], by: str) -> bytes:
    items = history["items"]
    unit = history["unit"]
    figure = _figure(8.0, 3.8)
    if not items:
        _empty(figure, f"no ended runs measured {history['check']} yet")
        return _png(figure)
    ax = figure.add_subplot()
    groups: dict[tuple[str, str], list[dict]] = {}
    for item in items:
        groups.setdefault((item["provider"], item["machine_type"]), []).append(item)
    baselines = {(b["provider"], b["machine_type"]): b for b in history["baselines"]}
    if by == "time":
        for index, (key, points) in enumerate(sorted(groups.items())):
            color = PALETTE[index % len(PALETTE)]
            points = sorted(points, key=lambda p: _when(p["at"]))
            ax.plot([_when(p["at"]) for p in points], [p["value"] for p in points], marker="o", color=color,
                    label=f"{key[0]} · {key[1]}")
            for p in points:
                if p["verdict"] == "fail":
                    ax.plot([_when(p["at"])], [p["value"]], marker="x", markersize=10, color=COLORS["fail"])
            baseline = baselines.get(key)
            if baseline:
                ax.axhline(baseline["value"], color=color, linestyle="--", linewidth=1,
                           label=f"baseline {key[1]} ({baseline['source']})")
                tol = baseline["tolerance_percent"] / 100
                low, high = (baseline["value"] * (1 - tol), baseline["value"]) if history["better"] == "higher" \
                    else (baseline["value"], baseline["value"] * (1 + tol))
                ax.axhspan(low, high, color=color, alpha=0.08)
        ax.set_xlabel("run time (UTC)")
        times = [_when(p["at"]) for p in items]
        if max(times) - min(times) < dt.timedelta(hours=1):  # a single run: an hour around it, not years
            middle = min(times) + (max(times) - min(times)) / 2
            ax.set_xlim(middle - dt.timedelta(minutes=30), middle + dt.timedelta(minutes=30))
        figure.autofmt_xdate()
    else:
        keys = sorted(groups)
        medians = [statistics.median(p["value"] for p in groups[k]) for k in keys]
        lows = [m - min(p["value"] for p in groups[k]) for m, k in zip(medians, keys)]
        highs = [max(p["value"] for p in groups[k]) - m for m, k in zip(medians, keys)]
        bars = ax.bar(range(len(keys)), medians, yerr=[lows, highs], capsize=4, width=0.5,
                      color=[PALETTE[i % len(PALETTE)] for i in range(len(keys))])
        ax.set_xlim(-0.75, max(len(keys), 3) - 0.25)
        for i, (bar, key) in enumerate(zip(bars, keys)):
            runs = len(groups[key])
            ax.text(bar.get_x() + bar.get_width() / 2, medians[i] + highs[i],
                    f"{_fmt(medians[i])}\n{runs} run{'s' if runs != 1 else ''}", ha="center", va="bottom", fontsize=7)
            baseline = baselines.get(key)
            if baseline:
                ax.plot([i - 0.4, i + 0.4], [baseline["value"]] * 2, color="#222", linestyle="--",
                        label="baseline" if i == 0 else None)
        ax.set_xticks(range(len(keys)), [f"{p}\n{m}" for p, m in keys], fontsize=8)
        if baselines:
            ax.legend(fontsize=7)
    ax.set_ylabel(unit or "value")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"{history['suite']} · {history['check']}" + (" over time" if by == "time" else
                                                                " by provider and machine type (median, min–max)"),
                 fontsize=10)
    if by == "time":
        ax.legend(fontsize=7)
    return _png(figure)


async def history_png(history: dict[str, Any], by: str) -> bytes:
    return await asyncio.to_thread(_history_figure, history, by)


# --- JUnit XML ----------------------------------------------------------------------------------------

def junit_xml(run: dict[str, Any]) -> bytes:
    """One test case per result; ``fail`` is a failure, ``error`` an error, ``skip`` skipped. A run that ended
    in error before its checks (``run["error"]`` and no result) is one errored test case."""
    results = run["results"]
    suite = ET.Element("testsuite", name=f"onebox-qa.{run['suite']}", tests=str(max(1, len(results))),
                       failures=str(sum(r["verdict"] == "fail" for r in results)),
                       errors=str(sum(r["verdict"] == "error" for r in results) + (0 if results or not run.get("error") else 1)),
                       skipped=str(sum(r["verdict"] == "skip" for r in results)),
                       timestamp=str(run["created_at"]))
    properties = ET.SubElement(suite, "properties")
    for name, value in (("run_id", run["id"]), ("status", run["status"])):
        ET.SubElement(properties, "property", name=name, value=str(value))
    for t in run["targets"]:
        ET.SubElement(properties, "property", name=f"instance.{t['instance_id']}",
                      value=f"{t['provider']}/{t['region']}/{t['machine_type']}")
    for r in results:
        where = f"[{r['target']}]" if r.get("target") else ""
        case = ET.SubElement(suite, "testcase", classname=f"{run['suite']}.{r['instance_id']}",
                             name=f"{r['check']}{where}")
        if r["verdict"] == "fail":
            ET.SubElement(case, "failure", message=r["message"]).text = r["message"]
        elif r["verdict"] == "error":
            ET.SubElement(case, "error", message=r["message"]).text = r["message"]
        elif r["verdict"] == "skip":
            ET.SubElement(case, "skipped", message=r["message"])
        out = ET.SubElement(case, "system-out")
        out.text = r["message"]
    if not results and run.get("error"):
        case = ET.SubElement(suite, "testcase", classname=f"{run['suite']}", name="run")
        ET.SubElement(case, "error", message=run["error"]["message"]).text = json.dumps(run["error"])
    suites = ET.Element("testsuites", name="onebox-qa")
    suites.append(suite)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


# --- the report --------------------------------------------------------------------------------------

class ReportBuilder:
    """One run's report; ``load`` reads what it needs (the run, and the trend's history) up front."""

    def __init__(self, run: dict[str, Any], history: dict[str, Any] | None) -> None:
        self.run = run
        self.history = history

    @classmethod
    async def load(cls, qa, principal, doc: dict[str, Any]) -> "ReportBuilder":
        cancelling = await qa.cancel_flags([doc])
        run = QaRunPublic.from_doc(doc, doc["_id"] in cancelling).model_dump(mode="json")
        suite = SUITES[run["suite"]]
        history = None
        if suite.main_check and run["targets"]:
            first = run["targets"][0]
            history = await qa.history(principal, run["suite"], suite.main_check, provider=first["provider"],
                                       machine_type=first["machine_type"], limit=50)
            history = json.loads(json.dumps(history, default=str))
        return cls(run, history)

    def chart_names(self) -> list[str]:
        suite = SUITES[self.run["suite"]]
        return list(suite.charts) + (["trend"] if suite.main_check else [])

    def _draw(self, name: str) -> bytes:
        if name == "trend":
            return chart_trend(self.run, self.history)
        return {"checks": chart_checks, "throughput": chart_throughput, "latency": chart_latency,
                "iops": chart_iops, "disk_latency": chart_disk_latency}[name](self.run)

    async def png(self, name: str) -> bytes:
        return await asyncio.to_thread(self._draw, name)

    def _all(self) -> dict[str, bytes]:
        return {name: self._draw(name) for name in self.chart_names()}

    def _page(self, charts: dict[str, bytes]) -> str:
        run = self.run
        e = html.escape
        rows = []
        for r in run["results"]:
            baseline = r.get("baseline")
            rows.append(
                f"<tr class='{e(r['verdict'])}'><td>{e(r['check'])}{' [' + e(r['target']) + ']' if r.get('target') else ''}"
                f"</td><td class='mono'>{e(r['instance_id'])}</td><td><span class='v {e(r['verdict'])}'>"
                f"{e(r['verdict'])}</span></td><td class='num'>{e(_fmt(r['value'], r['unit']))}</td>"
                f"<td class='num'>{e(_fmt(baseline['value'], r['unit']) + ' ±' + format(baseline['tolerance_percent'], 'g') + '% (' + baseline['source'] + ')') if baseline else '—'}</td>"
                f"<td>{e(r['message'])}</td></tr>")
        targets = "".join(
            f"<tr><td class='mono'>{e(t['instance_id'])}</td><td>{e(t['name'])}</td><td>{e(t['role'])}</td>"
            f"<td>{e(t['provider'])}</td><td>{e(t['region'])}</td><td>{e(t['machine_type'])}</td>"
            f"<td>{e(t['image'] or '—')}</td></tr>" for t in run["targets"])
        images = "".join(
            f"<figure><img alt='{e(name)} chart' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"<figcaption>{e(name)}</figcaption></figure>" for name, png in charts.items())
        params = ", ".join(f"{e(k)}={e(str(v))}" for k, v in run["params"].items()) or "defaults"
        error = f"<p class='error'>{e(run['error']['code'])}: {e(run['error']['message'])}</p>" if run.get("error") else ""
        summary = ", ".join(f"{n} {e(k)}" for k, n in sorted(run["summary"].items()))
        generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>onebox QA {e(run['suite'])} · {e(run['id'])}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; color: #1d2733; margin: 2rem auto; max-width: 1100px; padding: 0 1rem; }}
h1 {{ font-size: 1.5rem; }} .mono {{ font-family: ui-monospace, monospace; font-size: 12px; }}
table {{ border-collapse: collapse; width: 100%; margin: .5rem 0 1.5rem; }}
th, td {{ text-align: left; padding: .35rem .5rem; border-bottom: 1px solid #e3e8ee; vertical-align: top; }}
td.num {{ text-align: right; white-space: nowrap; }}
.v, .status {{ padding: .1rem .45rem; border-radius: .6rem; font-size: 12px; color: #fff; background: #6c7a89; }}
.v.pass, .status.passed {{ background: {COLORS['pass']}; }} .v.fail, .status.failed {{ background: {COLORS['fail']}; }}
.v.error, .status.error {{ background: {COLORS['error']}; }} .v.skip {{ background: {COLORS['skip']}; }}
figure {{ margin: 1rem 0; }} img {{ max-width: 100%; border: 1px solid #e3e8ee; }}
.error {{ color: {COLORS['fail']}; }} .muted {{ color: #6c7a89; }}
</style></head><body>
<h1>onebox QA · {e(run['suite'])} <span class="status {e(run['status'])}">{e(run['status'])}</span></h1>
<p class="muted">Run <span class="mono">{e(run['id'])}</span> by {e(run['owner'])}, created {e(str(run['created_at']))},
finished {e(str(run.get('finished_at') or '—'))}. Parameters: {params}. Results: {summary or 'none'}.</p>
{error}
<h2>Instances</h2>
<table><thead><tr><th>instance</th><th>name</th><th>role</th><th>provider</th><th>region</th><th>machine type</th><th>image</th></tr></thead>
<tbody>{targets}</tbody></table>
<h2>Checks</h2>
<table><thead><tr><th>check</th><th>instance</th><th>verdict</th><th>value</th><th>baseline</th><th>why</th></tr></thead>
<tbody>{''.join(rows)}</tbody></table>
<h2>Charts</h2>
{images}
<p class="muted">Generated {generated} by onebox.</p>
</body></html>
"""

    async def html(self) -> str:
        return await asyncio.to_thread(lambda: self._page(self._all()))

    def _zip(self) -> bytes:
        charts = self._all()
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("report.html", self._page(charts))
            for name, png in charts.items():
                archive.writestr(f"{name}.png", png)
            archive.writestr("run.json", json.dumps(self.run, indent=2))
            archive.writestr("junit.xml", junit_xml(self.run))
        return out.getvalue()

    async def zip(self) -> bytes:
        return await asyncio.to_thread(self._zip)
