"""The end-to-end module's onebox, started as soon as the vm tier starts (``flow_onebox`` in conftest).

Its first VM (the parent) takes minutes to boot and configure under TCG, and nothing before its
tests needs it: so the API and the workers run as processes of their own (as in production),
the parent is asked for, its create survives a worker SIGKILLed right after QEMU started it, and
a second worker takes it over, all before the tier's other modules run. The parent boots while
they do; ``test_qemu_flow.py`` (run last) picks it up. What the launch saw is kept in ``found``
for the tests to check.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pymongo

from app.auth.tokens import TokenService
from providers.base import InstanceRef
from providers.qemu import QemuConfig, QemuProvider
from tests.conftest import make_settings
from tests.e2e.test_workers import stop, worker_env
from tests.support import free_port

BOOT = 1500.0  # seconds a VM may take from POST to running (boot + configuration), on a busy machine
BOOTSTRAP = "#!/bin/sh\nid -un > /var/tmp/bootstrap-ran-as\necho bootstrap done on $(hostname)\n"


@dataclass
class FlowOnebox:
    settings: object
    tmp: Path
    provider: QemuProvider  # the test's own view of the workers' VMs (the same directory)
    token: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    parent_id: str = ""
    posted: float = 0.0  # time.monotonic() of the parent's POST
    found: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.settings.public_url


def process_env(settings) -> dict[str, str]:
    """Everything the API and worker processes need (tests.e2e.test_workers.worker_env and ours)."""
    env = worker_env(settings)
    env.update({
        "ONEBOX_PROVIDERS": "qemu",
        "ONEBOX_PUBLIC_URL": settings.public_url,
        "ONEBOX_AGENT_INTERVAL_SECONDS": str(settings.agent_interval_seconds),
        "ONEBOX_CONFIGURE_TIMEOUT_SECONDS": str(settings.configure_timeout_seconds),
        "ONEBOX_WAIT_RUNNING_TIMEOUT_SECONDS": str(settings.wait_running_timeout_seconds),
        "ONEBOX_MAX_ATTEMPTS": str(settings.max_attempts),
        "ONEBOX_QEMU_IMAGE_DIR": str(settings.qemu_image_dir),
        "ONEBOX_QEMU_ACCEL": settings.qemu_accel,
        "ONEBOX_QEMU_BOOT_TIMEOUT_SECONDS": str(settings.qemu_boot_timeout_seconds),
        "ONEBOX_QEMU_PRIVATE_MCAST": settings.qemu_private_mcast,
        "ONEBOX_QEMU_SSH_PORT_FIRST": str(settings.qemu_ssh_port_first),
        "ONEBOX_QEMU_SSH_PORT_LAST": str(settings.qemu_ssh_port_last),
    })
    return env


def start_process(settings, log: Path, *args: str, **extra_env) -> subprocess.Popen:
    env = process_env(settings)
    env.update({k: str(v) for k, v in extra_env.items()})
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, stdout=out, stderr=out,
                                start_new_session=True)


def serve(dbserver, tmp: Path, image_dir: Path, network: dict) -> tuple[object, subprocess.Popen]:
    """``onebox serve --no-worker`` on a free port, once it answers."""
    for _ in range(5):  # a port found free can be taken before uvicorn binds it
        port = free_port()
        settings = make_settings(
            dbserver, tmp / "data", providers=["qemu"], configure="ansible", agent_interval_seconds=2,
            public_url=f"http://127.0.0.1:{port}", configure_timeout_seconds=BOOT,
            wait_running_timeout_seconds=120.0, max_attempts=4, lease_seconds=4.0,
            qemu_image_dir=image_dir, qemu_accel="auto", qemu_boot_timeout_seconds=BOOT,
            qemu_private_mcast=network["private_mcast"], qemu_ssh_port_first=network["ssh_port_first"],
            qemu_ssh_port_last=network["ssh_port_last"],
        )
        log = tmp / "api.log"
        api = start_process(settings, log, "serve", "--no-worker", "--port", str(port))
        deadline = time.monotonic() + 120
        while api.poll() is None and time.monotonic() < deadline:
            try:
                if httpx.get(f"{settings.public_url}/healthz", timeout=5).status_code == 200:
                    return settings, api
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        stop(api)
        if "address already in use" not in log.read_text():
            break
    raise AssertionError("the API never came up: " + log.read_text()[-2000:])


def launch(dbserver, tmp: Path, image_dir: Path, network: dict, keypair) -> FlowOnebox:
    settings, api = serve(dbserver, tmp, image_dir, network)
    provider = QemuProvider(QemuConfig(root=settings.data_dir / "qemu", image_dir=image_dir))
    box = FlowOnebox(settings, tmp, provider, TokenService(settings).mint("alice"), [api])
    body = {"name": "parent", "provider": "qemu", "region": "local", "machine_type": "medium",
            "image": "debian-12", "ssh_user": "alice", "ssh_public_key": keypair.public,
            "bootstrap_script": BOOTSTRAP}
    box.posted = time.monotonic()
    created = httpx.post(f"{box.url}/v1/instances", json=body, headers={"Authorization": f"Bearer {box.token}"},
                         timeout=60)
    box.found["created"] = (created.status_code, created.text)
    if created.status_code != 202:
        return box
    box.parent_id = created.json()["id"]
    victim = start_process(settings, tmp / "victim.log", "worker", ONEBOX_TEST_KILL_AT="create")
    try:
        deadline = time.monotonic() + 300  # a probe of KVM (20 s) and a QEMU start
        while victim.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop(victim, signal.SIGKILL)
    box.found["victim"] = (victim.returncode, (tmp / "victim.log").read_text()[-2000:])
    box.found["pids_after_kill"] = provider._pids(provider.instances_dir / box.parent_id)
    with pymongo.MongoClient(settings.mongodb_url) as client:
        doc = client[settings.database].instances.find_one({"_id": box.parent_id})
    box.found["steps_done_after_kill"] = list(doc["job"]["steps_done"])
    box.processes.append(start_process(settings, tmp / "worker.log", "worker"))
    return box


def shut_down(box: FlowOnebox) -> None:
    for process in reversed(box.processes):
        stop(process)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    for resource in box.provider.list_managed():  # never leave a VM behind, whatever failed
        if resource.kind == "instance":
            box.provider.delete_instance(InstanceRef(resource.instance_id, resource.region))
