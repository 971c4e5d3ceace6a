"""The parsers on the tools' own output, captured here (tests/qa/fixtures/README.md says how)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.qa.parsers import (
    ToolOutputError,
    parse_fio,
    parse_iperf3_tcp,
    parse_iperf3_udp,
    parse_latency,
    parse_nvidia_smi,
    parse_probe,
    parse_sysbench,
    percentile,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_iperf3_tcp_totals_and_per_stream_series():
    raw = json.loads(fixture("iperf3_tcp.json"))
    result = parse_iperf3_tcp(fixture("iperf3_tcp.json"))
    assert result.mbps == pytest.approx(raw["end"]["sum_received"]["bits_per_second"] / 1e6)
    assert result.mbps > 1000, "loopback moves gigabits"
    assert result.retransmits == raw["end"]["sum_sent"]["retransmits"]
    assert not result.reverse
    assert len(result.streams) == 2, "-P 2: two streams"
    for stream in result.streams:
        assert len(stream.points) == len(raw["intervals"])
        assert [t for t, _ in stream.points] == sorted(t for t, _ in stream.points)
        assert all(mbps > 0 for _, mbps in stream.points)
    # the per-stream series add up to the interval sums iperf3 reports
    first = raw["intervals"][0]["sum"]["bits_per_second"] / 1e6
    assert sum(s.points[0][1] for s in result.streams) == pytest.approx(first, rel=1e-3)  # streams differ by microseconds in length


def test_iperf3_reverse_is_marked_and_uses_what_was_received():
    raw = json.loads(fixture("iperf3_tcp_reverse.json"))
    result = parse_iperf3_tcp(fixture("iperf3_tcp_reverse.json"))
    assert result.reverse
    assert result.mbps == pytest.approx(raw["end"]["sum_received"]["bits_per_second"] / 1e6)


def test_iperf3_udp_jitter_and_loss():
    result = parse_iperf3_udp(fixture("iperf3_udp.json"))
    assert result.mbps == pytest.approx(100, rel=0.05), "the offered 100 Mbit/s"
    assert result.jitter_ms >= 0 and 0 <= result.lost_percent <= 100
    assert result.packets > 0


def test_iperf3_reports_its_own_error():
    with pytest.raises(ToolOutputError, match="iperf3: unable to connect to server: Connection refused"):
        parse_iperf3_tcp(fixture("iperf3_refused.json"))


def test_iperf3_wrong_test_kind_and_garbage():
    with pytest.raises(ToolOutputError, match="no UDP totals"):
        parse_iperf3_udp(fixture("iperf3_tcp.json"))
    with pytest.raises(ToolOutputError, match="no TCP totals"):
        parse_iperf3_tcp(fixture("iperf3_udp.json"))
    with pytest.raises(ToolOutputError, match="did not print JSON: iperf3: error - control socket"):
        parse_iperf3_tcp("iperf3: error - control socket has closed unexpectedly\n")


def test_fio_jobs_iops_bandwidth_and_percentiles():
    raw = json.loads(fixture("fio_root.json"))
    jobs = parse_fio(fixture("fio_root.json"))
    assert list(jobs) == ["seq_write", "seq_read", "rand_read_4k", "rand_write_4k", "rand_read_64k"]
    assert jobs["seq_write"].main is jobs["seq_write"].write
    assert jobs["seq_write"].main.mb_s == pytest.approx(raw["jobs"][0]["write"]["bw_bytes"] / 1e6)
    assert jobs["seq_read"].main.mb_s > 0 and jobs["seq_read"].block_size == "1m"
    rand = jobs["rand_read_4k"]
    assert rand.rw == "randread" and rand.block_size == "4k"
    assert rand.main.iops == pytest.approx(raw["jobs"][2]["read"]["iops"])
    assert rand.main.clat_ms[99.0] == pytest.approx(raw["jobs"][2]["read"]["clat_ns"]["percentile"]["99.000000"] / 1e6)
    assert rand.main.clat_ms[50.0] <= rand.main.clat_ms[99.0] <= rand.main.clat_ms[99.9]
    assert jobs["rand_write_4k"].main.iops > 0 and jobs["rand_write_4k"].main.clat_ms[99.0] > 0
    assert jobs["rand_read_64k"].main.iops < rand.main.iops * 10  # a sanity bound, not a benchmark


def test_fio_job_error_and_noise_before_the_json():
    doc = json.loads(fixture("fio_root.json"))
    assert parse_fio("fio: note: both iodepth >= 1 and synchronous I/O engine selected\n" + json.dumps(doc))
    doc["jobs"][1]["error"] = 5
    with pytest.raises(ToolOutputError, match="fio job seq_read failed with error 5"):
        parse_fio(json.dumps(doc))
    with pytest.raises(ToolOutputError, match="no output"):
        parse_fio("")


@pytest.mark.parametrize("name,threads", [("sysbench_cpu_1thread.txt", 1), ("sysbench_cpu_2threads.txt", 2)])
def test_sysbench_cpu_report_line(name, threads):
    result = parse_sysbench(fixture(name))
    assert result.test == "cpu" and result.threads == threads
    assert result.events > 0 and result.seconds == pytest.approx(2, abs=0.1)
    assert result.events_per_second == pytest.approx(result.events / result.seconds)
    assert result.latency_pct_ms > 0 and result.percentile == 95


def test_sysbench_memory_counts_read_and_write():
    result = parse_sysbench(fixture("sysbench_memory.txt"))
    assert result.test == "memory" and result.block_bytes == 16 * 1024 * 1024
    assert result.copy_mb_s == pytest.approx(2 * result.block_bytes * result.events / result.seconds / 1e6)
    assert result.copy_mb_s > 1000, "any machine copies more than a GB/s"


def test_sysbench_without_report():
    with pytest.raises(ToolOutputError, match="FATAL: Cannot find benchmark"):
        parse_sysbench("sysbench 1.0.20\nFATAL: Cannot find benchmark 'x': no such built-in test\n")
    with pytest.raises(ToolOutputError, match="no event"):
        parse_sysbench('{"onebox_qa": "cpu", "threads": 1, "events": 0, "seconds": 0.0006, "latency_pct_s": 0, '
                       '"percentile": 95}')


def test_nvidia_smi_rows():
    gpus = parse_nvidia_smi(fixture("nvidia_smi_a100x4.csv"))
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    assert {g.name for g in gpus} == {"NVIDIA A100-SXM4-40GB"}
    assert gpus[2].temperature_c == 32 and gpus[2].power_w == pytest.approx(55.02)
    assert gpus[0].memory_total_mb == 40960 and gpus[0].utilization_percent == 0


def test_nvidia_smi_not_available_values_and_bad_lines():
    loaded = parse_nvidia_smi(fixture("nvidia_smi_t4_loaded.csv"))
    assert loaded[0].utilization_percent == 100 and loaded[1].power_w is None
    with pytest.raises(ToolOutputError, match="expected 8"):
        parse_nvidia_smi("0, Tesla T4, 15360\n")
    with pytest.raises(ToolOutputError, match="'hot'"):
        parse_nvidia_smi("0, Tesla T4, 15360, 1, 2, hot, 3, 4\n")
    assert parse_nvidia_smi("\n") == []


def test_latency_probe_percentiles():
    result = parse_latency(fixture("probe_latency.json"))
    assert len(result.samples_ms) == 20 and result.errors == 0
    p = result.percentiles_ms
    assert 0 < p[50.0] <= p[90.0] <= p[99.0] <= max(result.samples_ms)
    with pytest.raises(ToolOutputError, match="no TCP connection to 127.0.0.1:9 succeeded.*Connection refused"):
        parse_latency(fixture("probe_latency_refused.json"))


def test_smoke_probe_facts():
    facts = parse_probe(fixture("probe_smoke_local.json"), "the smoke probe")
    assert facts["python_ok"] and facts["local"] and facts["bootstrap"]["exit_code"] == 0
    assert [m["mountpoint"] for m in facts["mounts"]] == ["/mnt/data", "~/bucket"]


def test_percentile_interpolates_like_numpy():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([10], 99) == 10
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == pytest.approx(9.1)
