"""Agent + Poster against a real local HTTP server, with fake time."""

import logging

import pytest

from .conftest import TOKEN


def run_until(agent, clock, until, max_steps=10000):
    """Drive the agent loop on the fake clock until simulated time `until`."""
    for _ in range(max_steps):
        if clock.now >= until:
            return
        clock.sleep(agent.step())
    raise AssertionError("agent did not reach t=%s" % until)


def record_delays(agent):
    delays = []
    real = agent.backoff.next_delay

    def next_delay(retry_after=None):
        d = real(retry_after)
        delays.append(d)
        return d

    agent.backoff.next_delay = next_delay
    return delays


def test_happy_path_posts_each_sample(onebox, make_agent, clock, oa):
    agent = make_agent(onebox.url)
    run_until(agent, clock, clock.now + 95)  # samples at t=0, 30, 60, 90
    assert [s["seq"] for s in onebox.samples()] == [1, 2, 3, 4]
    assert len(onebox.requests) == 4
    req = onebox.requests[0]
    assert req["path"] == "/v1/agent/metrics"
    assert req["headers"]["Authorization"] == "Bearer " + TOKEN
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["User-Agent"] == "onebox-agent/" + oa.__version__
    assert req["body"] == {"instance_id": "i-123", "samples": [{"at": "2026-11-22T01:00:00Z", "seq": 1}]}
    assert len(agent.buffer) == 0


def test_no_drift(onebox, make_agent, clock, oa):
    """Collection stays on the start + k*interval grid even though each step takes time."""

    class SlowCollector:
        n = 0

        def collect(self):
            clock.now += 1.7  # collecting takes time
            self.n += 1
            return {"seq": self.n}

    agent = make_agent(onebox.url, interval=10)
    agent.collector = SlowCollector()
    start = clock.now
    collected_at = []
    real = agent.collect_once

    def collect_once():
        collected_at.append(clock.now - start)
        return real()

    agent.collect_once = collect_once
    run_until(agent, clock, start + 1000)
    assert collected_at == [10.0 * k for k in range(100)]


def test_missed_ticks_are_skipped_not_bursted(onebox, make_agent, clock, caplog):
    agent = make_agent(onebox.url, interval=10)
    agent.step()  # collects at t=0
    clock.now += 35  # e.g. the VM was suspended
    agent.step()  # ticks 10, 20, 30 are due: collects once (late), not 3 times
    assert agent.collector.n == 2
    assert agent.next_collect - clock.now == 5  # back on the grid (t=40)
    assert "skipped 2 sample(s)" in caplog.text


def test_outage_503_then_refused_then_recovery(onebox, make_agent, clock, caplog):
    caplog.set_level(logging.INFO, logger="onebox_agent")
    agent = make_agent(onebox.url, interval=30, max_backoff=60)
    delays = record_delays(agent)
    start = clock.now
    onebox.answer(503, times=4)  # first the service is up but unhealthy
    run_until(agent, clock, start + 14)  # attempts at t=0, 1, 3, 7; next one at 15
    assert len(onebox.requests) == 4
    onebox.stop()  # then it is down: connection refused
    run_until(agent, clock, start + 600)
    assert len(agent.buffer) == 20  # samples 1..20 buffered
    onebox.start()  # same port
    run_until(agent, clock, start + 700)

    received = [s["seq"] for s in onebox.samples()[4:]]  # after the 503 answers
    assert received == list(range(1, agent.collector.n + 1))  # all, in order, no duplicates
    assert agent.collector.n == 24
    assert len(agent.buffer) == 0
    # backoff grew while failing, was capped, and reset after the recovery
    assert delays[:6] == [1, 2, 4, 8, 16, 32]
    assert max(delays) == 60 and delays.count(60) >= 5
    assert delays == sorted(delays)
    # not spinning: ~15 attempts in 10 minutes of outage
    assert len(delays) < 20
    assert "HTTP 503" in caplog.text and "cannot reach onebox" in caplog.text
    assert "accepts metrics again" in caplog.text
    assert TOKEN not in caplog.text


def test_outage_longer_than_buffer_keeps_newest(onebox, make_agent, clock, caplog):
    agent = make_agent(onebox.url, interval=30, buffer_size=5, max_backoff=30)
    onebox.stop()
    run_until(agent, clock, clock.now + 30 * 12 - 1)  # 12 samples, room for 5
    onebox.start()
    run_until(agent, clock, clock.now + 31)
    # sample 13 (t=360) arrived before the first successful post, pushing out
    # 1..8; 14 was collected after the recovery
    assert [s["seq"] for s in onebox.samples()] == [9, 10, 11, 12, 13, 14]
    assert "buffer full (5 samples)" in caplog.text
    assert "8 sample(s) were dropped because the buffer was full" in caplog.text


def test_big_backlog_is_sent_in_batches_of_100(onebox, make_agent, clock):
    agent = make_agent(onebox.url, interval=1, buffer_size=1000, max_backoff=300)
    onebox.stop()
    run_until(agent, clock, clock.now + 250)
    onebox.start()
    run_until(agent, clock, clock.now + 301)
    sizes = [len(r["body"]["samples"]) for r in onebox.requests]
    assert max(sizes) == 100 and sizes[:2] == [100, 100]
    assert [s["seq"] for s in onebox.samples()] == list(range(1, agent.collector.n + 1))


