"""playbooks/configure.yml, run for real: ansible-runner against local-provider instances.

A local instance is a real sshd on 127.0.0.N whose sessions have HOME on the
instance's own disk and carry ONEBOX_DISK / ONEBOX_LOCAL_INSTANCE (see
providers/local/), so every role runs its "local" branch here: nothing is
written outside the instance's directory.

The runs happen once, in the module fixture ``configured`` (ansible is slow:
runs on different instances overlap): instance A gets everything (agent, goofys
from a local http server, a bootstrap script full of Jinja syntax) and is run
twice (the second run must change nothing); instance B gets a bootstrap script
that exits 3, is run twice (same failure, script not run again), then once with
a wrong goofys checksum.  The tests check what these runs left behind.

The extravars are passed the way onebox must pass them: every string wrapped as
{"__ansible_unsafe": ...} (see ``unsafe``).
"""

from __future__ import annotations

import getpass
import hashlib
import http.server
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import ansible_runner

from app.configure.ansible import unsafe  # what onebox does to extra vars
import pytest

from app.ids import new_instance_id
from providers.base import InstanceRef, InstanceSpec
from providers.local import LocalConfig, LocalProvider

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = REPO_ROOT / "playbooks" / "configure.yml"
AGENT_SOURCE = REPO_ROOT / "playbooks" / "roles" / "agent" / "files" / "onebox_agent.py"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
SSH_USER = "alice"

# Jinja in user content must come out verbatim (and the lookup must never run).
PWNED = Path(tempfile.gettempdir()) / f"onebox-playbook-pwned-{os.getpid()}"
JINJA = "{{ not_a_var }} {% raw %} {{ lookup('pipe', 'touch " + str(PWNED) + "') }} {% endraw %} {# c #}"

BOOTSTRAP_OK = f"""#!/bin/sh
# {JINJA}
cat "$0" > "$HOME/bootstrap-copy.txt"
echo run >> "$HOME/bootstrap-runs.txt"
echo "hello from bootstrap {{{{ not_a_var }}}}"
i=0
while [ $i -lt 300 ]; do echo "line $i of the bootstrap output"; i=$((i + 1)); done
echo "the end {{% raw %}} {JINJA}"
"""

BOOTSTRAP_FAIL = """#!/bin/sh
echo run >> "$HOME/bootstrap-runs.txt"
echo "about to fail {{ nope }}"
exit 3
"""

FAKE_GOOFYS = """#!/bin/sh
# a stand-in for goofys: records how it was called, from which instance
printf '%s|' "$ONEBOX_LOCAL_INSTANCE" "$@" >> "$ONEBOX_DISK/goofys-calls.log"
echo >> "$ONEBOX_DISK/goofys-calls.log"
"""


# --- small local servers ------------------------------------------------------------


@dataclass
class MetricsServer:
    url: str
    posts: list = field(default_factory=list)


def _serve(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def metrics_server():
    """Stands in for onebox's POST /v1/agent/metrics."""
    posts = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            posts.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    _serve(server)
    yield MetricsServer(f"http://127.0.0.1:{server.server_address[1]}", posts)
    server.shutdown()
    server.server_close()


@dataclass
class GoofysServer:
    url: str
    sha256: str


@pytest.fixture(scope="module")
def goofys_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("goofys-download")
    (root / "goofys").write_text(FAKE_GOOFYS)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(root)))
    _serve(server)
    yield GoofysServer(f"http://127.0.0.1:{server.server_address[1]}/goofys",
                       hashlib.sha256(FAKE_GOOFYS.encode()).hexdigest())
    server.shutdown()
    server.server_close()


# --- instances and playbook runs ------------------------------------------------------


@dataclass
class Instance:
    spec: InstanceSpec
    host: str
    port: int
    dir: Path

    @property
    def disk(self) -> Path:
        return self.dir / "disk"

    @property
    def home(self) -> Path:
        return self.disk / "home" / SSH_USER


