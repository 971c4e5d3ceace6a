"""End-to-end suite hooks: the kill matrix's table at the end of the run."""

from __future__ import annotations

KILL_MATRIX: list[dict] = []  # rows appended by tests/e2e/test_kill_matrix.py
SCALE_OUT: list[dict] = []  # the result of tests/e2e/test_scale_out.py


def pytest_terminal_summary(terminalreporter):
    for run in SCALE_OUT:
        terminalreporter.section("scale-out: 2 API processes, workers on one database")
        terminalreporter.write_line(
            f"{run['instances']} instances, {run['latency_s']:.0f} s per cloud call: 1 worker {run['one_worker_s']:.1f} s, "
            f"3 workers {run['three_workers_s']:.1f} s, speed-up {run['speedup']:.2f}× (target 2.5×); the 100 creates "
            f"accepted after {run['accepted_s'][1]:.1f} s and {run['accepted_s'][3]:.1f} s")
    if not KILL_MATRIX:
        return
    providers = sorted({row["provider"] for row in KILL_MATRIX})
    steps = list(dict.fromkeys((row["flow"], row["step"]) for row in KILL_MATRIX))
    cell = {(row["provider"], row["flow"], row["step"]): row for row in KILL_MATRIX}
    write = terminalreporter.write_line
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
