"""What the embedded database keeps: across a clean restart, and across a SIGKILL under writes.

The promise (README, "The embedded database"): a write onebox was told succeeded — and so a request onebox
answered 2xx — is in the data file before its answer leaves the server, so a crash of the database process
loses none of them; onebox itself reconnects when the database is back, with no manual step.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from app.clock import utcnow
from app.metrics.repository import stored_samples
from tests.api.helpers import instance_body, wait_status
from tests.api.test_agent_metrics import bearer, running_instance, sample
from tests.conftest import TEST_SECRET, make_settings, scratch_dir, start_database
from tests.e2e.cloud_support import running_onebox
from tests.support import free_port


async def test_every_acknowledged_write_survives_a_sigkill_of_the_database(tmp_path_factory):
    """Writers insert and update as fast as they can; the server is SIGKILLed mid-stream and started again
    on the same file: every insert and every update that was acknowledged is there."""
    data = scratch_dir(tmp_path_factory, "durability")
    server = start_database(data)
    try:
        client = AsyncMongoClient(server.url(), tz_aware=True, serverSelectionTimeoutMS=1000, timeoutMS=2000)
        collection = client.drill.writes
        await collection.insert_one({"_id": "counter", "n": 0})
        acked: list[str] = []
        counter_acked = 0
        stop = asyncio.Event()

        async def inserter(w: int) -> None:
            n = 0
            while not stop.is_set():
                doc_id = f"w{w}-{n}"
                try:
                    await collection.insert_one({"_id": doc_id, "pad": "x" * 200})
                except PyMongoError:
                    return  # the server is gone: whatever was not acknowledged may or may not be there
                acked.append(doc_id)
                n += 1

        async def counter() -> None:
            nonlocal counter_acked
            while not stop.is_set():
                try:
                    await collection.update_one({"_id": "counter"}, {"$inc": {"n": 1}})
                except PyMongoError:
                    return
                counter_acked += 1

        tasks = [asyncio.create_task(inserter(w)) for w in range(4)] + [asyncio.create_task(counter())]
        while len(acked) < 400:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(server.kill)  # mid-stream: writes are in flight
        stop.set()
        await asyncio.gather(*tasks)
        await client.close()
        assert len(acked) >= 400 and counter_acked > 0

        await asyncio.to_thread(server.start)
        client = AsyncMongoClient(server.url(), tz_aware=True)
        stored = {d["_id"] async for d in client.drill.writes.find({}, {"_id": 1})}
        missing = [doc_id for doc_id in acked if doc_id not in stored]
        assert missing == [], f"{len(missing)} of {len(acked)} acknowledged inserts lost: {missing[:5]}"
        count = (await client.drill.writes.find_one({"_id": "counter"}))["n"]
        # the one update in flight at the kill may or may not have been applied
        assert counter_acked <= count <= counter_acked + 1, (counter_acked, count)
        await client.close()
    finally:
        server.stop()


async def test_onebox_keeps_its_answers_and_recovers_when_the_database_is_killed(tmp_path_factory, tmp_path,
                                                                                ssh_keypair):
    """Through onebox: instances created (202) and agent samples accepted (202) while the database is killed
    and restarted are all there afterwards, and onebox answers again without being restarted itself."""
    server = start_database(scratch_dir(tmp_path_factory, "durability-api"))
    try:
        settings = make_settings(server, tmp_path / "data", db_timeout_seconds=2.0)
        async with running_onebox(settings, worker=False) as (api, svc):
            headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            instance_id, token = await running_instance(svc)
            created: list[str] = []
            samples: list[tuple[str, dt.datetime]] = []
            stop = asyncio.Event()

            async def create() -> None:
                n = 0
                while not stop.is_set():
                    r = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"box-{n}"),
                                       headers=headers)
                    if r.status_code == 202:
                        created.append(r.json()["id"])
                    n += 1

            async def report() -> None:
                base = utcnow().replace(microsecond=0)
                n = 0
                while not stop.is_set():
                    at = base - dt.timedelta(seconds=n)
                    r = await api.post("/v1/agent/metrics", json={"instance_id": instance_id,
                                                                  "samples": [sample(at)]}, headers=bearer(token))
                    if r.status_code == 202 and r.json()["accepted"] == 1:
                        samples.append((instance_id, at))
                    n += 1

            tasks = [asyncio.create_task(create()), asyncio.create_task(report())]
            while len(created) < 10 or len(samples) < 20:
                await asyncio.sleep(0.05)
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(1.0)  # requests meet the outage: 503, never a false 202
            await asyncio.to_thread(server.start)
            await asyncio.sleep(1.0)
            stop.set()
            await asyncio.gather(*tasks)

            listed = set()
            cursor = None
            while True:
                page = (await api.get("/v1/instances", params={"limit": 100, **({"cursor": cursor} if cursor else {})},
                                      headers=headers)).json()
                listed |= {i["id"] for i in page["items"]}
                cursor = page["next_cursor"]
                if not cursor:
                    break
            lost = [i for i in created if i not in listed]
            assert lost == [], f"{len(lost)} of {len(created)} instances answered 202 are gone"
            stored = set(await stored_samples(svc.db.metrics, [instance_id]))
            lost_samples = [s for s in samples if s not in stored]
            assert lost_samples == [], f"{len(lost_samples)} of {len(samples)} acknowledged samples are gone"
            after = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="after"),
                                   headers=headers)
            assert after.status_code == 202, "onebox answers again without a restart of its own"
    finally:
        server.stop()


async def test_a_clean_restart_keeps_every_record(tmp_path_factory, tmp_path, ssh_keypair):
    server = start_database(scratch_dir(tmp_path_factory, "restart"))
    try:
        settings = make_settings(server, tmp_path / "data")
        async with running_onebox(settings) as (api, svc):
            headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            ids = []
            for n in range(3):
                r = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"keep-{n}"),
                                   headers=headers)
                ids.append(r.json()["id"])
            before = {i: await wait_status(api, f"/v1/instances/{i}", headers, {"running"}) for i in ids}
            events_before = {i: (await api.get(f"/v1/instances/{i}/events", headers=headers)).json() for i in ids}
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            for i in ids:
                after = (await api.get(f"/v1/instances/{i}", headers=headers)).json()
                assert {k: after[k] for k in ("status", "public_ip", "name")} == \
                    {k: before[i][k] for k in ("status", "public_ip", "name")}
                assert (await api.get(f"/v1/instances/{i}/events", headers=headers)).json() == events_before[i]
            for i in ids:
                assert (await api.delete(f"/v1/instances/{i}", headers=headers)).status_code == 202
            for i in ids:
                await wait_status(api, f"/v1/instances/{i}", headers, {"deleted"})
    finally:
        server.stop()


def _database_pids(data_file: Path) -> list[int]:
    """Processes whose command line names this data file: the embedded database of one onebox."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(data_file).encode() in cmdline:
            pids.append(int(entry))
    return pids


