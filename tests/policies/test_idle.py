"""Idleness, judged from samples: every signal below its threshold for the whole window, and a window
with missing samples is busy."""

from __future__ import annotations

import datetime as dt

import pytest

from app.policies.idle import Thresholds, judge

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.timezone.utc)
INTERVAL = 30.0
WINDOW = dt.timedelta(minutes=10)
T = Thresholds()


def quiet(at: dt.datetime, n: int, **overrides) -> dict:
    """A quiet sample: counters growing slowly (n-th sample), one idle GPU."""
    sample = {"at": at, "cpu_percent": 2.0, "ssh_sessions": 0, "net_rx_bytes": 1000 * n, "net_tx_bytes": 500 * n,
              "disk_read_bytes": 4096 * n, "disk_write_bytes": 8192 * n,
              "gpus": [{"index": 0, "utilization_percent": 0.0, "memory_used_mib": 300.0, "memory_total_mib": 40960.0,
                        "power_draw_w": 55.0, "power_limit_w": 400.0}]}
    for key, value in overrides.items():
        if key.startswith("gpu_"):
            sample["gpus"][0][key[4:]] = value
        else:
            sample[key] = value
    return sample


def window(count: int | None = None, start_offset: float = INTERVAL, **per_sample) -> list[dict]:
    """Samples every INTERVAL from before the window's start up to NOW."""
    count = count or int(WINDOW.total_seconds() / INTERVAL) + 2
    first = NOW - WINDOW - dt.timedelta(seconds=start_offset)
    return [quiet(first + dt.timedelta(seconds=INTERVAL * i), i, **per_sample) for i in range(count)]


def verdict(samples):
    return judge(samples, NOW - WINDOW, NOW, INTERVAL, T)


def test_quiet_on_every_signal_for_the_whole_window_is_idle():
    v = verdict(window())
    assert v.idle, v.reason
    assert "idle on every signal" in v.reason


def test_a_busy_gpu_behind_an_idle_cpu_is_busy():
    samples = window()
    samples[5] = quiet(samples[5]["at"], 5, cpu_percent=0.0, gpu_utilization_percent=90.0)
    v = verdict(samples)
    assert not v.idle and "GPU 0 at 90%" in v.reason


@pytest.mark.parametrize("override,why", [
    ({"cpu_percent": 55.0}, "CPU at 55%"),
    ({"ssh_sessions": 1}, "1 SSH session"),
    ({"gpu_memory_used_mib": 30000.0}, "GPU 0 memory 73% in use"),
    ({"gpu_power_draw_w": 300.0}, "75% of its power limit"),
    ({"cpu_percent": None}, "without CPU use"),
    ({"ssh_sessions": None}, "without the count of SSH sessions"),
    ({"gpu_utilization_percent": None}, "GPU 0 without utilisation"),
])
def test_one_busy_signal_in_one_sample_is_enough(override, why):
    samples = window()
    samples[-3] = quiet(samples[-3]["at"], len(samples) - 3, **override)
    v = verdict(samples)
    assert not v.idle and why in v.reason, v.reason


def test_gpu_fields_the_card_cannot_report_are_left_out():
    assert verdict(window(gpu_power_limit_w=None, gpu_memory_total_mib=None)).idle
    assert verdict(window(gpus=[])).idle  # no GPU at all


def test_traffic_and_disk_io_are_rates_between_samples():
    samples = window()
    samples[7]["net_rx_bytes"] += 60 * 1_000_000  # 60 MB in one interval: 2 MB/s
    v = verdict(samples)
    assert not v.idle and "network at" in v.reason
    samples = window()
    for i, s in enumerate(samples):
        s["disk_write_bytes"] = i * 200_000 * int(INTERVAL)  # 200 kB/s all along
    v = verdict(samples)
    assert not v.idle and "disk I/O at" in v.reason


def test_a_counter_reset_is_busy_not_a_negative_rate():
    samples = window()
    for s in samples[10:]:
        s["net_rx_bytes"] = 0
    assert not verdict(samples).idle


@pytest.mark.parametrize("drop,why", [
    (slice(8, 10), "a gap of 90s"),  # two missing samples in the middle
    (slice(0, 3), "no samples for the first"),  # the window starts before the first sample (a new VM)
    (slice(-3, None), "no sample for the last"),  # the agent stopped reporting
])
def test_a_window_with_missing_samples_is_busy(drop, why):
    samples = window()
    del samples[drop]
    v = verdict(samples)
    assert not v.idle and why in v.reason, v.reason


def test_no_samples_at_all_is_busy():
    assert not verdict([]).idle


def test_one_late_sample_within_half_an_interval_is_still_covered():
    samples = window()
    samples[6]["at"] += dt.timedelta(seconds=12)
    assert verdict(samples).idle
