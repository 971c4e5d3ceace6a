"""The report, drawn from results shaped exactly as the job stores them (built from the captured tool outputs):
every chart renders to a real PNG, the page is self-contained and escapes what it shows, JUnit XML counts right."""

from __future__ import annotations

import datetime as dt
import io
import zipfile
from xml.etree import ElementTree

import pytest

from app.qa import parsers
from app.qa.baselines import Baseline, judge
from app.qa.jobs import disk_root_values, latency_details, storable, tcp_details
from app.qa.report import ReportBuilder, _history_figure, junit_xml
from app.qa.suites import SUITES
from tests.qa.test_parsers import fixture

NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone.utc)


def result(suite: str, check: str, value=None, verdict=None, details=None, baseline=None, target=None,
           instance="i-01m8aaaaaaaaaaaaaaaaaaaaaa", message=""):
    c = SUITES[suite].check(check)
    if verdict is None:
        verdict, message = judge(c, value, baseline)
    storable(details)
    return {"check": check, "title": c.title, "instance_id": instance, "target": target, "verdict": verdict,
            "value": value, "unit": c.unit, "better": c.better, "message": message,
            "baseline": baseline.as_doc() if baseline else None, "details": details, "step": "x",
            "at": NOW.isoformat()}


def run_of(suite: str, results: list[dict], status: str = "passed") -> dict:
    summary: dict[str, int] = {}
    for r in results:
        summary[r["verdict"]] = summary.get(r["verdict"], 0) + 1
    return {"id": "q-01m8bbbbbbbbbbbbbbbbbbbbbb", "owner": "alice", "suite": suite, "status": status,
            "params": SUITES[suite].defaults(), "summary": summary, "error": None, "results": results,
            "targets": [{"instance_id": "i-01m8aaaaaaaaaaaaaaaaaaaaaa", "role": "client", "name": "<b>box</b>",
                         "provider": "local", "region": "local", "machine_type": "local", "image": None,
                         "gpu_count": 0, "gpu_type": None}],
            "created_at": NOW.isoformat(), "finished_at": NOW.isoformat(), "cancel_requested": False}


@pytest.fixture(scope="module")
def network_run():
    tcp = parsers.parse_iperf3_tcp(fixture("iperf3_tcp.json"))
    reverse = parsers.parse_iperf3_tcp(fixture("iperf3_tcp_reverse.json"))
    latency = parsers.parse_latency(fixture("probe_latency.json"))
    return run_of("network", [
        result("network", "tcp_mbps", tcp.mbps, details=tcp_details(tcp, "a → b"),
               baseline=Baseline(tcp.mbps * 2, 25, "admin")),
        result("network", "tcp_reverse_mbps", reverse.mbps, details=tcp_details(reverse, "b → a")),
        result("network", "latency_p50_ms", latency.percentiles_ms[50.0], details=latency_details(latency)),
    ], status="failed")


@pytest.fixture(scope="module")
def disk_run():
    details, values = disk_root_values(parsers.parse_fio(fixture("fio_root.json")), {"size_mb": 32, "runtime_seconds": 1})
    return run_of("disk", [result("disk", check, value, details=details if check == "rand_read_iops" else None,
                                  baseline=Baseline(value * 0.9, 30, "history", 3) if check == "seq_read_mb_s" else None)
                           for check, value in values if value is not None] +
                  [result("disk", "mount_write_mb_s", verdict="skip", message="skipped: no bucket mounts")])


def is_png(data: bytes, min_size: int = 5000) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > min_size


async def test_every_chart_of_a_network_run(network_run):
    builder = ReportBuilder(network_run, history=None)
    assert builder.chart_names() == ["checks", "throughput", "latency", "trend"]
    for name in builder.chart_names():
        assert is_png(await builder.png(name), 3000), name


async def test_every_chart_of_a_disk_run(disk_run):
    builder = ReportBuilder(disk_run, history=None)
    assert builder.chart_names() == ["checks", "iops", "disk_latency", "trend"]
    for name in builder.chart_names():
        assert is_png(await builder.png(name), 3000), name


async def test_page_is_self_contained_and_escaped(network_run):
    page = await ReportBuilder(network_run, history=None).html()
    assert page.count("data:image/png;base64,") == 4
    assert "<b>box</b>" not in page and "&lt;b&gt;box&lt;/b&gt;" in page, "API data is escaped"
    assert "src='http" not in page and "<script" not in page
    assert "is 50.0% below the baseline" in page, "the failed check says why"


async def test_zip_holds_page_charts_run_and_junit(disk_run):
    archive = zipfile.ZipFile(io.BytesIO(await ReportBuilder(disk_run, history=None).zip()))
    assert sorted(archive.namelist()) == ["checks.png", "disk_latency.png", "iops.png", "junit.xml", "report.html",
                                          "run.json", "trend.png"]
    suite = ElementTree.fromstring(archive.read("junit.xml")).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == ("7", "0", "1", "0")


def test_junit_marks_failures_errors_and_a_run_that_never_measured(network_run):
    suite = ElementTree.fromstring(junit_xml(network_run)).find("testsuite")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert "below the baseline" in cases["tcp_mbps"].find("failure").get("message"), "the value, and why it failed"
    assert cases["tcp_reverse_mbps"].find("failure") is None
    broken = {**run_of("smoke", [], status="error"), "error": {"code": "unreachable", "message": "no route",
                                                               "step": "prepare"}}
    suite = ElementTree.fromstring(junit_xml(broken)).find("testsuite")
    assert (suite.get("tests"), suite.get("errors")) == ("1", "1")
    assert suite.find("testcase").find("error").get("message") == "no route"


@pytest.mark.parametrize("by", ["time", "machine"])
def test_comparison_charts(by):
    items = [{"run_id": f"q-{n}", "instance_id": "i-1", "provider": provider, "region": "r", "machine_type": machine,
              "value": value, "verdict": "fail" if value < 50 else "pass", "run_status": "passed",
              "at": (NOW - dt.timedelta(hours=n)).isoformat()}
             for n, (provider, machine, value) in enumerate([("aws", "c6i.large", 90.0), ("aws", "c6i.large", 40.0),
                                                            ("gcp", "e2-standard-2", 70.0), ("aws", "c6i.large", 95.0)])]
    history = {"suite": "network", "check": "tcp_mbps", "unit": "Mbit/s", "better": "higher", "items": items,
               "baselines": [{"provider": "aws", "machine_type": "c6i.large", "value": 90.0, "tolerance_percent": 25,
                              "source": "history", "samples": 3}]}
    assert is_png(_history_figure(history, by))
    assert is_png(_history_figure({**history, "items": [], "baselines": []}, by), 1000)


def test_storable_refuses_what_the_database_cannot_keep():
    storable({"a": [{"b": [1, 2]}], "c": {"d": 1}})
    with pytest.raises(ValueError, match="nested arrays"):
        storable({"points": [[1, 2]]})
    with pytest.raises(ValueError, match="'99.9'"):
        storable({"p": {"99.9": 1}})
