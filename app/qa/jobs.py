"""The job of a QA run: install the tools, run the suite's checks, judge them, leave nothing behind.

A run is a job like any other (``app.lifecycle.engine``): one job definition
per suite, whose steps are ``prepare`` (the ``playbooks/qa.yml`` play over all
the run's instances: the suite's OS packages, the run's directory and scripts;
then each instance's facts), the suite's own steps, and ``teardown`` (every
process of the run stopped, its directory removed, on every instance). Each
step records its results in ``results.<step>`` of the run's document when it
is done; a worker that dies mid-step is replaced by another that runs the step
again from a clean slate (each step first stops whatever the run still has
running). A failure of the run itself (an instance unreachable, the tools not
installable) ends in ``error``; a cancel request (the owner's ``DELETE``, or a
delete of one of its instances) stops the command in flight within a second
and ends in ``cancelled``. Either way the cleanup tears down like ``teardown``.

A tool that fails on one check makes that check's result ``error`` (with the
tool's own message) and the run goes on with the others; the run then ends in
``error`` unless a check failed outright. A measurement is judged against its
baseline (``app.qa.baselines``) as soon as it is made, so progress events say
pass or fail right away.

Network tests never leave a server listening for anyone: the iperf3 server is
bound to the address its peer uses, serves one test (``-1``) and exits, gives
up after ``--idle-timeout``, and (when iperf3 was built with OpenSSL) admits
only a client holding the credentials made for that one test (an RSA key pair
and a random password, never stored, removed after the test).
"""

from __future__ import annotations

import asyncio
import getpass
import hashlib
import io
import json
import secrets
import shutil
import socket
import tarfile
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import urlparse

from app.audit import record_system_action
from app.clock import utcnow
from app.configure.ansible import PlaybookTarget, run_playbook
from app.configure.keys import deploy_key
from app.configure.service import ssh_endpoint, ssh_patience
from app.lifecycle.engine import JobBase, JobContext
from app.lifecycle.states import QA_RUN_TRANSITIONS, QaRunStatus
from app.qa import parsers
from app.qa.baselines import format_value, judge, verdict_of
from app.qa.models import flatten_results
from app.qa.remote import Endpoint, HostShell, SshShell, marked, quote, run_dir, stop_script, teardown_script
from app.qa.repository import QaRepository
from app.qa.suites import SUITES, Suite, job_steps
from app.settings import REPO_ROOT
from providers.base import ProviderError

Q = QaRunStatus
QA_PLAYBOOK = REPO_ROOT / "playbooks" / "qa.yml"
IPERF3_USER = "onebox-qa"
HOST = "onebox-host"  # a result's target when the far end was onebox's own host
COMMAND_MARGIN = 120.0  # seconds a command may take beyond its tool's own run time
CONNECT_TRIES = 8  # the iperf3 server daemonizes before it listens: the client tries again shortly after


# --- the run's view of its instances ------------------------------------------------------------

@dataclass
class Run:
    """What the steps of one run need: its document, its instances' shells, and how to record results."""

    ctx: JobContext
    suite: Suite
    endpoints: dict[str, Endpoint]
    shells: dict[str, SshShell]
    host: HostShell
    repo: QaRepository

    @property
    def doc(self) -> dict[str, Any]:
        return self.ctx.doc

    @property
    def run_id(self) -> str:
        return self.doc["_id"]

    @property
    def params(self) -> dict[str, Any]:
        return self.doc["params"]

    @property
    def settings(self):
        return self.ctx.services.settings

    def target(self, instance_id: str) -> dict[str, Any]:
        return next(t for t in self.doc["targets"] if t["instance_id"] == instance_id)

    def facts(self, instance_id: str) -> dict[str, Any]:
        return (self.doc.get("facts") or {}).get(instance_id) or {}

    async def event(self, type_: str, message: str, step: str | None = None) -> None:
        await self.ctx.event(type_, message, step)

    async def result(self, step: str, check: str, instance_id: str, *, value: float | None = None,
                     verdict: str | None = None, message: str = "", details: dict | None = None,
                     target: str | None = None, comparable: bool = True) -> dict[str, Any]:
        """One check's result: a measurement is judged against its baseline here, when it is made."""
        definition = self.suite.check(check)
        storable(details)
        baseline = None
        if verdict is None:
            if value is None:
                raise ValueError(f"{check}: a measurement needs a value")
            if comparable:
                where = self.target(instance_id)
                baseline = await self.ctx.db_call(lambda: self.repo.baseline_for(
                    self.suite.name, definition, where["provider"], where["machine_type"],
                    runs=self.settings.qa_baseline_runs, min_runs=self.settings.qa_baseline_min_runs,
                    exclude_run=self.run_id), "reading a baseline")
                verdict, message = judge(definition, value, baseline)
            else:
                verdict = "pass"
                message = f"{format_value(value, definition.unit)} ({message_not_compared()})"
        result = {"check": check, "title": definition.title, "instance_id": instance_id, "target": target,
                  "verdict": verdict, "value": None if value is None else round(float(value), 6),
                  "unit": definition.unit, "better": definition.better, "message": message,
                  "baseline": baseline.as_doc() if baseline else None, "details": details, "step": step,
                  "comparable": comparable, "at": utcnow()}
        where = f" [{target}]" if target else ""
        await self.event(f"qa.{verdict}", f"{check} on {instance_id}{where}: {message}", step)
        return result

    async def errors(self, step: str, checks: list[str], instance_id: str, message: str,
                     target: str | None = None) -> list[dict[str, Any]]:
        return [await self.result(step, c, instance_id, verdict="error", message=message, target=target)
                for c in checks]

    async def skips(self, step: str, checks: list[str], instance_id: str, reason: str,
                    target: str | None = None) -> list[dict[str, Any]]:
        return [await self.result(step, c, instance_id, verdict="skip", message=f"skipped: {reason}", target=target)
                for c in checks]


