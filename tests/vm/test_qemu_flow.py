"""End to end on real VMs: onebox served on a real port, the qemu provider, Ansible without check mode.

One module, one onebox (API and workers as processes of their own, started with the parent VM at
the tier's first test: ``tests/vm/flow_onebox.py``; this module runs last), two booted VMs shared
by every test here (a boot under TCG takes minutes on a busy machine):

* the parent is created while a worker process is SIGKILLed right after the create step's work;
  a second worker resumes it: one QEMU process, the same one, never a second VM;
* it turns ``running`` and ``healthy`` from the agent inside the guest (posting to onebox over the
  user network, at 10.0.2.2), with the guest's own figures;
* SSH as the user works, ``sudo -n true`` succeeds, the agent is an enabled, active systemd unit, the
  bootstrap script ran (as root, once, its output and exit code in the events);
* the guest's cloud-init was given exactly ``providers.cloudinit.cloud_config`` (EC2's user data);
* a snapshot of it boots as the child, with the file written before, and the child reaches the
  parent on the private network; the agent's unit started at the child's boot by itself (the parent's
  configured disk, booted again: what a reboot does);
* while the child boots, the parent is stopped and started through the API (the day-2 jobs): stopped,
  its QEMU is gone and its disk stays; started, the same guest boots from that disk, its agent's unit
  comes back by itself and reports again (the instance ``healthy``), and a file written before the stop
  is still there;
* deleting both leaves no QEMU process and no disk file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.configure.keys import deploy_key
from providers.base import InstanceSpec
from providers.cloudinit import cloud_config
from providers.qemu import QemuProvider
from tests.api.helpers import wait_status
from tests.vm.conftest import FIGURES
from tests.vm.flow_onebox import BOOT, FlowOnebox

PROOF = "written-before-the-snapshot"
KEPT = "written-before-the-stop"


@dataclass
class Box:
    """The tier's onebox as this module's tests reach it: its API, its database, its VMs' files."""

    api: object
    svc: object  # for reads of the database only: the workers are processes of their own
    settings: object
    headers: dict
    tmp: Path
    provider: QemuProvider
    launch: FlowOnebox
    state: dict = field(default_factory=dict)  # what earlier tests found out, for later ones

    def qemu_pids(self, instance_id: str) -> list[int]:
        return self.provider._pids(self.provider.instances_dir / instance_id)

    def ssh(self, keypair, inst: dict, command: str, timeout: float = 300) -> subprocess.CompletedProcess:
        argv = keypair.command(inst["public_ip"], inst["ssh_port"], command, user=inst["ssh_user"])
        argv[1:1] = ["-o", "ConnectTimeout=60"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
async def box(flow_onebox):
    import httpx

    from app.services import Services

    assert flow_onebox is not None
    settings = flow_onebox.settings
    svc = Services.build(settings)
    try:
        async with httpx.AsyncClient(base_url=flow_onebox.url, timeout=60) as api:
            yield Box(api, svc, settings, {"Authorization": f"Bearer {flow_onebox.token}"}, flow_onebox.tmp,
                      flow_onebox.provider, flow_onebox)
    finally:
        await svc.close()


async def events_of(box: Box, instance_id: str) -> list[dict]:
    return (await box.api.get(f"/v1/instances/{instance_id}/events", headers=box.headers)).json()


def load() -> str:
    return open("/proc/loadavg").read().split()[0]


def footprint(box: Box, instance_id: str) -> str:
    """The QEMU process's resident memory and the instance's own disk files, as the host sees them."""
    inst = box.provider.instances_dir / instance_id
    (pid,) = box.qemu_pids(instance_id)
    rss = int(open(f"/proc/{pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
    disk = sum(p.stat().st_blocks * 512 for p in inst.glob("disk*.qcow2")) // 2**20
    return f"QEMU RSS {rss} MiB, own disk {disk} MB"


async def running(box: Box, instance_id: str, posted: float) -> dict:
    """The instance once ``running`` (``posted``: when it was asked for), its figures noted."""
    path = f"/v1/instances/{instance_id}"
    try:
        inst = await wait_status(box.api, path, box.headers, {"running", "failed"}, BOOT)
    except AssertionError as exc:
        events = await events_of(box, instance_id)
        raise AssertionError([(e["type"], e["message"][:160]) for e in events[-12:]]) from exc
    if inst["status"] != "running":
        events = await events_of(box, instance_id)
        raise AssertionError((inst["error"], [(e["type"], e["message"][:160]) for e in events[-12:]]))
    events = await events_of(box, instance_id)
    configured = [e["at"] for e in events if e["type"] in ("ssh.host_key", "configure.done")]
    booted = ""
    if len(configured) == 2:
        seconds = (dt.datetime.fromisoformat(configured[1].replace("Z", "+00:00"))
                   - dt.datetime.fromisoformat(configured[0].replace("Z", "+00:00"))).total_seconds()
        booted = f", of which configuration {seconds:.0f} s"
    FIGURES[f"{inst['name']}: POST to running"] = (f"{time.monotonic() - posted:.0f} s{booted} "
                                                     f"(load average {load()} at the end)")
    FIGURES[f"{inst['name']}: once configured"] = footprint(box, instance_id)
    return inst


@pytest.fixture(scope="module")
async def parent(box):
    """The first VM (asked for at the tier's start): its create survived a worker SIGKILLed right
    after QEMU started it."""
    launch = box.launch
    assert launch.found["created"][0] == 202, launch.found["created"]
    code, log = launch.found["victim"]
    assert code == -signal.SIGKILL and "ONEBOX_TEST_KILL_AT=create" in log, log
    box.state["pids_after_kill"] = launch.found["pids_after_kill"]
    box.state["steps_done_after_kill"] = launch.found["steps_done_after_kill"]
    return await running(box, launch.parent_id, launch.posted)


def test_worker_killed_during_create_resumes_without_a_second_vm(box, parent):
    before = box.state["pids_after_kill"]
    assert len(before) == 1, "the killed worker had started exactly one VM"
    assert box.state["steps_done_after_kill"] == [], "it died before recording its create step"
    assert box.qemu_pids(parent["id"]) == before, "the next worker resumed that VM: same process, no second one"


async def test_create_resumed_once_and_the_accelerator_is_told(box, parent):
    events = await events_of(box, parent["id"])
    creates = [e for e in events if e["step"] == "create"]
    assert sum(e["type"] == "step.started" for e in creates) == 2, "killed, then resumed"
    assert sum(e["type"] == "step.succeeded" for e in creates) == 1
    notices = [e["message"] for e in events if e["type"] == "provider.notice"]
    assert notices, "the accelerator is named in an event"
    meta = box.provider._meta(box.provider.instances_dir / parent["id"])
    if meta["accelerator"] == "tcg":
        assert "TCG" in notices[-1] and "KVM" in notices[-1], notices  # why KVM was not used


async def test_healthy_from_the_agent_inside_the_guest(box, parent):
    path = f"/v1/instances/{parent['id']}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        health = (await box.api.get(path, headers=box.headers)).json()["health"]
        if health["state"] == "healthy":
            break
        await asyncio.sleep(1)
    assert health["state"] == "healthy", health
    assert health["cpu_percent"] is not None and 0 < health["memory_percent"] < 100
    series = (await box.api.get(path + "/metrics", headers=box.headers)).json()["items"]
    created = dt.datetime.fromisoformat(parent["created_at"].replace("Z", "+00:00"))
    alive_for = (dt.datetime.now(dt.timezone.utc) - created).total_seconds()
    # The guest's own figures: it booted after the instance was created (the host has been up longer).
    assert 0 < series[-1]["uptime_seconds"] < alive_for, (series[-1], alive_for)


async def test_ssh_as_the_user_sudo_the_agent_unit_and_the_bootstrap_script(box, parent, ssh_keypair):
    result = box.ssh(ssh_keypair, parent, "id -un && sudo -n true && echo sudo-ok && "
                                          "systemctl is-active onebox-agent && systemctl is-enabled onebox-agent && "
                                          "cat /var/tmp/bootstrap-ran-as")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["alice", "sudo-ok", "active", "enabled", "root"], result.stdout
    events = await events_of(box, parent["id"])
    assert any(e["type"] == "bootstrap.exit" and e["message"].endswith(" 0") for e in events)
    assert any(e["type"] == "bootstrap.output" and "bootstrap done on parent" in e["message"] for e in events)


def test_the_guest_booted_with_the_shared_cloud_config(box, parent, ssh_keypair):
    result = box.ssh(ssh_keypair, parent, "sudo cat /var/lib/cloud/instance/user-data.txt && "
                                          "cloud-init status --wait >/dev/null; cloud-init status")
    assert result.returncode == 0, result.stderr
    spec = InstanceSpec(instance_id=parent["id"], owner="alice", name="parent", region="local", zone=None,
                        machine_type="medium", ssh_user="alice", ssh_public_key=ssh_keypair.public, disk_gb=20,
                        admin_ssh_public_key=deploy_key(box.settings.data_dir)[1])
    expected = cloud_config(spec)
    assert result.stdout.startswith(expected), "EC2's user data, verbatim, is what this guest's cloud-init read"
    assert "status: done" in result.stdout[len(expected):], result.stdout


@pytest.fixture(scope="module")
async def child(box, parent, ssh_keypair):
    """A snapshot of the parent (taken after a file was written), and a VM made from it."""
    wrote = box.ssh(ssh_keypair, parent, f"echo {PROOF} > ~/proof.txt && sync")
    assert wrote.returncode == 0, wrote.stderr
    snap = await box.api.post(f"/v1/instances/{parent['id']}/snapshots", json={"name": "after-setup"},
                              headers=box.headers)
    assert snap.status_code == 202, snap.text
    snap = await wait_status(box.api, f"/v1/snapshots/{snap.json()['id']}", box.headers, {"available", "failed"}, 300)
    assert snap["status"] == "available", snap
    box.state["snapshot"] = snap
    snap_dir = box.provider.snapshots_dir / snap["id"]
    FIGURES["snapshot"] = f"{(snap_dir / 'disk.qcow2').stat().st_blocks * 512 // 2**20} MB (flattened)"
    body = {"name": "child", "provider": "qemu", "region": "local", "machine_type": "medium",
            "snapshot_id": snap["id"], "ssh_user": "alice", "ssh_public_key": ssh_keypair.public}
    posted = time.monotonic()
    created = await box.api.post("/v1/instances", json=body, headers=box.headers)
    assert created.status_code == 202, created.text
    # The parent's stop and start overlap the child's boot: one boot's wait less for the tier.
    child, _ = await asyncio.gather(running(box, created.json()["id"], posted),
                                    power_cycle(box, parent, ssh_keypair))
    return child


async def power_cycle(box: Box, parent: dict, ssh_keypair) -> None:
    """Stop the parent, then start it, through the API; what was seen on the way goes to ``box.state``."""
    path = f"/v1/instances/{parent['id']}"
    wrote = await asyncio.to_thread(box.ssh, ssh_keypair, parent,
                                    f"echo {KEPT} > ~/kept.txt && cat /proc/sys/kernel/random/boot_id")
    assert wrote.returncode == 0, wrote.stderr
    disk = box.provider.instances_dir / parent["id"] / "disk.qcow2"
    cycle = box.state["cycle"] = {"pids_before": box.qemu_pids(parent["id"]), "boot_before": wrote.stdout.strip()}
    began = time.monotonic()
    asked = await box.api.post(path + "/stop", headers=box.headers)
    assert asked.status_code == 202, asked.text
    cycle["stopped"] = await wait_status(box.api, path, box.headers, {"stopped", "failed"}, 300)
    FIGURES["parent: stop"] = f"{time.monotonic() - began:.0f} s (POST to stopped)"
    cycle["pids_stopped"], cycle["disk_kept"] = box.qemu_pids(parent["id"]), disk.exists()
    started_at = dt.datetime.now(dt.timezone.utc)
    began = time.monotonic()
    asked = await box.api.post(path + "/start", headers=box.headers)
    assert asked.status_code == 202, asked.text
    cycle["started"] = await wait_status(box.api, path, box.headers, {"running", "failed"}, 300)
    assert cycle["started"]["status"] == "running", (cycle["started"]["error"], await events_of(box, parent["id"]))
    cycle["pids_started"] = box.qemu_pids(parent["id"])
    # The agent reports again once the guest has booted: a sample from this boot, and the instance healthy.
    deadline = time.monotonic() + BOOT
    while time.monotonic() < deadline:
        inst = (await box.api.get(path, headers=box.headers)).json()
        series = (await box.api.get(path + "/metrics", headers=box.headers)).json()["items"]
        since_start = (dt.datetime.now(dt.timezone.utc) - started_at).total_seconds()
        if inst["health"]["state"] == "healthy" and series and series[-1]["uptime_seconds"] < since_start:
            break
        await asyncio.sleep(2)
    cycle["health"], cycle["last_sample"], cycle["since_start"] = inst["health"], series[-1], since_start
    FIGURES["parent: start"] = f"{time.monotonic() - began:.0f} s (POST to the agent's first report from the new boot)"
    cycle["guest"] = await asyncio.to_thread(
        box.ssh, ssh_keypair, inst, "cat ~/kept.txt ~/proof.txt && systemctl is-active onebox-agent && "
                                    "cat /proc/sys/kernel/random/boot_id")


async def test_instance_from_the_snapshot_has_the_file_and_reaches_the_parent_privately(box, parent, child,
                                                                                       ssh_keypair):
    assert child["private_ip"] and child["private_ip"] != parent["private_ip"]
    result = box.ssh(ssh_keypair, child, f"cat ~/proof.txt && hostname && ping -c 3 -W 5 {parent['private_ip']}")
    assert result.returncode == 0, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert lines[0] == PROOF and lines[1] == "child"
    assert " 0% packet loss" in result.stdout
    keys = {doc["_id"]: doc["ssh_host_keys"] async for doc in box.svc.db.instances.find({}, {"ssh_host_keys": 1})}
    assert keys[parent["id"]] != keys[child["id"]], "the child made host keys of its own at its first boot"


def test_the_agent_unit_comes_back_at_boot(box, child, ssh_keypair):
    """The child's disk is the parent's, configured: booting it is what a reboot of the parent does. systemd
    started the agent at boot, before onebox configured this VM, and configuration restarted it with the
    child's own token (so the journal of this boot has both starts)."""
    result = box.ssh(ssh_keypair, child, "sudo journalctl -b -u onebox-agent -o short-monotonic --no-pager | "
                                         "grep -c 'Started onebox-agent.service'; systemctl is-active onebox-agent")
    assert result.returncode == 0, (result.stdout, result.stderr)
    starts, state = result.stdout.split()
    assert int(starts) >= 2 and state == "active", result.stdout


def test_stop_then_start_keeps_the_disk_and_the_agent_reports_again(box, parent, child):
    cycle = box.state["cycle"]
    assert cycle["stopped"]["status"] == "stopped", cycle["stopped"]
    assert cycle["pids_before"] and cycle["pids_stopped"] == [], "stopped: no QEMU process left"
    assert cycle["disk_kept"], "stopped: the disk is kept"
    assert cycle["pids_started"] and cycle["pids_started"] != cycle["pids_before"], "started: a new QEMU process"
    assert cycle["started"]["private_ip"] == parent["private_ip"]
    assert cycle["health"]["state"] == "healthy", cycle["health"]
    assert cycle["last_sample"]["uptime_seconds"] < cycle["since_start"], "the agent reports from the new boot"
    guest = cycle["guest"]
    assert guest.returncode == 0, (guest.stdout, guest.stderr)
    kept, proof, agent, boot = guest.stdout.split()
    assert (kept, proof) == (KEPT, PROOF), "the files written before the stop are on the disk"
    assert agent == "active", "the agent's unit came back at boot by itself (configuration does not run again)"
    assert boot != cycle["boot_before"], "the guest booted again"


async def test_a_roles_package_install_reaches_debians_registry_from_the_guest(box, child, ssh_keypair):
    """The QA run's own Ansible role installs sysbench (not in the image) from Debian's registry inside the
    guest, over the user network, and the cpu suite then runs on the guest's two vCPUs."""
    before = box.ssh(ssh_keypair, child, "command -v sysbench || echo absent")
    assert before.stdout.strip() == "absent", "the image must not carry the tool, or nothing is installed"
    began = time.monotonic()
    created = await box.api.post("/v1/qa-runs", json={"suite": "cpu", "instances": [child["id"]],
                                                      "params": {"cpu_seconds": 2}}, headers=box.headers)
    assert created.status_code == 202, created.text
    path = f"/v1/qa-runs/{created.json()['id']}"
    run = await wait_status(box.api, path, box.headers, {"passed", "failed", "error", "cancelled"}, BOOT)
    events = (await box.api.get(path + "/events", headers=box.headers)).json()
    said = [f"{e['type']}: {e['message'][:200]}" for e in events]
    assert run["status"] == "passed", (run["error"], said[-12:])
    assert any(e["type"] == "qa.install" and "installing" in e["message"] and "sysbench" in e["message"]
               for e in events), said
    assert all(r["value"] > 0 for r in run["results"] if r["verdict"] != "skip"), run["results"]
    after = box.ssh(ssh_keypair, child, "dpkg-query -W -f='${Status}' sysbench")
    assert after.stdout.strip() == "install ok installed", (after.stdout, after.stderr)
    FIGURES["child: QA cpu run with sysbench installed from Debian's registry"] = f"{time.monotonic() - began:.0f} s"


async def test_delete_leaves_no_process_and_no_disk(box, parent, child):
    for inst in (parent, child):
        assert (await box.api.delete(f"/v1/instances/{inst['id']}", headers=box.headers)).status_code == 202
    for inst in (parent, child):
        done = await wait_status(box.api, f"/v1/instances/{inst['id']}", box.headers, {"deleted"}, 120)
        assert done["status"] == "deleted"
        directory = box.provider.instances_dir / inst["id"]
        assert box.qemu_pids(inst["id"]) == [] and not directory.exists()
    leftover = subprocess.run(["pgrep", "-f", f"onebox:({parent['id']}|{child['id']})"], capture_output=True)
    assert leftover.returncode == 1, leftover.stdout
    assert not list(box.provider.instances_dir.rglob("*.qcow2"))
    snap = box.state["snapshot"]
    assert (await box.api.delete(f"/v1/snapshots/{snap['id']}", headers=box.headers)).status_code == 202
    await wait_status(box.api, f"/v1/snapshots/{snap['id']}", box.headers, {"deleted"}, 120)
    assert not (box.provider.snapshots_dir / snap["id"]).exists()