def _serve(data_dir: Path, db_port: int, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBOX_")}
    env.update({"ONEBOX_DATA_DIR": str(data_dir), "ONEBOX_EMBEDDED_DB_ADDRESS": f"127.0.0.1:{db_port}",
                "ONEBOX_EMBEDDED_DB_CACHE_MB": "64", "ONEBOX_JWT_SECRET": TEST_SECRET, "ONEBOX_LOG_LEVEL": "WARNING",
                "ONEBOX_CONFIGURE": "skip"})
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port)], env=env,
                                stdout=out, stderr=out, start_new_session=True)


async def _wait_ready(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                if (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    raise AssertionError(f"onebox serve never became ready: {log.read_text()[-3000:]}")


@pytest.mark.slow
async def test_a_killed_onebox_leaves_no_database_behind_and_the_next_start_finds_its_data(tmp_path, ssh_keypair):
    """`onebox serve` owns its embedded database: SIGKILL it and the database goes too (nothing holds the port
    or the file for the next start); the next `onebox serve` starts on the same data and has every record."""
    data_dir, db_port, log = tmp_path / "data", free_port(), tmp_path / "serve.log"
    data_file = data_dir / "db" / "onebox.mv"
    port = free_port()
    serve = _serve(data_dir, db_port, port, log)
    try:
        await _wait_ready(port, serve, log)
        assert len(_database_pids(data_file)) == 1
        token = subprocess.run([sys.executable, "-m", "app.cli", "token", "--user", "alice"], capture_output=True,
                               text=True, check=True, env={**os.environ, "ONEBOX_DATA_DIR": str(data_dir),
                                                           "ONEBOX_JWT_SECRET": TEST_SECRET}).stdout.strip()
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            r = await client.post("/v1/instances", json=instance_body(ssh_keypair.public, name="survivor"),
                                  headers=headers)
            assert r.status_code == 202, r.text
            survivor = r.json()["id"]
            await wait_status(client, f"/v1/instances/{survivor}", headers, {"running"}, timeout=60)

        os.killpg(serve.pid, signal.SIGKILL)  # no cleanup of any kind: the kernel closes its pipes
        serve.wait()
        deadline = time.monotonic() + 30
        while _database_pids(data_file) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _database_pids(data_file) == [], "the embedded database outlived the onebox that started it"

        serve = _serve(data_dir, db_port, port, log)
        await _wait_ready(port, serve, log)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            again = (await client.get(f"/v1/instances/{survivor}", headers=headers)).json()
            assert again["status"] == "running" and again["name"] == "survivor"
            assert (await client.delete(f"/v1/instances/{survivor}", headers=headers)).status_code == 202
            await wait_status(client, f"/v1/instances/{survivor}", headers, {"deleted"}, timeout=60)
        serve.send_signal(signal.SIGINT)  # Ctrl-C: onebox, then its database, stop
        serve.wait(60)
        deadline = time.monotonic() + 30
        while _database_pids(data_file) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _database_pids(data_file) == []
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        from tests.conftest import _remove_local_instances

        _remove_local_instances(data_dir)