@dataclass
class Run:
    rc: int
    status: str
    stats: dict
    events: list

    def __repr__(self) -> str:  # what a failed assertion shows
        failed = [(task, res.get("msg"), res.get("stderr")) for task, res in self.failures()]
        return f"Run(rc={self.rc}, status={self.status!r}, failed={failed!r})"

    def task_events(self, task: str, event: str | None = None) -> list[dict]:
        return [e for e in self.events
                if e.get("event_data", {}).get("task") == task and (event is None or e["event"] == event)]

    def res(self, task: str, event: str = "runner_on_ok") -> dict:
        found = self.task_events(task, event)
        assert found, f"no {event} event for task {task!r}"
        return found[-1]["event_data"]["res"]

    def failures(self) -> list[tuple[str, dict]]:
        return [(e["event_data"]["task"], e["event_data"]["res"]) for e in self.events
                if e["event"] in ("runner_on_failed", "runner_on_unreachable")]

    @property
    def changed(self) -> dict:
        return self.stats.get("changed", {})


@pytest.fixture(scope="module")
def workdir():
    """Short paths: ssh control sockets must fit in sun_path."""
    d = Path(tempfile.mkdtemp(prefix="obpb-"))
    yield d
    # the ssh ControlPersist masters these runs started
    for socket in (d / "cp").glob("*") if (d / "cp").is_dir() else ():
        subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "onebox-test"],
                       capture_output=True, timeout=10)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def provider(workdir):
    local = LocalProvider(LocalConfig(root=workdir / "local"))
    yield local
    for resource in local.list_managed():
        if resource.kind == "instance":
            local.delete_instance(InstanceRef(resource.instance_id, resource.region))


def create_instance(provider, ssh_keypair) -> Instance:
    spec = InstanceSpec(
        instance_id=new_instance_id(), owner="alice", name="box", region="local", zone=None,
        machine_type="local", ssh_user=SSH_USER, ssh_public_key=ssh_keypair.public, disk_gb=20, image=None,
    )
    provider.create_instance(spec)
    info = provider.wait_running(spec.ref, 20)
    return Instance(spec, info.public_ip, info.ssh_port, Path(info.cloud_id))


class Runner:
    """Runs the playbook the way onebox does: ansible_runner, one host, extravars marked unsafe."""

    def __init__(self, workdir: Path, keypair):
        self.workdir = workdir
        self.keypair = keypair

    def start(self, instance: Instance, extravars: dict):
        private = Path(tempfile.mkdtemp(prefix="run-", dir=self.workdir))
        inventory = {"all": {"hosts": {instance.spec.instance_id: {
            "ansible_host": instance.host,
            "ansible_port": instance.port,
            "ansible_user": getpass.getuser(),
            "ansible_ssh_private_key_file": str(self.keypair.private_path),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={private / 'known_hosts'}",
        }}}}
        envvars = {
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",  # no -C: loopback
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.workdir / "cp"),
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "tmp"),
            "ANSIBLE_NOCOLOR": "1",
            # runner starts `ansible-playbook` from PATH: the one next to this Python
            "PATH": f"{ANSIBLE_PLAYBOOK.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        return ansible_runner.run_async(
            private_data_dir=str(private), playbook=str(PLAYBOOK), inventory=inventory,
            extravars=unsafe(extravars), envvars=envvars, quiet=True, timeout=150,
            cancel_callback=lambda: False,  # else runner takes over SIGINT/SIGTERM of the main thread
        )

    @staticmethod
    def wait(started) -> Run:
        thread, r = started
        thread.join(180)
        assert not thread.is_alive(), "ansible-runner did not finish"
        return Run(r.rc, r.status, r.stats or {}, list(r.events))

    def __call__(self, instance: Instance, extravars: dict) -> Run:
        return self.wait(self.start(instance, extravars))


@pytest.fixture(scope="module")
def run_playbook(workdir, ssh_keypair):
    return Runner(workdir, ssh_keypair)


