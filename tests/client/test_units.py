"""The client's pure parts: durations, the SSE parser, problem rendering, the config file, name
resolution and the event follower's decisions (fed messages directly, no server)."""

from __future__ import annotations

import datetime as dt
import json
import stat

import httpx
import pytest

from app.client import config
from app.client.durations import describe, parse_duration, whole_minutes
from app.client.errors import CliError, ExitCode
from app.client.follow import EVENT_GRACE_SECONDS, Follower, InstanceFailed, transition_target
from app.client.http import problem_error
from app.client.resolve import pick
from app.client.session import token_claims
from app.client.sse import COMMENT, Message, SseParser, messages


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("30m", 1800), ("8h", 28800), ("7d", 604800),
                                           ("1h30m", 5400), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "8", "h", "1.5h", "-1h", "1w", "0m", "1h 30m"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_idle_takes_whole_minutes():
    assert whole_minutes("30m") == 30 and whole_minutes("2h") == 120
    with pytest.raises(ValueError, match="whole number of minutes"):
        whole_minutes("90s")
    assert [describe(s) for s in (5, 125, 3600, 3660 * 3, 90000)] == ["5s", "2m", "1h", "3h 3m", "1d 1h"]


def test_sse_parser_follows_the_stream_format():
    lines = ["retry: 2000", "", "id: 0", "event: status", 'data: {"status":"pending"}', "",
             ": keep-alive", "", "id: 17-abc", "event: instance", "data: line one", "data:line two", "",
             "event: end", 'data: {"status":"deleted"}', ""]
    parser = SseParser()
    got = list(messages(lines, parser))
    assert got == [Message("status", '{"status":"pending"}', "0"), Message(COMMENT, "keep-alive", None),
                   Message("instance", "line one\nline two", "17-abc"), Message("end", '{"status":"deleted"}', None)]
    assert parser.last_id == "17-abc", "the id survives a message without one (Last-Event-ID)"


def _response(status: int, body, headers=None) -> httpx.Response:
    headers = {"content-type": "application/problem+json", **(headers or {})}
    return httpx.Response(status, content=json.dumps(body).encode(), headers=headers)


def test_a_problem_prints_one_line_per_field_error():
    error = problem_error(_response(422, {
        "type": "https://onebox.dev/problems/invalid_request", "title": "Invalid request", "status": 422,
        "code": "invalid_request", "detail": "name: bad; ssh_user: reserved",
        "errors": [{"field": "name", "message": "bad"}, {"field": "ssh_user", "message": "reserved"}]}))
    assert error.code == ExitCode.REFUSED and error.status == 422
    assert error.message == "Invalid request (HTTP 422, invalid_request)"
    assert error.details == ["name: bad", "ssh_user: reserved"]


def test_a_problem_without_fields_keeps_its_detail_and_extras():
    error = problem_error(_response(409, {"title": "Conflict", "status": 409, "code": "conflict",
                                          "detail": "already deleted", "current_status": "deleted"}))
    assert error.message == "Conflict: already deleted (HTTP 409, conflict)"
    assert error.details == ["current_status: deleted"]
    assert "onebox login" in problem_error(_response(401, {"title": "Unauthorized"})).details[-1]
    html = problem_error(httpx.Response(502, text="<html>bad gateway</html>", headers={"content-type": "text/html"}))
    assert html.message == "Bad Gateway (HTTP 502)" and html.details == []


