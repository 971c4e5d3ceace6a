"""The ``configure`` step: bring a fresh VM to what the user asked for.

It records the instance's SSH host key on first contact (and trusts only that
key afterwards), mints the agent token for this instance (storing only the
hash of its jti, which rotates the previous token), and runs the
configuration playbook (``app.configure.ansible``) with onebox's own key.
Task progress becomes instance events; a failed task fails the step with the
task's name and message. With ``ONEBOX_CONFIGURE=skip`` the step only records
that it was skipped.
"""

from __future__ import annotations

import asyncio
import base64
import getpass
import hashlib
from dataclasses import dataclass

from app.configure.ansible import PlaybookTarget, run_playbook
from app.configure.keys import deploy_key
from app.metrics.revocations import revoke
from app.lifecycle.engine import JobContext
from providers.base import ProviderError

KEYSCAN_TIMEOUT = 60.0
FIRST_ATTEMPT = 5.0  # seconds the first ssh-keyscan attempt waits for an answer
HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")  # recorded and pinned: what sshd offers of these
DEFAULT_CONNECT_TIMEOUT = 15
QEMU_CONNECT_TIMEOUT = 120


async def scan_host_keys(host: str, port: int, timeout: float = KEYSCAN_TIMEOUT,
                         attempt_timeout: float = 5.0) -> list[str]:
    """The host's public keys as known_hosts lines, retried while sshd comes up.

    One key type per connection, one connection at a time: ssh-keyscan's own way (a connection
    per type, all at once) through QEMU's user network left one of them, often the only type the
    guest has, hanging until its timeout (measured: for ten minutes of one-minute attempts while
    other clients got the key at once).

    The first attempt waits ``FIRST_ATTEMPT`` seconds for an answer, and each one that times out
    waits twice as long as the one before, up to ``attempt_timeout``. Short attempts first: a
    connection made before the guest's network is up can hang too, and a new one is answered at
    once. Longer ones later: an attempt given up too early on a slow guest leaves its sshd working
    on a connection nobody reads, and a stream of them keeps the guest too busy ever to answer one.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    wait = min(FIRST_ATTEMPT, attempt_timeout)
    while True:
        lines: list[str] = []
        timed_out = False
        for key_type in HOST_KEY_TYPES:
            began = loop.time()
            proc = await asyncio.create_subprocess_exec(
                "ssh-keyscan", "-t", key_type, "-p", str(port), "-T", str(int(wait)), host,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
            )
            out, _ = await proc.communicate()
            found = [l for l in out.decode(errors="replace").splitlines() if l and not l.startswith("#")]
            lines += found
            if not found and loop.time() - began >= wait:
                timed_out = True  # (a refused connection, or a type the host lacks, ends at once)
                break
        if lines and not timed_out:
            return lines
        if loop.time() > deadline:
            raise ProviderError(f"no SSH host key from {host}:{port} within {timeout:.0f}s", retryable=True,
                                code="unreachable")
        if timed_out:
            wait = min(wait * 2, attempt_timeout)
        await asyncio.sleep(1)


def fingerprint(known_hosts_line: str) -> str:
    blob = base64.b64decode(known_hosts_line.split()[2])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def agent_url(settings, provider: str) -> str:
    """``ONEBOX_PUBLIC_URL`` as the agent on a VM of ``provider`` reaches it.

    A qemu VM is on QEMU's user-mode network, where the host's loopback is the gateway
    (10.0.2.2): a loopback public URL is rewritten to it unless ``ONEBOX_QEMU_AGENT_URL`` says otherwise.
    """
    if provider == "qemu":
        from providers.qemu.mapping import guest_url

        return settings.qemu_agent_url or guest_url(settings.public_url)
    return settings.public_url


@dataclass(frozen=True)
class SshPatience:
    """How long to wait for a new VM's sshd: to answer at all, and in one connection."""

    wait: float
    connect: int


def ssh_patience(settings, provider: str) -> SshPatience:
    """A cloud VM's sshd is up within a minute of the VM running and answers at once; a qemu guest
    under TCG boots for minutes on a busy machine, and each new connection costs it seconds."""
    if provider == "qemu":
        return SshPatience(settings.qemu_boot_timeout_seconds, QEMU_CONNECT_TIMEOUT)
    return SshPatience(KEYSCAN_TIMEOUT, DEFAULT_CONNECT_TIMEOUT)