def base_vars(instance: Instance, ssh_keypair, metrics_url: str, bootstrap: Path | None, **more) -> dict:
    values = {
        "onebox_instance_id": instance.spec.instance_id,
        "onebox_provider": "local",
        "onebox_ssh_user": SSH_USER,
        "onebox_ssh_public_key": ssh_keypair.public,
        "onebox_sudo": True,
        "onebox_agent_interval": 1,
        "onebox_agent_config": {
            "url": metrics_url, "token": "tok-{{ 7 * 7 }}-secret", "instance_id": instance.spec.instance_id,
            "interval": 1, "buffer_size": 10, "timeout": 5, "log_file": "/var/log/onebox-agent.log",
        },
        "onebox_bootstrap_file": str(bootstrap) if bootstrap else "",
        "onebox_bootstrap_poll": 1,
        "onebox_goofys_url": "",
        "onebox_goofys_sha256": "",
        "onebox_goofys_buckets": [],
    }
    values.update(more)
    return values


def evil_key(ssh_keypair) -> str:
    kind, blob = ssh_keypair.public.split()[:2]
    return f"{kind} {blob} alice {JINJA}"


def agent_pid(instance: Instance) -> int | None:
    """The agent's pid, or None while no agent has written it (a start has not got that far)."""
    try:
        return int((instance.disk / "run" / "onebox-agent.pid").read_text().strip())
    except FileNotFoundError:
        return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@dataclass
class Configured:
    instance: Instance
    vars: dict
    first: Run
    pid_after_first: int
    second: Run
    failing: Instance  # another instance, whose bootstrap script fails
    failing_run: Run
    failing_rerun: Run
    bad_checksum_run: Run  # on the failing instance, with goofys whose checksum is wrong


@pytest.fixture(scope="module")
def configured(provider, ssh_keypair, run_playbook, metrics_server, goofys_server, workdir) -> Configured:
    """One instance configured with everything on, then the same run again; meanwhile
    a second instance whose bootstrap script fails (runs overlap: ansible is slow)."""
    instance = create_instance(provider, ssh_keypair)
    failing = create_instance(provider, ssh_keypair)
    bootstrap_ok = workdir / "bootstrap-ok.sh"
    bootstrap_ok.write_text(BOOTSTRAP_OK)
    bootstrap_fail = workdir / "bootstrap-fail.sh"
    bootstrap_fail.write_text(BOOTSTRAP_FAIL)
    values = base_vars(
        instance, ssh_keypair, metrics_server.url, bootstrap_ok,
        onebox_ssh_public_key=evil_key(ssh_keypair),
        onebox_goofys_url=goofys_server.url,
        onebox_goofys_sha256=goofys_server.sha256,
        onebox_goofys_buckets=[
            {"bucket": "data-bucket", "mountpoint": "/mnt/data"},
            {"bucket": "other {{ x }}", "mountpoint": "~/buckets/other", "endpoint": "https://s3.example.test"},
        ],
    )
    failing_values = base_vars(failing, ssh_keypair, metrics_server.url, bootstrap_fail)
    failing_started = run_playbook.start(failing, failing_values)
    first = run_playbook(instance, values)
    pid = agent_pid(instance) if first.rc == 0 else -1
    failing_run = run_playbook.wait(failing_started)
    failing_started = run_playbook.start(failing, failing_values)
    second = run_playbook.start(instance, values)
    failing_rerun = run_playbook.wait(failing_started)
    bad_checksum_run = run_playbook(failing, dict(
        failing_values, onebox_goofys_url=goofys_server.url, onebox_goofys_sha256="0" * 64,
        onebox_goofys_buckets=[{"bucket": "b", "mountpoint": "/mnt/b"}]))
    return Configured(instance, values, first, pid, run_playbook.wait(second), failing, failing_run,
                      failing_rerun, bad_checksum_run)


# --- the tests -----------------------------------------------------------------------


def test_first_run_succeeds(configured):
    run = configured.first
    assert run.rc == 0, run
    assert run.status == "successful"
    assert run.changed, "a first run changes things"


def test_key_is_authorized_verbatim(configured, ssh_keypair):
    authorized = configured.instance.home / ".ssh" / "authorized_keys"
    assert authorized.read_text().splitlines() == [evil_key(ssh_keypair)]
    assert stat.S_IMODE(authorized.stat().st_mode) == 0o600
    assert stat.S_IMODE(authorized.parent.stat().st_mode) == 0o700
    assert not PWNED.exists(), "a lookup in user data was evaluated"


