"""Tables some tests add to the end of a run (the kill matrix, the cloud-fault matrix, the scale-out).

Tests append plain JSON-able rows to the lists below. Under pytest-xdist (`make test` runs the suite in
worker processes) each worker's rows are handed to the controller when the worker ends
(``tests/conftest.py``: ``pytest_sessionfinish`` → ``pytest_testnodedown``), which prints them all.
"""

from __future__ import annotations

ROWS: dict[str, list] = {
    "kill_matrix": [],  # tests/e2e/test_kill_matrix.py: one dict per (provider, flow, step)
    "scale_out": [],  # tests/e2e/test_scale_out.py: one dict per run
    "cloud_faults": [],  # tests/e2e/fault_matrix.py: the lines of each stand's matrix
}
KILL_MATRIX = ROWS["kill_matrix"]
SCALE_OUT = ROWS["scale_out"]
CLOUD_FAULTS = ROWS["cloud_faults"]


def merge(rows: dict[str, list]) -> None:
    for name, items in rows.items():
        ROWS.setdefault(name, []).extend(items)


def write_summary(terminalreporter) -> None:
    write = terminalreporter.write_line
    if CLOUD_FAULTS:
        terminalreporter.section("cloud faults: provider × call × fault → outcome")
        for line in CLOUD_FAULTS:
            write(line)
    for run in SCALE_OUT:
        terminalreporter.section("scale-out: 2 API processes, workers on one database")
        write(f"{run['instances']} instances, {run['latency_s']:.0f} s per cloud call: 1 worker {run['one_worker_s']:.1f} s, "
              f"3 workers {run['three_workers_s']:.1f} s, speed-up {run['speedup']:.2f}× (target 2.5×); the 100 creates "
              f"accepted after {run['one_worker_accepted_s']:.1f} s and {run['three_workers_accepted_s']:.1f} s")
    if not KILL_MATRIX:
        return
    providers = sorted({row["provider"] for row in KILL_MATRIX})
    steps = list(dict.fromkeys((row["flow"], row["step"]) for row in KILL_MATRIX))
    cell = {(row["provider"], row["flow"], row["step"]): row for row in KILL_MATRIX}
    terminalreporter.section("kill matrix: a worker SIGKILLed at each step, then a second worker and the reaper")
    write("cell = outcome / resources unaccounted for / duplicates / reaped afterwards")
    write(f"{'flow':<9}{'step':<17}" + "".join(f"{p:<24}" for p in providers))
    for flow, step in steps:
        row = f"{flow:<9}{step:<17}"
        for provider in providers:
            c = cell.get((provider, flow, step))
            text = "{outcome} / {unaccounted} / {duplicates} / {reaped}".format(**c) if c else "-"
            row += f"{text:<24}"
        write(row)
