"""End-to-end suite hooks: the kill matrix's table at the end of the run."""

from __future__ import annotations

KILL_MATRIX: list[dict] = []  # rows appended by tests/e2e/test_kill_matrix.py


def pytest_terminal_summary(terminalreporter):
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
