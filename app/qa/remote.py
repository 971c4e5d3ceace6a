"""How a QA run reaches its instances: shell commands over SSH, as onebox's deploy key.

Each instance is reached the way configuration reached it (``ssh_endpoint``,
the deploy key, and only the SSH host key recorded at configuration: no
trust on first use). The other end of a one-instance network test is onebox's
own host, reached by ``HostShell`` with the same interface.

Every process a run starts carries ``ONEBOX_QA_RUN=<run id>`` in its
environment, and every file it writes lives in the run's directory
(``~/.onebox-qa/<run id>``). ``stop_script`` finds the run's processes by that
marker (the login user's own processes only) and ends them, so a step run
again after a crash starts clean, and ``teardown_script`` also removes the
directory: nothing of a run outlives it, whether it passed, failed or was
cancelled. Killing the local ``ssh`` client is not enough for that: a command
without a terminal keeps running on the far side when its connection drops.

While a command runs, ``watch`` is asked about once a second whether the run
was cancelled; if so the command is abandoned at once (``RunCancelled``) and
the job's cleanup stops what it left on the instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

from providers.base import ProviderError

MARKER = "ONEBOX_QA_RUN"
SSH_UNREACHABLE = 255  # ssh's own exit status when it could not connect or authenticate
WATCH_SECONDS = 1.0
OUTPUT_LIMIT = 16 * 1024 * 1024  # a tool's JSON is far smaller; more means something is wrong


class RunCancelled(ProviderError):
    """The run's owner cancelled it while a command was running."""

    def __init__(self) -> None:
        super().__init__("cancelled by its owner", code="cancelled")


@dataclass(frozen=True)
class Endpoint:
    """One instance as a QA run reaches it."""

    instance_id: str
    host: str  # where SSH reaches it
    port: int
    login: str  # the account (the SSH user on a VM; onebox's own OS account on a local instance)
    kind: str  # "local" (an sshd of the local provider) or "vm"
    known_hosts: tuple[str, ...]  # its host key lines, recorded at configuration
    address: str  # the address its peer uses to reach it (the private one within one network)
    ssh_port: int  # its SSH port as a peer sees it (the round-trip probe's target)


@dataclass
class Completed:
    rc: int
    stdout: str
    stderr: str

    def tail(self, chars: int = 400) -> str:
        text = (self.stderr.strip() or self.stdout.strip())
        return " ".join(text.splitlines()[-4:])[-chars:]


Watch = Callable[[], Awaitable[bool]]


def run_dir(run_id: str) -> str:
    """The run's directory, as a shell word the remote shell expands (run ids are [a-z0-9-])."""
    return f'"$HOME/.onebox-qa/{run_id}"'


def marked(run_id: str, command: str) -> str:
    """``command`` in a shell whose processes carry the run's marker."""
    return f"{MARKER}={run_id}; export {MARKER}; {command}"


def _scan(run_id: str) -> str:
    # Reads /proc/<pid>/environ: only the login user's own processes are readable, so only they are found.
    return (f'for p in /proc/[0-9]*; do [ "$p" = /proc/$$ ] && continue; '
            f'{{ tr "\\000" "\\n" < "$p/environ"; }} 2>/dev/null | grep -qx "{MARKER}={run_id}" && echo "${{p#/proc/}}"; '
            f'done')


def stop_script(run_id: str) -> str:
    """End every process of the run (TERM, then KILL for the ones left a second later); print how many."""
    return (f'found=$({_scan(run_id)}); '
            f'if [ -n "$found" ]; then kill -TERM $found 2>/dev/null; sleep 1; '
            f'left=$({_scan(run_id)}); [ -n "$left" ] && kill -KILL $left 2>/dev/null; fi; '
            f'echo "$found" | grep -c . || true')


def teardown_script(run_id: str) -> str:
    """Stop the run's processes, then remove its directory."""
    return f"{stop_script(run_id)}; rm -rf {run_dir(run_id)}"