def ssh_endpoint(settings, doc: dict) -> tuple[str, int, str]:
    """(host, port, kind) where Ansible reaches the instance; kind is "local" or "vm"."""
    mapped = settings.ssh_endpoint_map.get(doc["public_ip"]) or settings.ssh_endpoint_map.get("*")
    if mapped:
        host, _, port = mapped.rpartition(":")
        return host, int(port), settings.ssh_endpoint_kind
    kind = "local" if doc["provider"] == "local" else "vm"
    return doc["public_ip"], doc.get("ssh_port") or 22, kind


async def configure_instance(ctx: JobContext) -> None:
    services, doc = ctx.services, ctx.doc
    settings = services.settings
    if settings.configure == "skip":
        await ctx.event("configure.skipped", "configuration skipped (ONEBOX_CONFIGURE=skip)", "configure")
        return
    host, port, kind = ssh_endpoint(settings, doc)
    known = doc.get("ssh_host_keys")
    if not known:
        patience = ssh_patience(settings, doc["provider"])
        known = await scan_host_keys(host, port, patience.wait, attempt_timeout=min(patience.connect, 60))
        await ctx.claim.update({"$set": {"ssh_host_keys": known}})
        await ctx.event("ssh.host_key", "recorded host key " + ", ".join(fingerprint(k) for k in known), "configure")
    private_key, _ = deploy_key(settings.data_dir)

    # A new configuration run rotates the agent's token: the one it replaces is withdrawn first.
    await ctx.db_call(lambda: revoke(services.db, doc["_id"], doc.get("agent_jti_hash"), "rotated"),
                      "withdrawing the previous agent token")
    services.agent_revocations.add(doc.get("agent_jti_hash"))
    token, jti_hash = services.tokens.mint_agent(doc["_id"])
    await ctx.claim.update({"$set": {"agent_jti_hash": jti_hash}})

    extravars = {
        "onebox_instance_id": doc["_id"],
        "onebox_provider": doc["provider"],
        "onebox_target_kind": kind,
        "onebox_ssh_user": doc["ssh_user"],
        "onebox_ssh_public_key": doc["ssh_public_key"],
        "onebox_sudo": True,
        "onebox_agent_interval": settings.agent_interval_seconds,
        "onebox_agent_config": {
            "url": agent_url(settings, doc["provider"]),
            "token": token,
            "instance_id": doc["_id"],
            "interval": settings.agent_interval_seconds,
        },
        "onebox_goofys_url": settings.goofys_url or "",
        "onebox_goofys_sha256": settings.goofys_sha256 or "",
        "onebox_goofys_buckets": [b.model_dump(exclude_none=True) for b in settings.goofys_buckets]
                                 + [{k: v for k, v in b.items() if v is not None} for b in doc.get("buckets") or []],
    }
    target = PlaybookTarget(host=host, port=port, private_key=private_key, known_hosts=known,
                            login=getpass.getuser() if kind == "local" else doc["ssh_user"],
                            connect_timeout=ssh_patience(settings, doc["provider"]).connect)
    loop = asyncio.get_running_loop()
    pending: list = []

    def on_event(type_: str, message: str, task: str | None) -> None:
        pending.append(asyncio.run_coroutine_threadsafe(
            services.events.add(doc["_id"], type_, message, step="configure"), loop))

    result = await services.providers.call(
        run_playbook, target, extravars, doc.get("bootstrap_script"), on_event,
        timeout=settings.configure_timeout_seconds, work_root=settings.data_dir / "ansible",
    )
    for future in pending:
        await asyncio.wrap_future(future)
    if result.status == "successful":
        await ctx.event("configure.done", f"configured ({result.changed} changes)", "configure")
        return
    if result.status == "timeout":
        raise ProviderError(f"configuration did not finish within {settings.configure_timeout_seconds:.0f}s",
                            code="configure_timeout")
    if result.unreachable:
        raise ProviderError(f"could not reach the instance over SSH: {result.failed_message}", retryable=True,
                            code="unreachable")
    raise ProviderError(f"task '{result.failed_task}' failed: {result.failed_message}", code="configure_failed")