def storable(value: Any, inside_list: bool = False) -> None:
    """Fail early on what not every MongoDB-wire server stores: nested arrays, dotted or $-field names."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or "." in key or key.startswith("$"):
                raise ValueError(f"field name {key!r} cannot be stored")
            storable(item)
    elif isinstance(value, (list, tuple)):
        if inside_list:
            raise ValueError("nested arrays cannot be stored")
        for item in value:
            storable(item, inside_list=True)


def message_not_compared() -> str:
    return "measured against onebox's host: not compared with a baseline"


async def _build_run(ctx: JobContext, suite: Suite, repo: QaRepository, watch: Callable[[], Awaitable[bool]],
                     need_running: bool = True) -> Run:
    settings = ctx.services.settings
    ids = ctx.doc["instances"]
    docs = {d["_id"]: d async for d in ctx.services.db.instances.find({"_id": {"$in": ids}})}
    private_key, _ = deploy_key(settings.data_dir)
    work = settings.data_dir / "qa" / ctx.doc["_id"]
    endpoints: dict[str, Endpoint] = {}
    for instance_id in ids:
        doc = docs.get(instance_id)
        if doc is None or doc["status"] != "running" or not doc.get("public_ip"):
            if need_running:
                status = doc["status"] if doc else "gone"
                raise ProviderError(f"instance {instance_id} is {status}, no longer running", code="instance_not_running")
            continue
        host, port, kind = ssh_endpoint(settings, doc)
        login = getpass.getuser() if kind == "local" else doc["ssh_user"]
        endpoints[instance_id] = Endpoint(instance_id=instance_id, host=host, port=port, login=login, kind=kind,
                                          known_hosts=tuple(doc.get("ssh_host_keys") or ()),
                                          address=_peer_address(doc, docs, ids), ssh_port=doc.get("ssh_port") or 22)
    shells = {i: SshShell(e, private_key, work, watch) for i, e in endpoints.items()}
    host = HostShell(settings.data_dir / "qa" / "host", watch)
    return Run(ctx, suite, endpoints, shells, host, repo)


def _peer_address(doc: dict[str, Any], docs: dict[str, dict], ids: list[str]) -> str:
    """The private address when every instance of the run shares the provider and region, else the public one."""
    same_network = len({(d["provider"], d["region"]) for d in docs.values()}) == 1 and len(docs) == len(ids)
    return (doc.get("private_ip") if same_network else None) or doc["public_ip"]


# --- prepare and teardown ---------------------------------------------------------------------------

PROBE = "onebox_qa_probe.py"


def probe(run_id: str, args: str) -> str:
    return f"python3 {run_dir(run_id)}/{PROBE} {args}"


async def prepare(run: Run, step: str) -> dict[str, Any]:
    """The run's directory and scripts on every instance, then each instance's facts; the qa_tools role runs
    (over all the instances that need it at once) when a tool the suite needs is missing, or always with
    ``ONEBOX_QA_INSTALL=always``."""
    settings = run.settings
    facts = {instance_id: await _facts(run, instance_id) for instance_id in run.shells}
    # no Python (the probe's own): the role's base part installs it along with the tools
    missing = {i: ["python3", *run.suite.tools] if f is None else [t for t in run.suite.tools if not f["tools"].get(t)]
               for i, f in facts.items()}
    needing = [i for i in run.shells if settings.qa_install == "always" or missing[i]]
    if needing:
        if any(missing.values()):
            await run.event("qa.install", "installing " + "; ".join(f"{', '.join(m)} on {i}" for i, m in
                                                                     missing.items() if m), step)
        await _install_tools(run, step, needing)
        facts.update({instance_id: await _facts(run, instance_id, required=True) for instance_id in needing})
    elif run.suite.tools:
        await run.event("qa.install", f"{', '.join(run.suite.tools)} already installed: nothing to install", step)
    for instance_id, f in facts.items():
        tools = ", ".join(v for v in f["tools"].values() if v) or "none of the tools"
        await run.event("qa.facts", f"{instance_id}: {f['nproc']} vCPUs, {f.get('os') or 'unknown OS'}; {tools}", step)
    return {"facts": facts}


async def _facts(run: Run, instance_id: str, required: bool = False) -> dict[str, Any] | None:
    """Put the run's scripts in place (again: cheap, and the directory may be new), then ask for the facts;
    None when the instance has no python3 to run the probe (unless ``required``)."""
    shell = run.shells[instance_id]
    d = run_dir(run.run_id)
    put = await shell.run(f"umask 077 && mkdir -p {d} && tar -xf - -C {d}", timeout=60, stdin=_scripts_archive())
    if put.rc != 0:
        raise ProviderError(f"{instance_id}: could not put the QA scripts in place: {put.tail()}",
                            code="qa_prepare_failed")
    done = await shell.run(probe(run.run_id, "facts"), timeout=60)
    if done.rc == 127 and not required:
        return None
    try:
        return parsers.parse_probe(done.stdout, "the facts probe")
    except parsers.ToolOutputError as exc:
        raise ProviderError(f"{instance_id}: {exc} {done.tail()}".strip(), code="qa_prepare_failed") from None


async def _install_tools(run: Run, step: str, instance_ids: list[str]) -> None:
    """``playbooks/qa.yml`` over the given instances, through the same ansible-runner machinery as configure."""
    ctx, settings = run.ctx, run.settings
    targets = []
    for instance_id in instance_ids:
        e = run.endpoints[instance_id]
        targets.append(PlaybookTarget(
            host=e.host, port=e.port, login=e.login, private_key=run.shells[instance_id].private_key,
            known_hosts=list(e.known_hosts), name=instance_id,
            connect_timeout=ssh_patience(settings, run.target(instance_id)["provider"]).connect,
            host_vars={"onebox_instance_id": instance_id, "onebox_provider": run.target(instance_id)["provider"],
                       "onebox_ssh_user": e.login, "onebox_target_kind": e.kind}))
    loop = asyncio.get_running_loop()
    pending: list = []

    def on_event(type_: str, message: str, task: str | None) -> None:
        pending.append(asyncio.run_coroutine_threadsafe(
            ctx.services.events.add(run.run_id, type_, message, step=step), loop))

    extravars = {"onebox_qa_run_id": run.run_id, "onebox_qa_tools": list(run.suite.tools)}
    result = await ctx.services.providers.call(
        run_playbook, targets, extravars, None, on_event, timeout=settings.qa_prepare_timeout_seconds,
        work_root=settings.data_dir / "ansible", playbook=QA_PLAYBOOK)
    for future in pending:
        await asyncio.wrap_future(future)
    if result.status == "timeout":
        raise ProviderError(f"installing the tools did not finish within {settings.qa_prepare_timeout_seconds:.0f}s",
                            code="qa_prepare_timeout")
    if result.unreachable:
        raise ProviderError(f"could not reach an instance over SSH: {result.failed_message}", retryable=True,
                            code="unreachable")
    if result.status != "successful":
        raise ProviderError(f"task '{result.failed_task}' failed: {result.failed_message}", code="qa_prepare_failed")


SCRIPTS_DIR = REPO_ROOT / "playbooks" / "roles" / "qa_tools" / "files"
SCRIPTS = ("onebox_qa_probe.py", "onebox_qa_cpu.lua", "onebox_qa_memory.lua")


def _scripts_archive() -> bytes:
    """The run's scripts as a tar stream: one command puts them all in place (an Ansible copy per file takes
    seconds each)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name in SCRIPTS:
            data = (SCRIPTS_DIR / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


async def teardown(run: Run, step: str, *, best_effort: bool = False) -> None:
    """Stop the run's processes and remove its directory on every instance (and on onebox's host)."""
    script = teardown_script(run.run_id)
    for instance_id, shell in run.shells.items():
        shell.watch = None  # tearing down is never cancelled
        try:
            done = await shell.run(script, timeout=60)
        except ProviderError as exc:
            if not best_effort:
                raise
            await run.event("qa.teardown_failed", f"{instance_id}: {exc.message}; the run's processes end on their "
                                                  f"own (every tool has a time limit), its files stay in "
                                                  f"~/.onebox-qa/{run.run_id}", step)
            continue
        await shell.close()
        stopped = done.stdout.strip().splitlines()[-1:] or ["0"]
        await run.event("qa.teardown", f"{instance_id}: stopped {stopped[0]} process(es), removed "
                                       f"~/.onebox-qa/{run.run_id}", step)
    run.host.watch = None
    await run.host.run(script, timeout=60)
    shutil.rmtree(run.settings.data_dir / "qa" / run.run_id, ignore_errors=True)


# --- smoke ----------------------------------------------------------------------------------------

async def smoke(run: Run, step: str) -> list[dict[str, Any]]:
    from app.metrics.service import MetricsService

    results: list[dict[str, Any]] = []
    settings = run.settings
    health = await MetricsService(run.ctx.services).health_for(list(run.endpoints))
    instances = {d["_id"]: d async for d in run.ctx.services.db.instances.find({"_id": {"$in": list(run.endpoints)}})}
    for instance_id, shell in run.shells.items():
        e = run.endpoints[instance_id]
        add = results.append
        started = asyncio.get_running_loop().time()
        await shell.run("true", timeout=60)  # unreachable: retried by the engine, then the run is an error
        took = (asyncio.get_running_loop().time() - started) * 1000
        add(await run.result(step, "ssh_reachable", instance_id, verdict="pass",
                             message=f"logged in to {e.host}:{e.port} as {e.login} in {took:.0f} ms, "
                                     f"host key as recorded at configuration"))
        doc = instances[instance_id]
        mounts = [b["mountpoint"] for b in doc.get("buckets") or []]
        if settings.goofys_url:
            mounts += [b.mountpoint for b in settings.goofys_buckets]
        done = await shell.run(probe(run.run_id, f"smoke --mounts {quote(json.dumps(mounts))}"), timeout=120)
        if done.rc == 127 or "python3: not found" in done.stderr:
            add(await run.result(step, "python", instance_id, verdict="fail", message="python3 is not installed"))
            results += await run.errors(step, ["sudo", "bootstrap_exit", "bucket_mounts"], instance_id,
                                        "the probe needs Python")
        else:
            try:
                facts = parsers.parse_probe(done.stdout, "the smoke probe")
            except parsers.ToolOutputError as exc:
                results += await run.errors(step, ["python", "sudo", "bootstrap_exit", "bucket_mounts"], instance_id,
                                            f"{exc} {done.tail()}")
                facts = None
            if facts is not None:
                results += await _smoke_facts(run, step, instance_id, e, doc, facts)
        state = health[instance_id]
        if state["state"] == "healthy":
            add(await run.result(step, "agent_reporting", instance_id, verdict="pass",
                                 message=f"last report {state['last_seen_at'].isoformat()}"))
        else:
            why = "it never reported" if state["state"] == "unknown" else \
                f"its last report was at {state['last_seen_at'].isoformat()}"
            add(await run.result(step, "agent_reporting", instance_id, verdict="fail",
                                 message=f"the agent is {state['state']}: {why}"))
    order = [c.name for c in run.suite.checks]
    return sorted(results, key=lambda r: (list(run.endpoints).index(r["instance_id"]), order.index(r["check"])))


async def _smoke_facts(run: Run, step: str, instance_id: str, e: Endpoint, doc: dict[str, Any],
                       facts: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    out.append(await run.result(step, "python", instance_id, verdict="pass" if facts["python_ok"] else "fail",
                                message=f"Python {facts['python']}"))
    sudo = facts["sudo"]
    if e.kind == "local":
        out.append(await run.result(step, "sudo", instance_id, verdict="skip",
                                    message="skipped: a local instance's SSH user is onebox's own OS account, "
                                            "with no sudo by design"))
    else:
        out.append(await run.result(step, "sudo", instance_id, verdict="pass" if sudo["ok"] else "fail",
                                    message="sudo -n true works" if sudo["ok"] else
                                    f"sudo -n true failed: {sudo['message'] or 'not allowed'}"))
    boot = facts["bootstrap"]
    if not doc.get("bootstrap_script"):
        out.append(await run.result(step, "bootstrap_exit", instance_id, verdict="skip",
                                    message="skipped: the instance has no bootstrap script"))
    elif boot["exit_code"] is None:
        out.append(await run.result(step, "bootstrap_exit", instance_id, verdict="fail",
                                    message="no exit code recorded: the script never finished"
                                            if boot["readable"] else "the exit code could not be read"))
    else:
        ok = boot["exit_code"] == 0
        out.append(await run.result(step, "bootstrap_exit", instance_id, verdict="pass" if ok else "fail",
                                    message=f"the bootstrap script exited with {boot['exit_code']}"))
    mounts = facts["mounts"]
    if not mounts:
        out.append(await run.result(step, "bucket_mounts", instance_id, verdict="skip",
                                    message="skipped: the instance has no bucket mounts"))
    else:
        missing = [m["mountpoint"] for m in mounts if not m["mounted"]]
        how = " (a local instance: goofys ran once, its marker says so)" if e.kind == "local" else ""
        out.append(await run.result(
            step, "bucket_mounts", instance_id, verdict="fail" if missing else "pass",
            message=f"not mounted: {', '.join(missing)}" if missing else
            f"mounted: {', '.join(m['mountpoint'] for m in mounts)}{how}"))
    return out


# --- network ----------------------------------------------------------------------------------------

@dataclass
class Side:
    """One end of a network test."""

    label: str  # an instance id, or HOST
    shell: SshShell | HostShell
    address: str  # the address it binds to / is reached at
    auth: bool  # its iperf3 can use RSA-encrypted credentials


def _host_address(run: Run, client: Endpoint) -> str | None:
    if run.settings.qa_host_address:
        return run.settings.qa_host_address
    if client.kind == "local":
        return "127.0.0.1"  # the local provider's instances are loopback addresses of this host
    return None


async def _sides(run: Run) -> tuple[Side, Side] | str:
    """(client, server), or the reason the network suite cannot run here."""
    ids = list(run.endpoints)
    client_id = ids[0]
    client = Side(client_id, run.shells[client_id], run.endpoints[client_id].address,
                  bool(run.facts(client_id).get("iperf3_auth")))
    if len(ids) == 2:
        server_id = ids[1]
        return client, Side(server_id, run.shells[server_id], run.endpoints[server_id].address,
                            bool(run.facts(server_id).get("iperf3_auth")))
    address = _host_address(run, run.endpoints[client_id])
    if address is None:
        return "onebox's host address is unknown for this instance: set ONEBOX_QA_HOST_ADDRESS, or test two instances"
    if shutil.which("iperf3") is None:
        return "iperf3 is not installed on onebox's host"
    done = await run.host.run("iperf3 --help 2>&1", timeout=30)
    return client, Side(HOST, run.host, address, "--authorized-users-path" in done.stdout)


def _iperf3_port(run: Run, server: Side) -> int:
    if server.label != HOST:
        return run.settings.qa_iperf3_port
    with socket.socket() as probe_socket:  # onebox's host serves many runs: a free port of its own
        probe_socket.bind((server.address, 0))
        return probe_socket.getsockname()[1]


def _credentials() -> tuple[bytes, bytes, str, str]:
    """A fresh RSA key pair and password for one iperf3 test: (private PEM, public PEM, password, users line)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    password = secrets.token_urlsafe(24)
    # iperf3's authorized users file: user,sha256("{user}password")
    line = f"{IPERF3_USER},{hashlib.sha256(f'{{{IPERF3_USER}}}{password}'.encode()).hexdigest()}"
    return private, public, password, line


async def _iperf3(run: Run, step: str, client: Side, server: Side, options: str, seconds: float) -> str:
    """One iperf3 test, client → server; the client's JSON report."""
    run_id = run.run_id
    d = run_dir(run_id)
    # A step run again after a crash starts clean: first the client's side (on the local provider both sides
    # are this machine, so this stop must come before the server starts), then the server's, as it starts.
    await client.shell.run(stop_script(run_id), timeout=60)
    auth = client.auth and server.auth
    port = _iperf3_port(run, server)
    private = public = password = users = None
    if auth:
        private, public, password, users = await asyncio.to_thread(_credentials)
    server_cmd = (f"iperf3 -s -B {quote(server.address)} -p {port} -1 --idle-timeout {int(seconds + 60)} -D "
                  f"-I {d}/iperf3.pid --logfile {d}/iperf3-server.log")
    prologue = f"{clean_start(run_id)}; mkdir -p {d} && umask 077 && rm -f {d}/iperf3.pid"
    if auth:
        server_cmd += f" --rsa-private-key-path {d}/iperf3-key.pem --authorized-users-path {d}/iperf3-users.csv"
        prologue += f" && cat > {d}/iperf3-key.pem && printf '%s\\n' {quote(users)} > {d}/iperf3-users.csv"
    wait = f"for i in $(seq 50); do [ -s {d}/iperf3.pid ] && exit 0; sleep 0.1; done; cat {d}/iperf3-server.log >&2; exit 1"
    try:
        started = await server.shell.run(f"{prologue} && {marked(run_id, server_cmd)} && {wait}", timeout=60,
                                         stdin=private)
        if started.rc != 0:
            raise parsers.ToolOutputError(f"the iperf3 server on {server.label} did not start: {started.tail()}")
        await run.event("qa.iperf3", f"iperf3 server on {server.label} at {server.address}:{port}, one test, "
                                     f"{'for the run only (RSA credentials)' if auth else 'bound to its address'}", step)
        client_cmd = (f"iperf3 -c {quote(server.address)} -p {port} -B {quote(client.address)} -J "
                      f"--connect-timeout 10000 {options}")
        prologue = f"mkdir -p {d} && umask 077"
        stdin = None
        if auth:
            client_cmd = (f'IPERF3_PASSWORD="$pw" {client_cmd} --username {IPERF3_USER} '
                          f"--rsa-public-key-path {d}/iperf3-pub.pem")
            prologue += f" && read -r pw && cat > {d}/iperf3-pub.pem"
            stdin = password.encode() + b"\n" + public
        script = f"{prologue} && {marked(run_id, client_cmd)}; rc=$?; rm -f {d}/iperf3-pub.pem; exit $rc"
        for attempt in range(CONNECT_TRIES):
            done = await client.shell.run(script, timeout=seconds + COMMAND_MARGIN, stdin=stdin)
            if "unable to connect" not in done.stdout or attempt == CONNECT_TRIES - 1:
                return done.stdout
            await asyncio.sleep(0.25 * (attempt + 1))
        return ""
    finally:
        # The server exits after its one test; after a failed one it must not linger either. Its key goes now.
        await server.shell.run(f"[ -s {d}/iperf3.pid ] && kill $(cat {d}/iperf3.pid) 2>/dev/null; "
                               f"rm -f {d}/iperf3.pid {d}/iperf3-key.pem {d}/iperf3-users.csv; true", timeout=60)


def _direction(client: Side, server: Side, reverse: bool) -> str:
    a, b = (server, client) if reverse else (client, server)
    return f"{a.label} → {b.label}"


async def network_tcp(run: Run, step: str, reverse: bool = False) -> list[dict[str, Any]]:
    sides = await _sides(run)
    check = "tcp_reverse_mbps" if reverse else "tcp_mbps"
    client_id = list(run.endpoints)[0]
    if isinstance(sides, str):
        return await run.skips(step, [check, "tcp_retransmits"], client_id, sides)
    client, server = sides
    p = run.params
    seconds = p["duration_seconds"]
    options = f"-t {seconds} -P {p['parallel_streams']} -i 1" + (" -R" if reverse else "")
    target = HOST if server.label == HOST else None
    comparable = target is None
    direction = _direction(client, server, reverse)
    try:
        tcp = parsers.parse_iperf3_tcp(await _iperf3(run, step, client, server, options, seconds))
    except parsers.ToolOutputError as exc:
        return await run.errors(step, [check, "tcp_retransmits"], client_id, str(exc), target=target)
    details = tcp_details(tcp, direction)
    out = [await run.result(step, check, client_id, value=tcp.mbps, details=details, target=target,
                            comparable=comparable)]
    if tcp.retransmits is not None:
        out.append(await run.result(step, "tcp_retransmits", client_id, value=tcp.retransmits, comparable=comparable,
                                    target=f"{target + ' ' if target else ''}{'reverse' if reverse else 'forward'}"))
    return out


async def network_udp(run: Run, step: str) -> list[dict[str, Any]]:
    sides = await _sides(run)
    client_id = list(run.endpoints)[0]
    checks = ["udp_jitter_ms", "udp_loss_percent"]
    if isinstance(sides, str):
        return await run.skips(step, checks, client_id, sides)
    client, server = sides
    p = run.params
    target = HOST if server.label == HOST else None
    try:
        udp = parsers.parse_iperf3_udp(await _iperf3(
            run, step, client, server, f"-u -b {p['udp_target_mbps']}M -t {p['duration_seconds']} -i 1",
            p["duration_seconds"]))
    except parsers.ToolOutputError as exc:
        return await run.errors(step, checks, client_id, str(exc), target=target)
    details = {"direction": _direction(client, server, False), "target_mbps": p["udp_target_mbps"],
               "mbps": udp.mbps, "packets": udp.packets, "lost_packets": udp.lost_packets}
    return [await run.result(step, "udp_jitter_ms", client_id, value=udp.jitter_ms, details=details, target=target,
                             comparable=target is None),
            await run.result(step, "udp_loss_percent", client_id, value=udp.lost_percent, target=target,
                             comparable=target is None)]


async def network_latency(run: Run, step: str) -> list[dict[str, Any]]:
    ids = list(run.endpoints)
    client_id = ids[0]
    checks = ["latency_p50_ms", "latency_p99_ms"]
    if len(ids) == 2:
        peer = run.endpoints[ids[1]]
        host, port, target = peer.address, peer.ssh_port, None  # the peer's sshd answers the handshake
    else:
        address = _host_address(run, run.endpoints[client_id])
        if address is None:
            return await run.skips(step, checks, client_id, "onebox's host address is unknown for this instance")
        host, port, target = address, urlparse(run.settings.public_url).port or 80, HOST  # onebox's own API
    shell = run.shells[client_id]
    count = run.params["latency_samples"]
    command = probe(run.run_id, f"latency --host {quote(host)} --port {port} --count {count}")
    done = await shell.run(f"{clean_start(run.run_id)}; {marked(run.run_id, command)}", timeout=count * 6 + 60)
    try:
        latency = parsers.parse_latency(done.stdout)
    except parsers.ToolOutputError as exc:
        return await run.errors(step, checks, client_id, f"{exc} {done.tail() if not done.stdout else ''}".strip(),
                                target=target)
    details = latency_details(latency)
    return [await run.result(step, "latency_p50_ms", client_id, value=latency.percentiles_ms[50.0], details=details,
                             target=target, comparable=target is None),
            await run.result(step, "latency_p99_ms", client_id, value=latency.percentiles_ms[99.0], target=target,
                             comparable=target is None)]


# --- what results keep for the charts (pure; no nested arrays, no dotted field names) -------------------

def tcp_details(tcp: parsers.TcpResult, direction: str) -> dict[str, Any]:
    streams = [{"socket": s.socket, "seconds": [t for t, _ in s.points], "mbps": [v for _, v in s.points]}
               for s in tcp.streams]
    return {"direction": direction, "streams": streams, "sent_mbps": tcp.sent_mbps, "seconds": tcp.seconds}


def latency_details(latency: parsers.LatencyResult) -> dict[str, Any]:
    return {"target": latency.target, "samples_ms": latency.samples_ms, "errors": latency.errors,
            "percentiles": _percentiles(latency.percentiles_ms)}


def disk_root_values(jobs: dict[str, parsers.FioJob], params: dict[str, Any]) -> tuple[dict, list[tuple[str, float | None]]]:
    """(details for the charts, [(check, value)]) of the root-disk job list."""
    iops_by_bs = {job.block_size: job.main.iops for job in jobs.values() if job.rw == "randread"}
    latency = {"rand_read": jobs["rand_read_4k"].main.clat_ms, "rand_write": jobs["rand_write_4k"].main.clat_ms}
    details = {"iops_by_block_size": iops_by_bs,
               "latency_percentiles": {k: _percentiles(pct) for k, pct in latency.items()},
               "size_mb": params["size_mb"], "runtime_seconds": params["runtime_seconds"]}
    values = [("seq_write_mb_s", jobs["seq_write"].main.mb_s), ("seq_read_mb_s", jobs["seq_read"].main.mb_s),
              ("rand_read_iops", jobs["rand_read_4k"].main.iops), ("rand_write_iops", jobs["rand_write_4k"].main.iops),
              ("rand_read_p99_ms", latency["rand_read"].get(99.0)),
              ("rand_write_p99_ms", latency["rand_write"].get(99.0))]
    return details, values


def clean_start(run_id: str) -> str:
    """A command's first part: whatever the run still has running here ends (a step run again after a crash)."""
    return f"{{ {stop_script(run_id)}; }} >/dev/null"


def _percentiles(values: dict[float, float]) -> list[dict[str, float]]:
    """[{p, ms}] in order: percentiles as stored (a field name cannot be "99.9")."""
    return [{"p": p, "ms": ms} for p, ms in sorted(values.items())]


# --- disk -------------------------------------------------------------------------------------------

ROOT_CHECKS = ["seq_write_mb_s", "seq_read_mb_s", "rand_read_iops", "rand_write_iops", "rand_read_p99_ms",
               "rand_write_p99_ms"]
FIO_PERCENTILES = (50.0, 90.0, 95.0, 99.0, 99.9)


def fio_command(path: str, size_mb: int, runtime: int, block_sizes: list[str]) -> str:
    """The root-disk job list: sequential 1 MiB write then read, random 4 KiB read and write, and random reads
    at each other block size; one job at a time (``--stonewall``), each for ``runtime`` seconds."""
    jobs = [("seq_write", "write", "1M", 4), ("seq_read", "read", "1M", 4), ("rand_read_4k", "randread", "4k", 16),
            ("rand_write_4k", "randwrite", "4k", 16)]
    jobs += [(f"rand_read_{bs}", "randread", bs, 16) for bs in block_sizes if bs != "4k"]
    head = (f"fio --output-format=json --filename={path} --size={size_mb}M --runtime={runtime} --time_based "
            f"--ioengine=libaio --direct=1 --percentile_list={':'.join(f'{p:g}' for p in FIO_PERCENTILES)}")
    return head + "".join(f" --name={name} --rw={rw} --bs={bs} --iodepth={depth} --stonewall"
                          for name, rw, bs, depth in jobs)


def _job_count(block_sizes: list[str]) -> int:
    return 4 + len([b for b in block_sizes if b != "4k"])


async def disk_root(run: Run, step: str) -> list[dict[str, Any]]:
    p = run.params
    results: list[dict[str, Any]] = []
    d = run_dir(run.run_id)
    for instance_id, shell in run.shells.items():
        command = fio_command(f"{d}/fio-root.dat", p["size_mb"], p["runtime_seconds"], p["block_sizes"])
        seconds = p["runtime_seconds"] * _job_count(p["block_sizes"]) + p["size_mb"] / 20  # + laying the file out
        done = await shell.run(f"{clean_start(run.run_id)}; {marked(run.run_id, command)}; rc=$?; "
                               f"rm -f {d}/fio-root.dat; exit $rc", timeout=seconds + COMMAND_MARGIN)
        try:
            jobs = parsers.parse_fio(done.stdout)
            if done.rc != 0:
                raise parsers.ToolOutputError(f"fio exited with {done.rc}: {done.tail()}")
        except parsers.ToolOutputError as exc:
            results += await run.errors(step, ROOT_CHECKS, instance_id, str(exc))
            continue
        details, values = disk_root_values(jobs, p)
        for check, value in values:
            if value is None:
                results.append(await run.result(step, check, instance_id, verdict="error",
                                                message="fio reported no such percentile"))
                continue
            results.append(await run.result(step, check, instance_id, value=value,
                                            details=details if check == "rand_read_iops" else None))
    return results


async def disk_mounts(run: Run, step: str) -> list[dict[str, Any]]:
    settings = run.settings
    results: list[dict[str, Any]] = []
    checks = ["mount_write_mb_s", "mount_read_mb_s"]
    instances = {d["_id"]: d async for d in run.ctx.services.db.instances.find({"_id": {"$in": list(run.endpoints)}})}
    p = run.params
    for instance_id, shell in run.shells.items():
        mounts = [b["mountpoint"] for b in instances[instance_id].get("buckets") or []]
        if settings.goofys_url:
            mounts += [b.mountpoint for b in settings.goofys_buckets]
        if not mounts:
            results += await run.skips(step, checks, instance_id, "the instance has no bucket mounts")
            continue
        for mountpoint in mounts:
            if run.endpoints[instance_id].kind == "local":
                results += await run.skips(step, checks, instance_id, "a local instance's bucket mounts are "
                                           "simulated (goofys runs once, nothing is mounted)", target=mountpoint)
                continue
            path = f'"$HOME"/{quote(mountpoint[2:])}' if mountpoint.startswith("~/") else quote(mountpoint)
            size = min(p["size_mb"], 256)
            test_file = f"{path}/.onebox-qa-{run.run_id}.dat"
            # goofys writes whole objects: sequential, through the page cache, flushed at the end.
            command = (f"fio --output-format=json --filename={test_file} --size={size}M --ioengine=psync --direct=0 "
                       f"--fallocate=none --bs=1M --end_fsync=1 --name=mount_write --rw=write --stonewall "
                       f"--name=mount_read --rw=read --stonewall")
            script = (f"{clean_start(run.run_id)}; mountpoint -q {path} || {{ echo 'not mounted' >&2; exit 3; }}; "
                      f"{marked(run.run_id, command)}; rc=$?; rm -f {test_file}; exit $rc")
            done = await shell.run(script, timeout=size * 2 + COMMAND_MARGIN)
            if done.rc == 3:
                results += [await run.result(step, c, instance_id, verdict="fail", target=mountpoint,
                                             message=f"{mountpoint} is not mounted") for c in checks]
                continue
            try:
                jobs = parsers.parse_fio(done.stdout)
            except parsers.ToolOutputError as exc:
                results += await run.errors(step, checks, instance_id, str(exc), target=mountpoint)
                continue
            results.append(await run.result(step, "mount_write_mb_s", instance_id, value=jobs["mount_write"].main.mb_s,
                                            target=mountpoint))
            results.append(await run.result(step, "mount_read_mb_s", instance_id, value=jobs["mount_read"].main.mb_s,
                                            target=mountpoint))
    return results


# --- cpu and memory ---------------------------------------------------------------------------------

async def _sysbench(run: Run, shell: SshShell, script: str, threads: int, seconds: int, extra: str = "") -> parsers.SysbenchResult:
    d = run_dir(run.run_id)
    command = f"sysbench {d}/{script} --threads={threads} --time={seconds} --percentile=95 {extra} run"
    done = await shell.run(f"{clean_start(run.run_id)}; cd {d} && {marked(run.run_id, command)}",
                           timeout=seconds + COMMAND_MARGIN)
    return parsers.parse_sysbench(done.stdout + "\n" + done.stderr)


async def cpu(run: Run, step: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    seconds = run.params["cpu_seconds"]
    for instance_id, shell in run.shells.items():
        threads = int(run.facts(instance_id).get("nproc") or 1)
        for check, n in (("cpu_single_events_s", 1), ("cpu_all_events_s", threads)):
            try:
                r = await _sysbench(run, shell, "onebox_qa_cpu.lua", n, seconds)
            except parsers.ToolOutputError as exc:
                results.append(await run.result(step, check, instance_id, verdict="error", message=str(exc)))
                continue
            results.append(await run.result(step, check, instance_id, value=r.events_per_second,
                                            details={"threads": r.threads, "events": r.events, "seconds": r.seconds,
                                                     "latency_p95_ms": r.latency_pct_ms}))
    return results


async def memory(run: Run, step: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    seconds, block_mb = run.params["memory_seconds"], run.params["block_mb"]
    for instance_id, shell in run.shells.items():
        threads = int(run.facts(instance_id).get("nproc") or 1)
        for check, n in (("mem_copy_single_mb_s", 1), ("mem_copy_all_mb_s", threads)):
            try:
                r = await _sysbench(run, shell, "onebox_qa_memory.lua", n, seconds, f"--block-kb={block_mb * 1024}")
            except parsers.ToolOutputError as exc:
                results.append(await run.result(step, check, instance_id, verdict="error", message=str(exc)))
                continue
            results.append(await run.result(step, check, instance_id, value=r.copy_mb_s,
                                            details={"threads": r.threads, "events": r.events, "seconds": r.seconds,
                                                     "block_bytes": r.block_bytes}))
    return results


# --- gpu ------------------------------------------------------------------------------------------

GPU_CHECKS = ["gpu_count", "gpu_model", "gpu_load", "gpu_memory_total_mb", "gpu_temperature_max_c", "gpu_power_max_w",
              "gpu_utilization_max_percent"]
GPU_LOAD_TOOLS = ("dcgmproftester12", "dcgmproftester11", "gpu_burn")


def _model_matches(expected: str | None, reported: str) -> bool:
    def norm(name: str) -> str:
        return " ".join(w for w in name.lower().replace("-", " ").split() if w not in ("nvidia", "tesla"))
    return expected is None or norm(expected) in norm(reported) or norm(reported) in norm(expected)


async def gpu(run: Run, step: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    fields = ",".join(parsers.NVIDIA_SMI_FIELDS)
    query = f"nvidia-smi --query-gpu={fields} --format=csv,noheader,nounits"
    seconds = run.params["gpu_seconds"]
    for instance_id, shell in run.shells.items():
        target = run.target(instance_id)
        expected = target.get("gpu_count") or 0
        if expected == 0:
            results += await run.skips(step, GPU_CHECKS, instance_id,
                                       f"machine type {target['machine_type']} has no GPUs")
            continue
        done = await shell.run(f"{clean_start(run.run_id)}; {query}", timeout=60)
        try:
            if done.rc != 0:
                raise parsers.ToolOutputError(f"nvidia-smi failed: {done.tail() or 'not installed'}")
            idle = parsers.parse_nvidia_smi(done.stdout)
        except parsers.ToolOutputError as exc:
            results += await run.errors(step, GPU_CHECKS, instance_id, str(exc))
            continue
        found = len(idle)
        results.append(await run.result(step, "gpu_count", instance_id, verdict="pass" if found == expected else "fail",
                                        message=f"{found} GPU(s), the machine type has {expected}"))
        names = sorted({g.name for g in idle})
        ok = all(_model_matches(target.get("gpu_type"), n) for n in names)
        results.append(await run.result(step, "gpu_model", instance_id, verdict="pass" if ok else "fail",
                                        message=f"{', '.join(names)}; the machine type has {target.get('gpu_type')}"))
        memory_total = [g.memory_total_mb for g in idle if g.memory_total_mb is not None]
        if memory_total:
            results.append(await run.result(step, "gpu_memory_total_mb", instance_id, value=min(memory_total)))
        # A load tool from the image, if it has one, runs while nvidia-smi samples every second.
        d = run_dir(run.run_id)
        load = (f"tool=''; lp=''; for t in {' '.join(GPU_LOAD_TOOLS)}; do command -v $t >/dev/null && tool=$t && break; done; "
                f'case "$tool" in dcgm*) $tool --no-dcgm-validation -t 1004 -d {seconds} >{d}/gpu-load.log 2>&1 & lp=$! ;; '
                f'gpu_burn) gpu_burn {seconds} >{d}/gpu-load.log 2>&1 & lp=$! ;; esac; '
                f'{query} -l 1 > {d}/gpu-samples.csv 2>&1 & s=$!; sleep {seconds}; kill $s; '
                f'if [ -n "$lp" ]; then wait $lp; echo "load $tool $?" >&2; else echo "load none" >&2; fi; '
                f"cat {d}/gpu-samples.csv")
        done = await shell.run(marked(run.run_id, load), timeout=seconds + COMMAND_MARGIN)
        try:
            samples = parsers.parse_nvidia_smi(done.stdout)
        except parsers.ToolOutputError as exc:
            results += await run.errors(step, GPU_CHECKS[2:], instance_id, str(exc))
            continue
        load_line = next((l for l in done.stderr.splitlines() if l.startswith("load ")), "load none")
        if load_line == "load none":
            results.append(await run.result(step, "gpu_load", instance_id, verdict="skip",
                                            message="skipped: no GPU load tool on the image "
                                                    f"({', '.join(GPU_LOAD_TOOLS)}); sampled idle"))
        else:
            _, tool, code = load_line.split()
            results.append(await run.result(step, "gpu_load", instance_id, verdict="pass" if code == "0" else "fail",
                                            message=f"{tool} ran {seconds}s and exited with {code}"))
        series = {}
        for s in samples:
            series.setdefault(f"gpu{s.index}", []).append(
                {"temperature_c": s.temperature_c, "power_w": s.power_w, "utilization_percent": s.utilization_percent})
        details = {"samples": series}
        for check, values in (("gpu_temperature_max_c", [s.temperature_c for s in samples]),
                              ("gpu_power_max_w", [s.power_w for s in samples]),
                              ("gpu_utilization_max_percent", [s.utilization_percent for s in samples])):
            present = [v for v in values if v is not None]
            if present:
                results.append(await run.result(step, check, instance_id, value=max(present),
                                                details=details if check == "gpu_temperature_max_c" else None))
            else:
                results.append(await run.result(step, check, instance_id, verdict="skip",
                                                message="skipped: the driver does not report it"))
    return results


STEP_HANDLERS = {
    "smoke": smoke,
    "network_tcp": network_tcp,
    "network_tcp_reverse": lambda run, step: network_tcp(run, step, reverse=True),
    "network_udp": network_udp,
    "network_latency": network_latency,
    "disk_root": disk_root,
    "disk_mounts": disk_mounts,
    "cpu": cpu,
    "memory": memory,
    "gpu": gpu,
}


# --- the job definition -----------------------------------------------------------------------------

class QaRunJob(JobBase):
    table = QA_RUN_TRANSITIONS
    cancel_message = "cancelled before it finished"
    cancel_event = "cancel requested: stopping the run's processes and removing its files"
    cleanup_started = "stopping the run's processes and removing its files"
    cleanup_done = "the run's processes are stopped and its files removed"

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.kind = f"qa_{suite.name}"
        self.steps = job_steps(suite)

    @staticmethod
    def _repo(ctx: JobContext) -> QaRepository:
        return QaRepository(ctx.services.db)

    async def cancel_requested(self, ctx: JobContext) -> bool:
        repo = self._repo(ctx)
        if await ctx.db_call(lambda: repo.cancel_requested(ctx.doc["_id"]), "a look for a cancel request"):
            return True
        deleting = await ctx.db_call(lambda: repo.instances_being_deleted(ctx.doc["instances"]),
                                     "a look for deletes of the run's instances")
        return bool(deleting)

    def _watch(self, ctx: JobContext) -> Callable[[], Awaitable[bool]]:
        async def watch() -> bool:
            try:
                return await self.cancel_requested(ctx)
            except Exception:  # noqa: BLE001 - the database away: the command goes on, the lease decides
                return False
        return watch

    async def run_step(self, step: str, ctx: JobContext) -> dict[str, Any] | None:
        if ctx.doc["status"] == Q.PENDING:
            await ctx.transition(Q.RUNNING, {"started_at": utcnow()})
        run = await _build_run(ctx, self.suite, self._repo(ctx), self._watch(ctx))
        if step == "prepare":
            return await prepare(run, step)
        if step == "teardown":
            await teardown(run, step)
            return None
        results = await STEP_HANDLERS[step](run, step)
        return {f"results.{step}": results}

    async def succeed(self, ctx: JobContext) -> bool:
        if await self.cancel_requested(ctx):
            return False
        results = flatten_results(ctx.doc)
        outcome = verdict_of([r["verdict"] for r in results])
        repo = self._repo(ctx)
        await ctx.db_call(lambda: repo.record_results(ctx.doc, results, outcome), "recording the results")
        error = None
        if outcome == Q.ERROR:
            failed = [r for r in results if r["verdict"] == "error"]
            error = {"code": "check_error", "step": failed[0]["step"],
                     "message": f"{len(failed)} check(s) could not be measured; first: {failed[0]['check']}: "
                                f"{failed[0]['message']}"}
        counts = {v: sum(1 for r in results if r["verdict"] == v) for v in ("pass", "fail", "skip", "error")}
        # before the final transition: a stream ends with the transition's own event, after this one
        await ctx.event("qa.finished", f"{outcome}: {counts['pass']} passed, {counts['fail']} failed, "
                                       f"{counts['skip']} skipped, {counts['error']} errors")
        await ctx.transition(outcome, {"job": None, "error": error, "finished_at": utcnow()})
        await ctx.db_call(lambda: repo.release_locks(ctx.doc["_id"]), "releasing the instances")
        return True

    async def cleanup(self, ctx: JobContext) -> None:
        run = await _build_run(ctx, self.suite, self._repo(ctx), None, need_running=False)
        await teardown(run, "cleanup", best_effort=True)

    async def fail(self, ctx: JobContext, failure: dict[str, Any]) -> None:
        target = Q.CANCELLED if failure.get("code") == "cancelled" else Q.ERROR
        if target == Q.CANCELLED:
            failure = {**failure, "message": await self._why_cancelled(ctx)}
        await ctx.event("qa.finished", f"{target}: {failure['message']}")
        await ctx.transition(target, {"job": None, "error": failure, "finished_at": utcnow()})
        repo = self._repo(ctx)
        await ctx.db_call(lambda: repo.release_locks(ctx.doc["_id"]), "releasing the instances")


    async def _why_cancelled(self, ctx: JobContext) -> str:
        """Its owner's cancel, or onebox's own (an instance under test is being deleted: then an audit record
        names the rule, like every automatic action)."""
        repo = self._repo(ctx)
        if await ctx.db_call(lambda: repo.cancel_requested(ctx.doc["_id"]), "a look for a cancel request"):
            return "cancelled by its owner"
        deleting = await ctx.db_call(lambda: repo.instances_being_deleted(ctx.doc["instances"]),
                                     "a look for deletes of the run's instances")
        names = ", ".join(deleting) or "an instance"
        await ctx.db_call(lambda: record_system_action(
            ctx.services.db, "qa", "qa_run.cancel", "qa_run", ctx.doc["_id"], rule="instance_being_deleted",
            instances=names), "recording the automatic cancel")
        await ctx.event("qa.auto_cancelled", f"rule instance_being_deleted: {names} is being deleted, so the run "
                                             "was cancelled")
        return f"cancelled: {names} is being deleted"


QA_JOBS = {job.kind: job for job in (QaRunJob(suite) for suite in SUITES.values())}

