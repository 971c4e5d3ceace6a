"""Baselines, verdicts and suite parameters: the pure rules."""

from __future__ import annotations

import pytest

from app.qa.baselines import Baseline, from_history, judge, limit_of, verdict_of
from app.qa.suites import SUITES, ParamError, job_steps, resolve_params

NET = SUITES["network"]
TCP = NET.check("tcp_mbps")
JITTER = NET.check("udp_jitter_ms")


def test_history_is_the_median_once_there_are_enough_runs():
    assert from_history([100.0, 90.0], TCP, min_samples=3) is None
    baseline = from_history([100.0, 90.0, 1000.0], TCP, min_samples=3)
    assert baseline == Baseline(100.0, TCP.tolerance_percent, "history", 3), "one odd run does not move it"
    assert from_history([1.0, 1.0, 1.0], JITTER, min_samples=3) is None, "noisy checks: admin baselines only"


def test_higher_is_better():
    baseline = Baseline(1000.0, 20.0, "admin")
    assert limit_of(TCP, baseline) == 800.0
    verdict, message = judge(TCP, 850.0, baseline)
    assert verdict == "pass" and "15.0% below the baseline 1,000 Mbit/s (set by an admin, tolerance 20%)" in message
    verdict, message = judge(TCP, 790.0, baseline)
    assert verdict == "fail" and message.startswith("790 Mbit/s is 21.0% below the baseline 1,000 Mbit/s")
    assert judge(TCP, 5000.0, baseline)[0] == "pass"


def test_lower_is_better():
    baseline = Baseline(0.5, 100.0, "history", samples=4)
    assert judge(JITTER, 0.9, baseline)[0] == "pass"
    verdict, message = judge(JITTER, 1.2, baseline)
    assert verdict == "fail" and "140.0% above the baseline 0.5 ms (median of 4 passed runs, tolerance 100%)" in message
    assert judge(JITTER, 0.0, baseline)[0] == "pass"


def test_without_baseline_a_measure_passes_and_says_so():
    assert judge(TCP, 12.5, None) == ("pass", "12.5 Mbit/s (no baseline yet)")
    assert judge(JITTER, 0.0123, None) == ("pass", "0.0123 ms (no baseline set (an admin may set one))")


def test_run_verdict():
    assert verdict_of(["pass", "skip"]) == "passed"
    assert verdict_of(["pass", "error", "fail"]) == "failed"
    assert verdict_of(["pass", "error"]) == "error"
    assert verdict_of([]) == "passed"


def test_params_defaults_overrides_and_errors():
    disk = SUITES["disk"]
    assert resolve_params(disk, None)["runtime_seconds"] == 10
    got = resolve_params(disk, {"runtime_seconds": 2, "size_mb": 16.0, "block_sizes": ["1m", "4k", "4k"]})
    assert got == {"runtime_seconds": 2, "size_mb": 16, "block_sizes": ["4k", "1m"]}
    cases = [
        ({"parallel_streams": 2}, "params.parallel_streams", "not a parameter of the disk suite"),
        ({"runtime_seconds": 0}, "params.runtime_seconds", "between 1 and 300"),
        ({"runtime_seconds": 1.5}, "params.runtime_seconds", "whole number"),
        ({"runtime_seconds": True}, "params.runtime_seconds", "must be a number"),
        ({"size_mb": "big"}, "params.size_mb", "must be a number"),
        ({"block_sizes": ["3k"]}, "params.block_sizes", "unknown values ['3k']"),
        ({"block_sizes": []}, "params.block_sizes", "non-empty list"),
    ]
    for given, field, message in cases:
        with pytest.raises(ParamError) as caught:
            resolve_params(disk, given)
        assert caught.value.field == field and message in caught.value.message


def test_every_suite_is_well_formed():
    for suite in SUITES.values():
        assert job_steps(suite)[0] == "prepare" and job_steps(suite)[-1] == "teardown"
        for check in suite.checks:
            assert (check.kind == "measure") == (check.better is not None), check
            assert check.kind == "measure" or not check.auto_baseline
        assert not suite.main_check or suite.main_check in suite.check_index
        resolve_params(suite, suite.defaults())