def test_config_is_written_0600_and_the_environment_overrides_it(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv(config.ENV_URL, raising=False)
    monkeypatch.delenv(config.ENV_TOKEN, raising=False)
    path = config.config_path()
    config.save({"url": "http://first"})
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, "a new directory is private too"
    path.write_text("url = 'http://old'\n")
    path.chmod(0o644)  # an existing, too open file is replaced by a private one
    token = 'tok"en\\with\nodd\tchars\x01é'
    assert config.save({"url": "http://h:1", "token": token}) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = config.load()
    assert (loaded.url, loaded.token, loaded.url_source) == ("http://h:1", token, str(path))
    assert token not in repr(loaded)
    monkeypatch.setenv(config.ENV_URL, "https://elsewhere:8443/")
    monkeypatch.setenv(config.ENV_TOKEN, "from-env")
    loaded = config.load()
    assert (loaded.url, loaded.token, loaded.token_source) == ("https://elsewhere:8443", "from-env", "ONEBOX_TOKEN")
    assert not [p for p in path.parent.iterdir() if p.name != "config.toml"], "no temporary file is left"


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://h", "http://", "http://h/?q=1"])
def test_a_bad_server_url_is_a_usage_error(url):
    with pytest.raises(CliError) as caught:
        config.normalize_url(url)
    assert caught.value.code == ExitCode.USAGE


def test_names_resolve_to_one_item_or_list_the_candidates():
    items = [{"id": "i-2", "name": "web", "status": "running", "created_at": "2026-01-02T00:00:00Z"},
             {"id": "i-1", "name": "web", "status": "failed", "created_at": "2026-01-01T00:00:00Z"},
             {"id": "i-3", "name": "db", "status": "running"}]
    assert pick(items, "db", "instance")["id"] == "i-3"
    assert pick(items, "nope", "instance") is None
    with pytest.raises(CliError) as caught:
        pick(items, "web", "instance")
    assert caught.value.code == ExitCode.USAGE
    assert [line.split()[0] for line in caught.value.details] == ["i-1", "i-2"]


def test_token_claims_are_read_for_display_only():
    assert token_claims("x.eyJzdWIiOiJhbGljZSJ9.sig") == {"sub": "alice"}
    assert token_claims("not-a-jwt") == {}


# --- the follower's decisions ---------------------------------------------------------------------

SINCE = dt.datetime(2026, 11, 29, 10, 0, 5, tzinfo=dt.timezone.utc)  # the last event before the request
AT = "2026-11-29T10:00:06Z"  # after it
BEFORE = "2026-11-29T10:00:04Z"


def follower(**kwargs) -> Follower:
    return Follower(api=None, instance_id="i-x", label="box", **kwargs)


def status_event(message: str, at: str = AT) -> dict:
    return {"at": at, "type": "status", "step": None, "message": message}


def test_transition_targets():
    assert transition_target("pending → provisioning") == "provisioning"
    assert transition_target("instance running → deleting") == "deleting"
    assert transition_target("running → failed: the VM is gone") == "failed"
    assert transition_target("create started") is None


def test_create_waits_for_running_and_its_event():
    f = follower(until={"running"})
    assert not f._handle("status", {"status": "configuring"})
    assert not f._handle("status", {"status": "running"}), "the transition's event still to come"
    assert not f._handle("instance", {"at": AT, "type": "step.succeeded", "step": "configure", "message": "done"})
    assert f._handle("instance", status_event("configuring → running"))


def test_a_missing_transition_event_is_waited_for_only_a_while(monkeypatch):
    import app.client.follow as follow

    clock = [1000.0]
    monkeypatch.setattr(follow.time, "monotonic", lambda: clock[0])
    f = follower(until={"running"})
    assert not f._handle("status", {"status": "running"})
    clock[0] += EVENT_GRACE_SECONDS
    assert f._complete()


def test_failed_is_exit_3_with_the_error_once_its_events_are_shown():
    f = follower(until={"running"})
    error = {"code": "configure_failed", "message": "task X failed", "step": "configure"}
    assert not f._handle("status", {"status": "failed", "error": error})
    with pytest.raises(InstanceFailed) as caught:
        f._handle("instance", status_event("configuring → failed"))
    assert caught.value.code == ExitCode.FAILED
    assert caught.value.message == "box failed at step configure: configure_failed: task X failed"


def test_reboot_needs_the_instance_to_come_back_after_the_request():
    f = follower(until={"running"}, origin="running", since=SINCE)
    assert not f._handle("status", {"status": "running"}), "running before the reboot is not the answer"
    assert not f._handle("instance", status_event("configuring → running", at=BEFORE)), "history, replayed"
    assert not f._handle("instance", status_event("running → rebooting"))
    assert f._handle("instance", status_event("rebooting → running"))
    # or with the statuses seen: running, rebooting, running
    f = follower(until={"running"}, origin="running", since=SINCE)
    for status in ("running", "rebooting", "running"):
        assert not f._handle("status", {"status": status})
    assert f._handle("instance", status_event("rebooting → running"))


def test_a_stop_that_ends_running_again_is_a_failure():
    error = {"code": "provider_error", "message": "the cloud said no", "step": "stop"}
    f = follower(until={"stopped"}, origin="running", since=SINCE)
    assert not f._handle("instance", status_event("stopping → running", at=BEFORE)), "an older stop, replayed"
    for status in ("running", "stopping"):
        assert not f._handle("status", {"status": status})
    assert not f._handle("status", {"status": "running", "error": error})
    with pytest.raises(InstanceFailed) as caught:
        f._handle("instance", status_event("stopping → running"))
    assert caught.value.message == "box is running, not stopped (failed at step stop: provider_error: the cloud said no)"
    # the same when the stream never showed `stopping` (both changes within one poll)
    f = follower(until={"stopped"}, origin="running", since=SINCE)
    assert not f._handle("status", {"status": "running"})
    assert not f._handle("instance", status_event("running → stopping"))
    with pytest.raises(InstanceFailed):
        f._handle("instance", status_event("stopping → running"))


def test_until_end_waits_for_the_servers_end():
    f = follower(until={"deleted"}, fail_on=set(), until_end=True)
    assert not f._handle("status", {"status": "failed"}), "a failed instance being deleted is not a failure"
    assert not f._handle("status", {"status": "deleted"})
    assert f._handle("end", {"status": "deleted"})
    with pytest.raises(InstanceFailed):
        follower(until={"deleted"}, fail_on=set(), until_end=True)._handle("end", {"status": "failed"})


def test_create_options_become_the_request_body():
    import typer

    from app.client.instances import instance_body

    body = instance_body("box", provider="aws", region="us-east-1", machine_type="t3.micro", ssh_user="al",
                         ssh_public_key="ssh-ed25519 AAAA k", labels=["team=ml", "env="], ttl="8h", idle="30m",
                         disk=50)
    assert body == {"name": "box", "provider": "aws", "region": "us-east-1", "machine_type": "t3.micro",
                    "disk_gb": 50, "ssh_user": "al", "ssh_public_key": "ssh-ed25519 AAAA k",
                    "labels": {"team": "ml", "env": ""}, "ttl_seconds": 28800, "idle_minutes": 30}
    assert "ttl_seconds" not in instance_body("box", provider="local", region="local", machine_type="local",
                                              ssh_user="al", ssh_public_key="k")
    for bad in ({"labels": ["novalue"]}, {"ttl": "8 hours"}, {"idle": "90s"}):
        with pytest.raises(typer.BadParameter):
            instance_body("box", provider="p", region="r", machine_type="t", ssh_user="al", ssh_public_key="k", **bad)


def test_a_narrow_terminal_drops_optional_columns_never_the_id(monkeypatch, capsys):
    from app.client.output import Output

    row = ["box", "i-" + "x" * 26, "running", "healthy 3% cpu", "5m ago"]
    columns = ["NAME", "ID", "STATUS", "HEALTH", "CREATED"]
    monkeypatch.setenv("COLUMNS", "50")
    Output().table(columns, [row], optional=("HEALTH", "CREATED"))
    narrow = capsys.readouterr().out
    assert row[1] in narrow and "running" in narrow and "HEALTH" not in narrow and "CREATED" not in narrow
    monkeypatch.setenv("COLUMNS", "200")
    Output().table(columns, [row], optional=("HEALTH", "CREATED"))
    assert "healthy 3% cpu" in capsys.readouterr().out


def test_a_command_group_is_one_line(monkeypatch):
    from typer.testing import CliRunner

    from app.cli import cli
    from app.client import main

    monkeypatch.setitem(main.GROUPS, "demo", "tests.client.demo_group")
    monkeypatch.setitem(main.GROUPS, "later", "app.client.not_written_yet")  # listed before it lands: skipped
    main.client_group.cache_clear()
    try:
        runner = CliRunner()
        assert json.loads(runner.invoke(cli, ["demo", "hello", "ann", "--json"]).stdout) == {"hello": "ann"}
        failed = runner.invoke(cli, ["demo", "hello", "doom"])
        assert (failed.exit_code, failed.stderr) == (3, "error: doom failed at step demo\n  a detail line\n")
        assert "demo" in runner.invoke(cli, ["--help"]).stdout
        assert runner.invoke(cli, ["later"]).exit_code == 2
    finally:
        main.client_group.cache_clear()
