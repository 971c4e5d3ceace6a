"""The client end to end, through the real installed ``onebox`` command against a real server (the API
on a port, a worker, the local provider's sshd): login, create --wait with live output, ls, show,
ssh, snapshot, an instance from the snapshot, rm --wait, events, catalog, whoami. Every output is
checked for the token (``Cli.run``)."""

from __future__ import annotations

import json
import stat
import tomllib

import pytest

from tests.client.conftest import Reader

pytestmark = pytest.mark.slow


def ssh_options(ssh_keypair) -> list[str]:
    return ["-i", str(ssh_keypair.private_path), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={ssh_keypair.known_hosts}", "-o", "LogLevel=ERROR"]


def test_the_whole_flow_through_the_installed_command(live_server, cli, ssh_keypair):
    url = live_server.url
    login = cli.run("login", "--url", url, "--dev", "alice")
    assert login.returncode == 0, login.stderr
    assert f"logged in to {url} as alice" in login.stdout
    assert stat.S_IMODE(cli.config_file.stat().st_mode) == 0o600
    stored = tomllib.loads(cli.config_file.read_text())
    assert stored["url"] == url and stored["token"].count(".") == 2
    cli.secrets.append(stored["token"])  # from here on, no output may contain it

    # create --wait follows live: with the worker paused, the first event is printed while the command
    # is still waiting (it cannot be running yet); once the worker runs, it carries on to `running`.
    live_server.stop_worker()
    try:
        create = cli.popen("create", "cli-box", "--ssh-key", str(ssh_keypair.private_path), "--ssh-user", "alice",
                           "--label", "team=cli", "--wait")
        stderr, stdout = Reader(create.stderr), Reader(create.stdout)
        stderr.wait_for("queued local instance")
        assert create.poll() is None, "still waiting, and already showing what happened"
    finally:
        live_server.start_worker()
    assert create.wait(timeout=120) == 0, stderr.text
    progress, result = stderr.text, stdout.text
    cli.check(progress, result)
    positions = [progress.index(t) for t in ("pending → provisioning", "provisioning → configuring",
                                              "configure.skipped", "configuring → running")]
    assert positions == sorted(positions), progress
    assert "cli-box (i-" in result and "running at 127.0.0." in result, result

    listing = cli.run("ls")
    assert listing.returncode == 0 and "cli-box" in listing.stdout and "running" in listing.stdout, listing.stderr
    shown = cli.run("show", "cli-box", "--json")
    box = json.loads(shown.stdout)
    assert (box["name"], box["status"], box["labels"]) == ("cli-box", "running", {"team": "cli"})
    assert box["public_ip"].startswith("127.0.0.") and box["ssh_port"] == 2222
    # the read commands once more, in-process (quicker than a process each)
    [listed] = json.loads(cli.invoke("ls", "--json").stdout)
    assert listed["id"] == box["id"]
    assert f"{box['public_ip']}:2222" in cli.invoke("show", box["id"]).stdout

    # ssh runs a command on the instance, and exits with the remote command's code
    ran = cli.run("ssh", "cli-box", *ssh_options(ssh_keypair), "--", "echo precious > ~/mark; echo hello; exit 7")
    assert (ran.returncode, ran.stdout.strip()) == (7, "hello"), ran.stderr

    snap = cli.run("snapshot", "cli-box", "cli-snap", "--wait", "--json")
    assert snap.returncode == 0, snap.stderr
    assert json.loads(snap.stdout)["status"] == "available"
    assert [s["name"] for s in json.loads(cli.invoke("snapshots", "--json").stdout)] == ["cli-snap"]
    copy = cli.run("create", "cli-copy", "--snapshot", "cli-snap", "--ssh-key", str(ssh_keypair.private_path),
                   "--ssh-user", "alice", "--wait", "--json")
    assert copy.returncode == 0, copy.stderr
    assert json.loads(copy.stdout)["status"] == "running"
    ran = cli.run("ssh", "cli-copy", *ssh_options(ssh_keypair), "--", "cat ~/mark")
    assert (ran.returncode, ran.stdout.strip()) == (0, "precious"), ran.stderr

    removed = cli.run("rm", "cli-box", "cli-copy", "--wait")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.count(" deleted") == 2 and removed.stderr.count("deleting → deleted") == 2, removed
    assert json.loads(cli.invoke("show", "cli-box", "--json").stdout)["status"] == "deleted"
    events = json.loads(cli.invoke("events", "cli-box", "--json").stdout)
    assert events[-1]["message"] == "deleting → deleted" and events[0]["type"] == "created"
    assert cli.invoke("ls", "--json").stdout.strip() == "[]"
    assert {i["name"] for i in json.loads(cli.invoke("ls", "--all", "--json").stdout)} == {"cli-box", "cli-copy"}

    catalog = json.loads(cli.invoke("catalog", "--json").stdout)
    assert [p["name"] for p in catalog["providers"]] == ["local"]
    me = cli.invoke("whoami", "--json")
    assert json.loads(me.stdout) | {"expires_at": None} == {
        "url": url, "url_from": str(cli.config_file), "user": "alice", "role": "user",
        "token_from": str(cli.config_file), "expires_at": None}
    debug = cli.invoke("--debug", "ls")
    assert f"debug: → GET {url}/v1/instances?limit=100" in debug.stderr and "debug: ← 200 OK" in debug.stderr
