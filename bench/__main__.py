"""Run the benchmarks: ``python -m bench [scenario ...] [--quick]`` (``make bench``).

Every scenario measures its figures against a baseline taken in the same run,
so the ratios hold on any machine. The rows of the scenarios run replace
theirs in bench/results.json, and bench/results.md is written from it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from bench.common import Row

# scenario name → module (``list`` is a builtin's name, hence ``listing``)
SCENARIOS = {"ingest": "ingest", "list": "listing", "claim": "claim", "series": "series", "provision": "provision",
             "configure": "configure", "agent": "agent", "scale": "scale"}
HERE = Path(__file__).parent


def machine() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                          if line.startswith("MemTotal")))
    except (OSError, StopIteration):
        mem_kb = 0
    return {"cores": os.cpu_count(), "cpu": model, "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "database": "the embedded database (mongo-java-server 1.47 + onebox's launcher, H2 MVStore file) on tmpfs"}


def fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# onebox benchmark results",
        "",
        f"Measured {results['updated']} on {m['cores']} cores, {m['ram_gb']} GB RAM, {m['cpu']}; {m['os']}, "
        f"Python {m['python']}; {m['database']}; load average (1 min) {m.get('load', 'unknown')}. "
        f"Quick mode: {', '.join(results.get('quick', [])) or 'none'}.",
        "Every ratio is against a baseline measured in the same run (`python -m bench`, see bench/NOTES.md).",
        "",
        "| scenario | metric | value | baseline | ratio | target | met? |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["rows"]:
        baseline = f"{fmt(r['baseline'])} ({r['baseline_label']})" if r["baseline"] is not None else ""
        ratio = f"{r['ratio']:.2f}×" if r["ratio"] is not None else ""
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        value = f"{fmt(r['value'])} {r['unit']}"
        if r["note"]:
            value += f" <br><sub>{r['note']}</sub>"
        lines.append(f"| {r['scenario']} | {r['metric']} | {value} | {baseline} | {ratio} | {r['target']} | {met} |")
    return "\n".join(lines) + "\n"


README = HERE.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def update_readme(results: dict) -> None:
    """Replace what stands between the markers in README.md with the machine and the table."""
    text = README.read_text()
    if START not in text or END not in text:
        print("README.md has no bench markers; left alone")
        return
    table = markdown(results).split("\n", 2)[2]  # without the title
    before, rest = text.split(START, 1)
    after = rest.split(END, 1)[1]
    README.write_text(f"{before}{START}\n{table}{END}{after}")
    print("updated the Performance section of README.md")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", metavar="scenario",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs, for development")
    parser.add_argument("--readme", action="store_true",
                        help="also put the table into README.md's Performance section (make bench does, on a full run)")
    args = parser.parse_args(argv)
    chosen = args.scenarios or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    path = HERE / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {"rows": []}
    failed = []
    load_before = os.getloadavg()[0]
    for name in chosen:
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        started = time.monotonic()
        module = importlib.import_module(f"bench.{SCENARIOS[name]}")
        try:
            rows: list[Row] = asyncio.run(module.run(quick=args.quick))
        except Exception:  # noqa: BLE001 - one broken scenario must not hide the others' figures
            traceback.print_exc()
            failed.append(name)
            rows = [Row(name, "scenario failed (see the output of make bench)", float("nan"), "")]
        for r in rows:
            met = {True: "ok", False: "MISSED", None: ""}[r.met]
            ratio = f"  ratio {r.ratio:.2f}" if r.ratio is not None else ""
            print(f"  {r.metric:45s} {fmt(r.value):>10s} {r.unit:8s}{ratio}  {r.target} {met}  {r.note}", flush=True)
        print(f"   ({time.monotonic() - started:.0f} s)", flush=True)
        results["rows"] = [r for r in results["rows"] if r["scenario"] != name] + [r.as_dict() for r in rows]
        quick = set(results.get("quick", [])) - {name}
        if args.quick:
            quick.add(name)
        results["quick"] = sorted(quick)
    order = list(SCENARIOS)
    results["rows"].sort(key=lambda r: order.index(r["scenario"]) if r["scenario"] in order else len(order))
    results["machine"] = {**machine(), "load": f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"}
    results["updated"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    path.write_text(json.dumps(results, indent=1, allow_nan=True) + "\n")
    (HERE / "results.md").write_text(markdown(results))
    print(f"wrote {HERE / 'results.md'} and {path}")
    if args.readme:
        update_readme(results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