def test_retry_after_is_honoured(onebox, make_agent, clock):
    agent = make_agent(onebox.url, max_backoff=60)
    onebox.answer(503, {"Retry-After": "7"})
    onebox.answer(429, {"Retry-After": "13"})
    onebox.answer(429, {"Retry-After": "99999"})
    agent.step()
    assert agent.retry_at - clock.now == 7
    clock.now = agent.retry_at
    agent.step()
    assert agent.retry_at - clock.now == 13
    clock.now = agent.retry_at
    agent.step()
    assert agent.retry_at - clock.now == 60  # capped at max_backoff
    clock.now = agent.retry_at
    agent.step()
    assert len(agent.buffer) == 0 and len(onebox.requests) == 4


def test_401_keeps_backing_off(onebox, make_agent, clock, caplog):
    onebox.default = (401, {}, None)
    agent = make_agent(onebox.url, interval=30, max_backoff=120)
    delays = record_delays(agent)
    run_until(agent, clock, clock.now + 3600)
    assert 5 < len(onebox.requests) < 50  # neither died nor spun
    assert delays == sorted(delays) and max(delays) == 120
    assert len(agent.buffer) == 120  # samples kept (bounded)
    assert "agent token was rejected" in caplog.text
    assert TOKEN not in caplog.text
    onebox.default = (200, {}, None)
    run_until(agent, clock, clock.now + 121)
    assert len(agent.buffer) == 0


def test_403_with_expired_jwt_says_so(onebox, make_agent, clock, caplog):
    import base64
    import json
    payload = base64.urlsafe_b64encode(json.dumps({"exp": 1000}).encode()).rstrip(b"=").decode()
    expired = "eyJhbGciOiJIUzI1NiJ9." + payload + ".sig"
    onebox.answer(403)
    agent = make_agent(onebox.url, token=expired)
    agent.step()
    assert "token expired at 1970-01-01T00:16:40Z" in caplog.text
    assert len(agent.buffer) == 1 and agent.retry_at > clock.now


@pytest.mark.parametrize("status", [422, 413, 400])
def test_unacceptable_batch_is_dropped(onebox, make_agent, clock, caplog, status):
    onebox.answer(status)
    agent = make_agent(onebox.url)
    agent.step()
    assert len(agent.buffer) == 0  # dropped, not retried
    assert agent.retry_at is None
    assert "refused 1 sample(s) for good (HTTP %d" % status in caplog.text
    run_until(agent, clock, clock.now + 31)
    assert [s["seq"] for s in onebox.samples()] == [1, 2]  # 1 was refused, 2 delivered
    assert len(onebox.requests) == 2


def test_redirect_is_not_followed(onebox, make_agent, clock, caplog):
    onebox.answer(307, {"Location": "http://evil.example/steal"})
    agent = make_agent(onebox.url)
    agent.step()
    assert len(onebox.requests) == 1 and len(agent.buffer) == 1
    assert "redirect to http://evil.example/steal not followed" in caplog.text


def test_collector_crash_does_not_kill_the_loop(onebox, make_agent, clock, caplog):
    class Broken:
        def collect(self):
            raise RuntimeError("boom")

    agent = make_agent(onebox.url)
    agent.collector = Broken()
    assert agent.step() == 30
    assert "collecting a sample failed" in caplog.text


def test_stop_flushes_once(onebox, make_agent, clock, oa):
    onebox.answer(503)
    agent = make_agent(onebox.url, initial_backoff=50)
    agent.sleep = lambda seconds: agent.stop()  # SIGTERM while sleeping
    assert agent.run() == 0
    assert [r["body"]["samples"][0]["seq"] for r in onebox.requests] == [1, 1]
    assert len(agent.buffer) == 0


def test_stop_flag_cuts_sleep_short(oa):
    import threading
    import time
    flag = oa.StopFlag()
    threading.Timer(0.1, flag.set).start()
    started = time.monotonic()
    assert flag.wait(10) is True
    assert time.monotonic() - started < 2
    flag.close()


def test_config_validation(oa):
    base = dict(url="http://h:1", token="t", instance_id="i")
    cfg = oa.Config(**base)
    assert (cfg.interval, cfg.buffer_size, cfg.timeout, cfg.max_backoff) == (30, 120, 10, 300)
    assert oa.Config(**dict(base, url="https://u:p@h/x/", zzz=1)).safe_url() == "https://h/x/"
    assert oa.Config(**dict(base, zzz=1)).unknown_keys == ["zzz"]
    for bad in (dict(url=None), dict(token=""), dict(instance_id=5), dict(url="ftp://h"),
                dict(url="h:1"), dict(interval=0), dict(interval="30"), dict(buffer_size=1.5),
                dict(buffer_size=True), dict(timeout=-1), dict(log_level="LOUD"),
                dict(max_backoff=float("inf"))):
        with pytest.raises(oa.ConfigError):
            oa.Config(**dict(base, **bad))


def test_https_with_ca_file(onebox, make_agent, clock, tmp_path, caplog):
    """An https onebox with a private CA: trusted via ca_file, refused without it."""
    import ssl
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    onebox._server.socket = ctx.wrap_socket(onebox._server.socket, server_side=True)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    url = onebox.url.replace("http://", "https://")

    untrusted = make_agent(url)
    untrusted.step()
    assert len(untrusted.buffer) == 1 and "CERTIFICATE_VERIFY_FAILED" in caplog.text

    trusted = make_agent(url, ca_file=str(ca_file))
    trusted.step()
    assert len(trusted.buffer) == 0
    assert [r["body"]["samples"][0]["seq"] for r in onebox.requests] == [1]
