"""Exit codes, problem rendering, names, secrets and completion, against the same real server.

Most commands run in-process through Typer's ``CliRunner`` (quick); the unreachable server, the
failed instance and completion run the installed command. Exit codes: 0 ok, 1 the API refused,
2 usage (ambiguous names included), 3 the instance failed, 4 the server cannot be reached.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from tests.client.conftest import ONEBOX, Cli, LiveServer, Reader, live_settings
from tests.support import free_port

pytestmark = pytest.mark.slow
UNKNOWN_ID = "i-00000000000000000000000000"


def invoke(cli: Cli, *args: str, **kwargs):
    return cli.invoke(*args, **kwargs)


@pytest.fixture
def bob(live_server, cli) -> Cli:
    """A user logged in with a token given to `login` (read from stdin, as a CI job would)."""
    token = live_server.mint("bob")
    cli.secrets.append(token)
    result = invoke(cli, "login", "--url", live_server.url + "/", "--token", "-", input=token + "\n")
    assert result.exit_code == 0, result.stderr
    assert "as bob" in result.stdout
    return cli


def test_a_refused_request_is_exit_1_with_one_line_per_field_error(bob, ssh_keypair):
    result = invoke(bob, "create", "Bad_Name", "--ssh-user", "root", "--ssh-key", str(ssh_keypair.private_path))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "error: Invalid request (HTTP 422, invalid_request)"
    assert lines[1].startswith("  name: String should match pattern")
    assert lines[2] == "  ssh_user: 'root' is reserved; choose another user name"
    assert json.loads(invoke(bob, "ls", "--json").stdout) == [], "nothing was created"

    missing = invoke(bob, "show", UNKNOWN_ID)
    assert missing.exit_code == 1 and "Instance not found" in missing.stderr and "HTTP 404" in missing.stderr
    nameless = invoke(bob, "rm", "no-such-box")
    assert nameless.exit_code == 1 and "no instance named 'no-such-box'" in nameless.stderr


def test_a_bad_token_is_refused_without_being_printed(live_server, cli):
    fake = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJl"
    cli.secrets.append(fake)
    for args in (["ls"], ["--debug", "ls"], ["whoami", "--json"]):
        result = invoke(cli, *args, env={"ONEBOX_URL": live_server.url, "ONEBOX_TOKEN": fake})
        assert result.exit_code == 1, result.stderr
        assert "HTTP 401" in result.stderr and "run `onebox login` again" in result.stderr
    refused = invoke(cli, "login", "--url", live_server.url, "--token", fake)
    assert refused.exit_code == 1 and not cli.config_file.exists(), "a refused token is not saved"


def test_usage_errors_and_ambiguous_names_are_exit_2(bob, ssh_keypair):
    assert invoke(bob, "ls", "--bogus").exit_code == 2
    assert invoke(bob, "create").exit_code == 2
    twins = [json.loads(invoke(bob, "create", "twin", "--ssh-user", "bob", "--ssh-key", str(ssh_keypair.private_path),
                               "--json").stdout)["id"] for _ in range(2)]
    ambiguous = invoke(bob, "show", "twin")
    assert ambiguous.exit_code == 2
    assert "2 instances are named 'twin'; give an id instead" in ambiguous.stderr
    assert sorted(line.split()[0] for line in ambiguous.stderr.splitlines()[1:]) == sorted(twins)
    assert invoke(bob, "show", twins[0], "--json").exit_code == 0, "an id is never ambiguous"
    assert invoke(bob, "rm", "twin").exit_code == 2, "nothing is deleted on an ambiguous name"
    assert invoke(bob, "rm", *twins, "--wait").exit_code == 0

    nowhere = Cli(bob.home / "elsewhere")
    result = invoke(nowhere, "ls")
    assert result.exit_code == 2 and "no onebox server configured" in result.stderr


def test_an_unreachable_server_is_exit_4_naming_it(cli):
    url = f"http://127.0.0.1:{free_port()}"
    result = cli.run("ls", env={"ONEBOX_URL": url, "ONEBOX_TOKEN": "t"})
    assert result.returncode == 4
    assert result.stderr.startswith(f"error: cannot reach the onebox server at {url}: "), result.stderr
    login = cli.run("login", "--url", url, "--dev", "alice")
    assert login.returncode == 4 and url in login.stderr and not cli.config_file.exists()


def test_a_failed_instance_is_exit_3_with_its_error_and_step(dbserver, tmp_path, cli, ssh_keypair):
    server = LiveServer(live_settings(dbserver, tmp_path / "data", inject_faults=["configure"])).start()
    try:
        env = {"ONEBOX_URL": server.url, "ONEBOX_TOKEN": server.mint("carol")}
        cli.secrets.append(env["ONEBOX_TOKEN"])
        result = cli.run("create", "doomed", "--ssh-user", "carol", "--ssh-key", str(ssh_keypair.private_path),
                         "--wait", env=env)
        assert result.returncode == 3, result.stderr
        assert "error: doomed failed at step configure: injected_fault: fault injected after configure" \
            in result.stderr
        assert result.stderr.index("configuring → failed") < result.stderr.index("error: doomed failed")
        follow = cli.run("events", "doomed", "--follow", env=env)
        assert follow.returncode == 3 and "configuring → failed" in follow.stdout
    finally:
        server.stop()


def test_the_server_and_the_client_do_not_load_each_other(cli):
    probe = ("import sys, atexit\n"
             "from app.cli import main\n"
             "def report():\n"
             "    print(sorted(m for m in sys.modules if m.startswith(('app.', 'rich', 'httpx', 'fastapi', "
             "'pymongo', 'uvicorn'))), file=sys.stderr)\n"
             "atexit.register(report)\n"
             "main(sys.argv[1:])\n")
    client = subprocess.run([sys.executable, "-c", probe, "ls"], env={**cli.env, "ONEBOX_URL": "http://127.0.0.1:1",
                                                                      "ONEBOX_TOKEN": "t"},
                            capture_output=True, text=True, timeout=60)
    loaded = eval(client.stderr.splitlines()[-1])
    assert client.returncode == 4 and "app.client.http" in loaded
    assert not [m for m in loaded if m.startswith(("fastapi", "pymongo", "uvicorn", "app.settings", "app.services",
                                                   "app.db", "app.main"))], loaded
    server = subprocess.run([sys.executable, "-c", probe, "token", "--user", "x"], env=cli.env,
                            capture_output=True, text=True, timeout=60)
    loaded = eval(server.stderr.splitlines()[-1])
    assert server.returncode == 0 and not [m for m in loaded if m.startswith(("rich", "httpx", "app.client.main"))], loaded


@pytest.mark.parametrize("shell, env", [
    ("bash", {"_ONEBOX_COMPLETE": "complete_bash", "COMP_WORDS": "onebox snap", "COMP_CWORD": "1"}),
    ("zsh", {"_ONEBOX_COMPLETE": "complete_zsh", "_TYPER_COMPLETE_ARGS": "onebox snap"}),
])
def test_shell_completion(cli, shell, env):
    script = subprocess.run([str(ONEBOX), "--show-completion", shell], env=cli.env, capture_output=True, text=True,
                            timeout=60)
    assert script.returncode == 0 and "_ONEBOX_COMPLETE" in script.stdout
    words = subprocess.run([str(ONEBOX)], env={**cli.env, **env}, capture_output=True, text=True, timeout=60)
    assert "snapshot" in words.stdout and "snapshots" in words.stdout and "create" not in words.stdout


def test_instance_names_complete(bob, ssh_keypair):
    created = invoke(bob, "create", "tab-box", "--ssh-user", "bob", "--ssh-key", str(ssh_keypair.private_path))
    assert created.exit_code == 0, created.stderr
    env = {**bob.env, "_ONEBOX_COMPLETE": "complete_bash", "COMP_WORDS": "onebox ssh ta", "COMP_CWORD": "2"}
    words = subprocess.run([str(ONEBOX)], env=env, capture_output=True, text=True, timeout=60)
    assert words.stdout.split() == ["tab-box"], words
    unreachable = {**env, "ONEBOX_URL": f"http://127.0.0.1:{free_port()}"}
    quiet = subprocess.run([str(ONEBOX)], env=unreachable, capture_output=True, text=True, timeout=60)
    assert (quiet.returncode, quiet.stdout.strip(), quiet.stderr) == (0, "", ""), "no server: no words, no error"


def test_ctrl_c_stops_watching_not_the_instance(live_server, bob, ssh_keypair):
    live_server.stop_worker()  # nothing moves: the command is surely still waiting when interrupted
    try:
        waiting = bob.popen("create", "patient", "--ssh-user", "bob", "--ssh-key", str(ssh_keypair.private_path),
                            "--wait")
        stderr = Reader(waiting.stderr)
        stderr.wait_for("queued local instance")
        waiting.send_signal(signal.SIGINT)
        code = waiting.wait(timeout=60)
    finally:
        live_server.start_worker()
    assert code == 130, stderr.text
    assert "error: stopped watching patient; it carries on: `onebox show patient`" in stderr.text
    assert "Traceback" not in stderr.text
    assert json.loads(invoke(bob, "show", "patient", "--json").stdout)["status"] != "deleted"