def test_agent_installed_and_configured(configured, metrics_server):
    disk = configured.instance.disk
    agent = disk / "opt" / "onebox-agent" / "onebox_agent.py"
    assert agent.read_bytes() == AGENT_SOURCE.read_bytes()
    config_file = disk / "opt" / "onebox-agent" / "onebox-agent.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    config = json.loads(config_file.read_text())
    expected = dict(configured.vars["onebox_agent_config"])
    expected.update(log_file=str(disk / "var" / "log" / "onebox-agent.log"), disk_path=str(disk), interval=1,
                    sshd_pid_file=str(disk.parent / "run" / "sshd.pid"))  # its own sshd's sessions only
    assert config == expected
    assert "secret" not in json.dumps(configured.first.events), "the agent token leaked into the events"


def test_agent_runs_in_the_background_and_posts(configured, metrics_server):
    instance = configured.instance
    pid = configured.pid_after_first
    assert alive(pid)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"ONEBOX_LOCAL_INSTANCE={instance.spec.instance_id}".encode() in environ

    def posted():
        return [p for p in metrics_server.posts
                if json.loads(p["body"]).get("instance_id") == instance.spec.instance_id]

    posts = wait_for(posted, 20, "a metrics POST from the agent")
    assert posts[0]["path"] == "/v1/agent/metrics"
    sample = json.loads(posts[0]["body"])["samples"][0]
    assert isinstance(sample["ssh_sessions"], int), "its sshd's pid file was found"
    assert isinstance(sample["disk_read_bytes"], int)
    assert posts[0]["auth"] == "Bearer tok-{{ 7 * 7 }}-secret"
    wait_for(lambda: (instance.disk / "var" / "log" / "onebox-agent.log").exists(), 5, "the agent log")


def test_bootstrap_ran_verbatim_once(configured):
    home = configured.instance.home
    assert (home / "bootstrap-copy.txt").read_text() == BOOTSTRAP_OK
    assert (home / "bootstrap-runs.txt").read_text() == "run\n"
    script = configured.instance.disk / "var" / "lib" / "onebox" / "bootstrap" / "bootstrap.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o700
    assert not PWNED.exists()


def test_bootstrap_result_holds_the_output_tail(configured):
    res = configured.first.res("bootstrap result")
    tail = res["stdout"]
    assert tail.endswith(f"the end {{% raw %}} {JINJA}")
    assert "line 299 of the bootstrap output" in tail
    assert "hello from bootstrap" not in tail  # earlier than the last 4096 bytes
    assert len(tail.encode()) <= 4096
    assert configured.first.res("bootstrap exit code")["stdout"] == "0"


def test_goofys_installed_and_mounted(configured, goofys_server):
    instance = configured.instance
    binary = instance.disk / "usr" / "local" / "bin" / "goofys"
    assert binary.read_text() == FAKE_GOOFYS
    assert stat.S_IMODE(binary.stat().st_mode) == 0o755
    calls = (instance.disk / "goofys-calls.log").read_text().splitlines()
    iid = instance.spec.instance_id
    assert calls == [
        f"{iid}|data-bucket|{instance.disk}/mnt/data|",
        f"{iid}|--endpoint|https://s3.example.test|other {{{{ x }}}}|{instance.home}/buckets/other|",
    ]
    assert (instance.disk / "mnt" / "data").is_dir()
    assert (instance.home / "buckets" / "other").is_dir()
    assert not configured.first.task_events("goofys skipped: no URL configured", "runner_on_ok")


def test_second_run_changes_nothing(configured):
    run = configured.second
    assert run.rc == 0, run
    assert run.changed == {}, [e["event_data"]["task"] for e in run.events
                               if e["event"] == "runner_on_ok" and e["event_data"]["res"].get("changed")]
    instance = configured.instance
    assert (instance.home / "bootstrap-runs.txt").read_text() == "run\n"
    assert len((instance.disk / "goofys-calls.log").read_text().splitlines()) == 2
    assert agent_pid(instance) == configured.pid_after_first
    assert alive(configured.pid_after_first)
    assert run.res("bootstrap result")["stdout"] == configured.first.res("bootstrap result")["stdout"]


