"""Running the configuration playbook with ansible-runner, one private data dir per run.

``run_playbook`` blocks (the worker calls it in a thread). It writes the
inventory, extra vars and the user's bootstrap script into a fresh private
data directory, runs ``playbooks/configure.yml`` (or another playbook: a QA
run's ``playbooks/qa.yml``, against all its instances at once) with a
timeout, turns task events into instance events through ``on_event``, and
removes the directory afterwards: it holds the agent token and must not
linger.

User-supplied values never pass through Jinja: the bootstrap script travels as
a file the playbook copies verbatim, and the other values are data in extra
vars that the roles hand to modules as parameters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from app.logs import scrub
from app.settings import REPO_ROOT

PLAYBOOK = REPO_ROOT / "playbooks" / "configure.yml"
# Our environment's ansible-playbook comes first, whatever PATH the service was started with.
VENV_BIN = str(Path(sys.executable).parent)
BOOTSTRAP_RESULT_TASK = "bootstrap result"
BOOTSTRAP_EXIT_TASK = "bootstrap exit code"
MAX_EVENT_OUTPUT = 4096


@dataclass
class PlaybookTarget:
    host: str
    port: int
    login: str  # the account Ansible logs in as
    private_key: Path
    known_hosts: list[str]  # the instance's host key lines, recorded on first contact
    name: str = "instance"  # its name in the inventory (several targets: one play over all of them)
    host_vars: dict[str, Any] = field(default_factory=dict)  # onebox's own values only, never user input
    connect_timeout: int = 15  # seconds one SSH connection may take (a slow emulated guest needs more)


@dataclass
class PlaybookResult:
    status: str  # successful, failed, timeout, canceled
    rc: int
    failed_task: str | None = None
    failed_message: str | None = None
    unreachable: bool = False
    changed: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def unsafe(value: Any) -> Any:
    """Mark every string as data Ansible must never template.

    ansible-core 2.19 trusts the extra-vars file ansible-runner writes, so a
    ``{{ ... }}`` in any value (an SSH key's comment, say) would run on this
    host. Wrapped as ``{"__ansible_unsafe": ...}`` it stays a plain string.
    """
    if isinstance(value, str):
        return {"__ansible_unsafe": value}
    if isinstance(value, dict):
        return {k: unsafe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [unsafe(v) for v in value]
    return value


def _close_control_masters(control_dir: Path) -> None:
    """End the SSH connections Ansible kept open, so no session lingers on the instance."""
    for sock in control_dir.iterdir():
        with contextlib.suppress(Exception):
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "onebox"],
                           capture_output=True, timeout=10)


def _result_message(res: dict[str, Any]) -> str:
    for key in ("msg", "stderr", "stdout", "module_stderr", "reason"):
        value = res.get(key)
        if value:
            return str(value)[-MAX_EVENT_OUTPUT:]
    return "failed"


def run_playbook(
    target: PlaybookTarget | list[PlaybookTarget],
    extravars: dict[str, Any],
    bootstrap_script: str | None,
    on_event: Callable[[str, str, str | None], None],
    *,
    timeout: float,
    work_root: Path,
    playbook: Path = PLAYBOOK,
) -> PlaybookResult:
    import ansible_runner

    work_root.mkdir(parents=True, exist_ok=True)
    private_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work_root))
    try:
        (private_dir / "env").mkdir()
        known_hosts = private_dir / "known_hosts"
        targets = target if isinstance(target, list) else [target]
        known_hosts.write_text("".join(line.strip() + "\n" for t in targets for line in t.known_hosts))
        extravars = dict(extravars)
        extravars["onebox_bootstrap_file"] = ""  # our own path, not user input
        if bootstrap_script is not None:
            script = private_dir / "bootstrap.sh"
            script.write_text(bootstrap_script)  # data, never a template
            script.chmod(0o600)
            extravars["onebox_bootstrap_file"] = str(script)
        inventory = {"all": {"hosts": {t.name: {
            **t.host_vars,
            "ansible_host": t.host,
            "ansible_port": t.port,
            "ansible_user": t.login,
            "ansible_ssh_private_key_file": str(t.private_key),
        } for t in targets}}}
        connect_timeout = max(t.connect_timeout for t in targets)  # one SSH setting for the play: the most patient
        control_dir = Path(tempfile.mkdtemp(prefix="cp-", dir="/tmp"))  # a short path: sockets have a length limit
        ssh_args = (f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o ControlMaster=auto "
                    f"-o ControlPersist=30s -o ServerAliveInterval=15 -o ConnectTimeout={connect_timeout} "
                    f"-o IdentitiesOnly=yes")
        envvars = {
            "ANSIBLE_HOST_KEY_CHECKING": "True",
            "ANSIBLE_SSH_ARGS": ssh_args,
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir),
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_NOCOLOR": "True",
            "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
            "ANSIBLE_ROLES_PATH": str(PLAYBOOK.parent / "roles"),
            "ANSIBLE_TIMEOUT": str(max(30, connect_timeout)),
            "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
        }
        result = PlaybookResult(status="unknown", rc=-1)

        def handler(event: dict[str, Any]) -> bool:
            kind = event.get("event")
            data = event.get("event_data") or {}
            task = (data.get("task") or "").strip()
            res = data.get("res") or {}
            if len(targets) > 1 and data.get("host"):
                task = f"{task} ({data['host']})"  # one play over several instances: say which one
            if kind == "playbook_on_task_start":
                on_event("ansible.task", f"task: {task}", task)
            elif kind == "runner_on_ok":
                if task == BOOTSTRAP_RESULT_TASK:
                    on_event("bootstrap.output", str(res.get("stdout", ""))[-MAX_EVENT_OUTPUT:], task)
                elif task == BOOTSTRAP_EXIT_TASK:
                    on_event("bootstrap.exit", f"bootstrap script exited with {str(res.get('stdout', '')).strip()}", task)
                else:
                    on_event("ansible.ok", f"{'changed' if res.get('changed') else 'ok'}: {task}", task)
            elif kind == "runner_on_skipped":
                on_event("ansible.skipped", f"skipped: {task}", task)
            elif kind in ("runner_on_failed", "runner_on_unreachable"):
                if data.get("ignore_errors"):
                    return True
                message = _result_message(res)
                if kind == "runner_on_unreachable":
                    result.unreachable = True
                if result.failed_task is None:
                    result.failed_task, result.failed_message = task, message
                on_event("ansible.failed" if kind == "runner_on_failed" else "ansible.unreachable",
                         f"{task}: {message}", task)
            return True

        runner = ansible_runner.run(
            private_data_dir=str(private_dir),
            playbook=str(playbook),
            inventory=inventory,
            extravars=unsafe(extravars),
            envvars=envvars,
            event_handler=handler,
            timeout=int(timeout),
            quiet=True,
            json_mode=False,
        )
        _close_control_masters(control_dir)
        shutil.rmtree(control_dir, ignore_errors=True)
        result.status, result.rc = runner.status, runner.rc
        if result.status != "successful" and result.failed_task is None:
            # Failed before any task (a syntax error, a missing interpreter): the end of the output says why.
            with contextlib.suppress(Exception):
                tail = [l for l in runner.stdout.read().splitlines() if l.strip()][-6:]
                result.failed_task, result.failed_message = "ansible-playbook", scrub(" | ".join(tail))[-1500:]
        stats = runner.stats or {}
        result.stats = stats
        result.changed = sum((stats.get("changed") or {}).values())
        return result
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
