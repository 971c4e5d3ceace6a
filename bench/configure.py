"""configure: onebox's Ansible configuration of a local instance vs. ``ansible-playbook`` run directly.

onebox: ``onebox serve`` (API + worker) with the local provider and
``ONEBOX_CONFIGURE=ansible``; a POSTed instance goes through the real
``configure`` step (host-key scan, agent token, ansible-runner with onebox's
SSH settings, every task an event in the database). Its time is the step's
``step.started`` → ``step.succeeded`` events.

direct: another fresh local instance, made with the local provider itself,
configured by ``ansible-playbook playbooks/configure.yml`` with the same
inventory and extra vars and Ansible's default settings, preceded by the
``ssh-keyscan`` any careful first contact needs too.

The direct run is made twice: with Ansible's defaults (what running the
playbook by hand gives), and with the SSH settings onebox passes (pipelining,
ControlPersist), which isolates what ansible-runner and onebox add. Runs
alternate so drift on a shared machine touches all three; medians compared.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import subprocess
import sys
import time

import httpx
from pymongo import AsyncMongoClient

from app.auth.tokens import TokenService
from app.configure.ansible import PLAYBOOK
from app.configure.keys import deploy_key
from app.ids import new_instance_id
from app.settings import Settings
from bench.common import DATABASE, SECRET, Row, dbserver, onebox_env, percentile, scratch, start, stop
from providers.base import InstanceSpec
from providers.local import LocalConfig, LocalProvider
from tests.support import free_port, wait_for_port

VENV_BIN = os.path.dirname(sys.executable)


async def onebox_run(http, db, headers: dict, key: str, n: int) -> float:
    body = {"name": f"conf-{n}", "provider": "local", "region": "local", "machine_type": "local",
            "ssh_user": "bench", "ssh_public_key": key}
    r = await http.post("/v1/instances", json=body, headers=headers)
    r.raise_for_status()
    instance_id = r.json()["id"]
    deadline = time.monotonic() + 600
    while True:
        doc = await db.instances.find_one({"_id": instance_id}, {"status": 1})
        if doc["status"] in ("running", "failed"):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("configuration did not finish in 10 minutes")
        await asyncio.sleep(0.2)
    events = await db.events.find({"instance_id": instance_id, "step": "configure"}).to_list()
    if doc["status"] != "running":
        raise RuntimeError(f"onebox configure failed: {[e['message'] for e in events][-3:]}")
    at = {e["type"]: e["at"] for e in events if e["type"] in ("step.started", "step.succeeded")}
    return (at["step.succeeded"] - at["step.started"]).total_seconds()


def direct_run(local: LocalProvider, data_dir, tokens: TokenService, key: str, public_url: str, work,
               tuned: bool = False) -> float:
    instance_id = new_instance_id()
    spec = InstanceSpec(instance_id=instance_id, owner="bench", name="direct", region="local", zone=None,
                        machine_type="local", ssh_user="bench", ssh_public_key=key, disk_gb=20,
                        admin_ssh_public_key=deploy_key(data_dir)[1])
    local.create_instance(spec)
    info = local.wait_running(spec.ref, 60)
    token, _ = tokens.mint_agent(instance_id)
    extravars = {
        "onebox_instance_id": instance_id, "onebox_provider": "local", "onebox_target_kind": "local",
        "onebox_ssh_user": "bench", "onebox_ssh_public_key": key, "onebox_sudo": True, "onebox_agent_interval": 30,
        "onebox_agent_config": {"url": public_url, "token": token, "instance_id": instance_id, "interval": 30},
        "onebox_goofys_url": "", "onebox_goofys_sha256": "", "onebox_goofys_buckets": [],
        "onebox_bootstrap_file": "",
    }
    (work / "extravars.json").write_text(json.dumps(extravars))
    known_hosts = work / f"known_hosts-{instance_id}"
    inventory = {"all": {"hosts": {"instance": {
        "ansible_host": info.public_ip, "ansible_port": info.ssh_port, "ansible_user": getpass.getuser(),
        "ansible_ssh_private_key_file": str(deploy_key(data_dir)[0]),
        "ansible_ssh_extra_args": f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes",
    }}}}
    (work / "inventory.json").write_text(json.dumps(inventory))
    env = {**os.environ, "PATH": VENV_BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
           "ANSIBLE_NOCOLOR": "True", "ANSIBLE_RETRY_FILES_ENABLED": "False"}
    if tuned:  # the SSH settings onebox gives ansible-runner (app/configure/ansible.py)
        env.update({"ANSIBLE_PIPELINING": "True", "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
                    "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s -o ServerAliveInterval=15 "
                                        "-o ConnectTimeout=15 -o IdentitiesOnly=yes"})
    started = time.perf_counter()
    for _ in range(60):  # the host key, as onebox scans it first (sshd may still be coming up)
        scan = subprocess.run(["ssh-keyscan", "-p", str(info.ssh_port), "-T", "5", info.public_ip],
                              capture_output=True, text=True)
        if scan.stdout.strip():
            break
        time.sleep(1)
    known_hosts.write_text(scan.stdout)
    run = subprocess.run([f"{VENV_BIN}/ansible-playbook", "-i", str(work / "inventory.json"), str(PLAYBOOK),
                          "-e", f"@{work / 'extravars.json'}"], env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError("ansible-playbook failed:\n" + run.stdout[-3000:])
    return took


async def run(quick: bool = False) -> list[Row]:
    rounds = 1 if quick else 3
    with scratch("configure") as work, dbserver(work) as db:
        port = free_port()
        public_url = f"http://127.0.0.1:{port}"
        data_dir = work / "data"
        env = onebox_env(db, work, ONEBOX_PROVIDERS="local", ONEBOX_CONFIGURE="ansible", ONEBOX_PUBLIC_URL=public_url,
                         ONEBOX_POLL_SECONDS=0.1)
        server = start([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env, work / "server.log")
        client = AsyncMongoClient(db.url(), tz_aware=True)
        local = LocalProvider(LocalConfig(root=data_dir / "local"))
        ours, direct, tuned = [], [], []
        try:
            wait_for_port("127.0.0.1", port, 60)
            tokens = TokenService(Settings(jwt_secret=SECRET, data_dir=data_dir))
            headers = {"Authorization": f"Bearer {tokens.mint('bench')}"}
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / "user")], check=True)
            key = (work / "user.pub").read_text().strip()
            from app.db import Database

            database = Database(client, DATABASE)
            async with httpx.AsyncClient(base_url=public_url, timeout=30) as http:
                for n in range(rounds):
                    ours.append(await onebox_run(http, database, headers, key, n))
                    direct.append(await asyncio.to_thread(direct_run, local, data_dir, tokens, key, public_url, work))
                    tuned.append(await asyncio.to_thread(direct_run, local, data_dir, tokens, key, public_url, work,
                                                         True))
                    print(f"   round {n + 1}: onebox {ours[-1]:.1f} s, direct {direct[-1]:.1f} s, "
                          f"direct with onebox's SSH settings {tuned[-1]:.1f} s", flush=True)
        finally:
            await client.close()
            stop(server)
            for resource in local.list_managed():
                if resource.kind == "instance":
                    from providers.base import InstanceRef

                    local.delete_instance(InstanceRef(resource.instance_id, resource.region))
    ours_median, direct_median, tuned_median = percentile(ours, .5), percentile(direct, .5), percentile(tuned, .5)
    return [Row("configure", "configure step, local instance: median", ours_median, "s", baseline=direct_median,
                baseline_label="ssh-keyscan + ansible-playbook", target="≤ 1.2×",
                met=ours_median <= 1.2 * direct_median,
                note=f"{rounds} runs each; onebox {', '.join(f'{x:.1f}' for x in ours)} s, "
                     f"direct {', '.join(f'{x:.1f}' for x in direct)} s"),
            Row("configure", "configure step vs the same SSH settings", ours_median, "s", baseline=tuned_median,
                baseline_label="ssh-keyscan + ansible-playbook, pipelining + ControlPersist", target="≤ 1.2×",
                met=ours_median <= 1.2 * tuned_median,
                note=f"direct, tuned: {', '.join(f'{x:.1f}' for x in tuned)} s — what ansible-runner, the events "
                     "and the token cost on top")]