def test_changed_agent_config_restarts_the_agent(configured, run_playbook):
    values = json.loads(json.dumps(configured.vars))
    values["onebox_agent_config"]["buffer_size"] = 11
    run = run_playbook(configured.instance, values)
    assert run.rc == 0, run
    assert set(run.changed.values()) == {2}  # the config file, and the agent restart
    assert run.res("onebox agent is running (local instance)")["changed"]
    new_pid = agent_pid(configured.instance)
    assert new_pid != configured.pid_after_first
    assert alive(new_pid)
    assert not alive(configured.pid_after_first)


def test_the_agent_comes_back_after_stop_and_start(configured, provider, metrics_server):
    """Configuration is not run again after a start: the agent starts at boot, as its unit would on a VM."""
    instance = configured.instance
    before = agent_pid(instance)
    assert alive(before)
    provider.stop_instance(instance.spec.ref, 20)
    assert not alive(before), "stop ends the agent"
    boot = instance.disk / "etc" / "onebox" / "boot.d" / "onebox-agent"
    assert str(instance.disk) not in boot.read_text(), "paths relative to the disk: a snapshot's copy works too"
    posts_before = len(metrics_server.posts)
    provider.start_instance(instance.spec.ref, 20)
    after = wait_for(lambda: (pid := agent_pid(instance)) != before and alive(pid) and pid, 60,
                     "the agent started again")
    environ = Path(f"/proc/{after}/environ").read_bytes().split(b"\0")
    assert f"ONEBOX_LOCAL_INSTANCE={instance.spec.instance_id}".encode() in environ
    wait_for(lambda: len(metrics_server.posts) > posts_before, 20, "a metrics POST from the restarted agent")


def test_wrong_goofys_checksum_fails(configured):
    run = configured.bad_checksum_run
    assert run.rc != 0
    [(task, res)] = run.failures()
    assert task == "goofys binary"
    assert "checksum" in res["msg"].lower()
    assert not (configured.failing.disk / "usr" / "local" / "bin" / "goofys").exists()


def test_failing_bootstrap_fails_the_run(configured):
    run = configured.failing_run
    assert run.rc != 0
    assert run.status == "failed"
    [(task, res)] = run.failures()
    assert task == "bootstrap exit code"
    assert res["rc"] == 3
    assert res["stdout"] == "3"
    assert "exited with code 3" in res["stderr"]
    assert run.res("bootstrap result")["stdout"] == "about to fail {{ nope }}"
    assert (configured.failing.home / "bootstrap-runs.txt").read_text() == "run\n"


def test_failed_bootstrap_is_not_run_again(configured):
    """Run again, the play reports the same failure from the marker, changing nothing."""
    run = configured.failing_rerun
    assert run.rc != 0
    [(task, res)] = run.failures()
    assert (task, res["rc"]) == ("bootstrap exit code", 3)
    assert run.changed == {}
    assert not run.task_events("bootstrap run", "runner_on_ok")
    assert (configured.failing.home / "bootstrap-runs.txt").read_text() == "run\n"


def test_goofys_skipped_without_url(configured):
    run = configured.failing_run
    [skip] = run.task_events("goofys skipped: no URL configured", "runner_on_ok")
    assert "onebox_goofys_url is empty" in skip["event_data"]["res"]["msg"]
    assert not run.task_events("goofys binary")
    assert not (configured.failing.disk / "usr" / "local" / "bin" / "goofys").exists()


def test_deleting_the_instance_stops_the_agent(configured, provider):
    instance = configured.failing  # its agent was started before its bootstrap failed
    pid = agent_pid(instance)
    assert alive(pid)
    provider.delete_instance(instance.spec.ref)
    assert not alive(pid)
    assert not instance.dir.exists()
