"""Configuration end to end on the local provider: a real Ansible run over SSH, and a real agent
posting metrics over HTTP to a real onebox server."""

from __future__ import annotations

import asyncio
import json
import time

from providers.local import LocalConfig, LocalProvider
from providers.local.processes import process_running
from tests.api.helpers import instance_body, wait_status
from tests.conftest import make_settings
from tests.e2e.cloud_support import served_app
from tests.support import free_port


VERBATIM = "{{ not_a_var }} {% raw %} $HOME"
BOOTSTRAP = "#!/bin/sh\nprintf '%s\\n' '" + VERBATIM + "' > \"$HOME/boot.txt\"\necho bootstrap-ran\n"


def configured_settings(dbserver, tmp_path, **overrides):
    return make_settings(dbserver, tmp_path / "data", configure="ansible", agent_interval_seconds=2,
                         public_url=f"http://127.0.0.1:{free_port()}", configure_timeout_seconds=300, **overrides)


async def test_configure_then_agent_reports_then_delete_stops_it(dbserver, tmp_path, ssh_keypair):
    settings = configured_settings(dbserver, tmp_path)
    canary = tmp_path / "templated"
    # A key comment is user text too: it must reach the instance verbatim, never evaluated by Ansible.
    key = " ".join(ssh_keypair.public.split()[:2]) + " {{ lookup('pipe', 'touch " + str(canary) + "') }}"
    async with served_app(settings) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        created = await api.post("/v1/instances", json=instance_body(key, bootstrap_script=BOOTSTRAP),
                                 headers=headers)
        assert created.status_code == 202, created.text
        path = f"/v1/instances/{created.json()['id']}"
        seen = set()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            inst = (await api.get(path, headers=headers)).json()
            seen.add(inst["status"])
            if inst["status"] in ("running", "failed"):
                break
            await asyncio.sleep(0.1)
        assert inst["status"] == "running", (inst, (await api.get(path + "/events", headers=headers)).json()[-8:])
        events = (await api.get(path + "/events", headers=headers)).json()
        assert any(e["type"] == "status" and e["message"] == "provisioning → configuring" for e in events)
        tasks = [e for e in events if e["type"] == "ansible.task"]
        assert len(tasks) >= 5, "the Ansible tasks show up as events"
        assert any(e["type"] == "ssh.host_key" and "SHA256:" in e["message"] for e in events)
        assert any(e["type"] == "bootstrap.exit" and e["message"].endswith(" 0") for e in events), events
        assert any(e["type"] == "bootstrap.output" and "bootstrap-ran" in e["message"] for e in events)
        assert any(e["type"] == "ansible.task" and "goofys skipped" in e["message"] for e in events)

        # The user's script ran verbatim: no templating of {{ }} or {% %}.
        assert ssh_keypair.run(inst["public_ip"], 2222, "cat ~/boot.txt").stdout == VERBATIM + "\n"
        assert key in ssh_keypair.run(inst["public_ip"], 2222, "cat ~/.ssh/authorized_keys").stdout
        assert not canary.exists(), "a template in user input was evaluated"

        # The real agent process reports within 40 s, with real CPU and memory values.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            health = (await api.get(path, headers=headers)).json()["health"]
            if health["state"] == "healthy":
                break
            await asyncio.sleep(0.5)
        assert health["state"] == "healthy", health
        assert health["cpu_percent"] is not None and 0 < health["memory_percent"] < 100
        series = (await api.get(path + "/metrics", headers=headers)).json()["items"]
        assert series and series[-1]["uptime_seconds"] > 0

        disk = LocalProvider(LocalConfig(root=settings.data_dir / "local")).instances_dir / inst["id"] / "disk"
        config = disk / "opt" / "onebox-agent" / "onebox-agent.json"
        assert oct(config.stat().st_mode & 0o777) == "0o600"
        token = json.loads(config.read_text())["token"]
        everything = json.dumps((await api.get(path + "/events", headers=headers)).json()) + json.dumps(inst)
        assert token not in everything, "the agent token appears in no response or event"
        pid = int((disk / "run" / "onebox-agent.pid").read_text())
        assert process_running(pid)

        assert (await api.delete(path, headers=headers)).status_code == 202
        await wait_status(api, path, headers, {"deleted"}, 60)
        assert not process_running(pid), "the agent process is gone with its instance"
        refused = await api.post("/v1/agent/metrics", headers={"Authorization": f"Bearer {token}"},
                                 json={"instance_id": inst["id"], "samples": [{"at": "2026-01-01T00:00:00Z"}]})
        assert refused.status_code == 401


async def test_failing_bootstrap_fails_the_instance_and_cleans_up(dbserver, tmp_path, ssh_keypair):
    settings = configured_settings(dbserver, tmp_path)
    async with served_app(settings) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        body = instance_body(ssh_keypair.public, bootstrap_script="#!/bin/sh\necho about to fail\nexit 3\n")
        inst = (await api.post("/v1/instances", json=body, headers=headers)).json()
        done = await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"running", "failed"}, 240)
        assert done["status"] == "failed"
        assert done["error"]["step"] == "configure" and done["error"]["code"] == "configure_failed"
        assert "bootstrap exit code" in done["error"]["message"]
        local = LocalProvider(LocalConfig(root=settings.data_dir / "local"))
        assert local._marked_pids(inst["id"]) == [] and local.list_managed() == []