class _Shell:
    name: str

    env: dict[str, str] | None = None  # None: the worker's own environment

    def __init__(self, watch: Watch | None) -> None:
        self.watch = watch

    def argv(self, script: str) -> list[str]:
        raise NotImplementedError

    async def run(self, script: str, *, timeout: float, stdin: bytes | None = None) -> Completed:
        """Run ``script`` (a POSIX shell command line); its exit status, stdout and stderr."""
        proc = await asyncio.create_subprocess_exec(
            *self.argv(script), stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True,
            limit=OUTPUT_LIMIT, env=self.env)
        talk = asyncio.ensure_future(proc.communicate(stdin))
        deadline = time.monotonic() + timeout
        try:
            while True:
                done, _ = await asyncio.wait({talk}, timeout=min(WATCH_SECONDS, max(0.05, deadline - time.monotonic())))
                if done:
                    out, err = talk.result()
                    return Completed(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))
                if time.monotonic() >= deadline:
                    raise ProviderError(f"a command on {self.name} did not finish within {timeout:.0f}s",
                                        code="qa_timeout")
                if self.watch is not None and await self.watch():
                    raise RunCancelled()
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 5)
            if not talk.done():
                talk.cancel()
                with contextlib.suppress(BaseException):
                    await talk


class SshShell(_Shell):
    """Commands on one instance, as onebox's deploy key, trusting only its recorded host key.

    The commands of one step share one SSH connection (a control master that lingers
    ``CONTROL_PERSIST`` seconds after its last session): a handshake costs far more than a
    command, and a step runs a dozen. ``close`` ends it."""

    CONTROL_PERSIST = 30

    def __init__(self, endpoint: Endpoint, private_key: Path, work_dir: Path, watch: Watch | None = None) -> None:
        super().__init__(watch)
        self.endpoint = endpoint
        self.name = endpoint.instance_id
        self.private_key = private_key
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.known_hosts = work_dir / f"known_hosts-{endpoint.instance_id}"
        self.known_hosts.write_text("".join(line.strip() + "\n" for line in endpoint.known_hosts))
        # a short path: a socket's path has a length limit; one per instance and worker process
        digest = hashlib.sha1(f"{os.getpid()}:{endpoint.instance_id}:{work_dir}".encode()).hexdigest()[:16]
        self.control_path = Path(tempfile.gettempdir()) / f"onebox-qa-{digest}"

    def _options(self) -> list[str]:
        e = self.endpoint
        return ["-i", str(self.private_key), "-p", str(e.port),
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=15",
                "-o", f"ControlPath={self.control_path}", "-o", "LogLevel=ERROR"]

    def argv(self, script: str) -> list[str]:
        e = self.endpoint
        # ControlMaster=no: use the shared connection when it is there, else connect on its own (a command
        # that became the master would keep its output pipes open for as long as the master lives)
        return ["ssh", *self._options(), "-o", "ControlMaster=no", f"{e.login}@{e.host}", script]

    async def _open(self) -> None:
        """Start the shared connection, in the background, with no pipe of ours (``-f -N``)."""
        if self.control_path.exists():
            return
        e = self.endpoint
        proc = await asyncio.create_subprocess_exec(
            "ssh", *self._options(), "-o", "ControlMaster=yes", "-o", f"ControlPersist={self.CONTROL_PERSIST}",
            "-f", "-N", f"{e.login}@{e.host}", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        # Whatever happened, commands still work without it (they connect on their own).

    async def close(self) -> None:
        """End the shared connection now (it would linger ``CONTROL_PERSIST`` seconds)."""
        if not self.control_path.exists():
            return
        e = self.endpoint
        proc = await asyncio.create_subprocess_exec(
            "ssh", *self._options(), "-O", "exit", f"{e.login}@{e.host}", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 10)

    async def run(self, script: str, *, timeout: float, stdin: bytes | None = None) -> Completed:
        await self._open()
        done = await super().run(script, timeout=timeout, stdin=stdin)
        if done.rc == SSH_UNREACHABLE:
            raise ProviderError(f"could not reach {self.name} over SSH: {done.tail()}", retryable=True,
                                code="unreachable")
        return done


class HostShell(_Shell):
    """Commands on onebox's own host (the far end of a one-instance network test), with ``HOME`` set to a
    directory of onebox's data dir so the run's files land there, not in the service account's home."""

    name = "onebox's host"

    def __init__(self, home: Path, watch: Watch | None = None) -> None:
        super().__init__(watch)
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.env = {**os.environ, "HOME": str(home)}

    def argv(self, script: str) -> list[str]:
        return ["/bin/sh", "-c", script]


def quote(value: object) -> str:
    return shlex.quote(str(value))
