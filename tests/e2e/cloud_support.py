"""Running onebox's API and workers in tests: on the local provider, or against the local cloud
stand-ins (moto, the GCE fake, the ARM fake)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from tests.api.helpers import wait_status

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVh9k3YgCz0m3b0nB2H0q8q3oH9u3Xl0VvS1r7Jm1xY alice@laptop"


@dataclass
class Cloud:
    """One cloud stand-in as the tests drive it through onebox."""

    name: str
    region: str
    machine_type: str
    image: str
    make_provider: Callable[[], Any]
    alive: Callable[[], list[str]]  # ids of every managed resource that still costs money
    worker_env: dict[str, str]  # for `onebox worker` processes reaching the same stand-in
    zone: str | None = None
    parts: int = 1  # cloud resources one running instance consists of (counted by ``alive``)

    def body(self, **overrides) -> dict:
        body = {"name": "cloud-box", "provider": self.name, "region": self.region,
                "machine_type": self.machine_type, "image": self.image, "ssh_user": "alice",
                "ssh_public_key": SSH_KEY, "disk_gb": 20}
        if self.zone:
            body["zone"] = self.zone
        body.update(overrides)
        return {k: v for k, v in body.items() if v is not None}


@contextlib.asynccontextmanager
async def running_onebox(settings, *, providers: dict | None = None, worker: bool = True):
    """The app with its own settings (and a background worker), torn down with any local instances."""
    from app.main import create_app
    from app.services import Services
    from app.worker.runner import Worker
    from tests.conftest import _remove_local_instances

    svc = Services.build(settings, providers=providers)
    await svc.db.ensure_indexes()
    await svc.providers.warm_catalogs()  # as the app's start does (httpx's ASGI transport runs no lifespan)
    stop = asyncio.Event()
    task = asyncio.create_task(Worker(svc).run(stop)) if worker else None
    try:
        transport = httpx.ASGITransport(app=create_app(settings, svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://onebox.test") as client:
            yield client, svc
    finally:
        stop.set()
        if task:
            await task
        await svc.close()
        _remove_local_instances(settings.data_dir)


@contextlib.asynccontextmanager
async def served_app(settings, providers=None):
    """onebox on a real port (agents post to it over HTTP) with a worker, torn down with its instances."""
    import uvicorn

    from app.main import create_app
    from app.services import Services
    from app.worker.runner import Worker
    from tests.conftest import _remove_local_instances

    svc = Services.build(settings, providers=providers)
    await svc.db.ensure_indexes()
    await svc.providers.warm_catalogs()  # as the app's start does (httpx's ASGI transport runs no lifespan)
    port = int(settings.public_url.rsplit(":", 1)[1])
    server = uvicorn.Server(uvicorn.Config(create_app(settings, svc), host="127.0.0.1", port=port,
                                           lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    stop = asyncio.Event()
    working = asyncio.create_task(Worker(svc).run(stop))
    try:
        while not server.started:
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=settings.public_url, timeout=30) as client:
            yield client, svc
    finally:
        stop.set()
        await working
        server.should_exit = True
        await serving
        await svc.close()
        _remove_local_instances(settings.data_dir)


def onebox_for(cloud: Cloud, settings, *, worker: bool = True):
    return running_onebox(settings, providers={cloud.name: cloud.make_provider()}, worker=worker)


async def full_flow(api, headers, cloud: Cloud) -> None:
    """create → running → snapshot → instance from it → delete both → delete snapshot: nothing left."""
    first = (await api.post("/v1/instances", json=cloud.body(name="first"), headers=headers)).json()
    first = await wait_status(api, f"/v1/instances/{first['id']}", headers, {"running", "failed"}, 120)
    assert first["status"] == "running", first
    assert first["public_ip"] and first["cloud_id"] and first["private_ip"]
    snap = await api.post(f"/v1/instances/{first['id']}/snapshots", json={"name": "first-snap"}, headers=headers)
    assert snap.status_code == 202, snap.text
    snap = await wait_status(api, f"/v1/snapshots/{snap.json()['id']}", headers, {"available", "failed"}, 120)
    assert snap["status"] == "available", snap
    second = (await api.post("/v1/instances", json=cloud.body(name="second", image=None, snapshot_id=snap["id"]),
                             headers=headers)).json()
    second = await wait_status(api, f"/v1/instances/{second['id']}", headers, {"running", "failed"}, 120)
    assert second["status"] == "running", second
    for inst in (first, second):
        assert (await api.delete(f"/v1/instances/{inst['id']}", headers=headers)).status_code == 202
    for inst in (first, second):
        assert (await wait_status(api, f"/v1/instances/{inst['id']}", headers, {"deleted"}, 120))["status"] == "deleted"
    assert (await api.delete(f"/v1/snapshots/{snap['id']}", headers=headers)).status_code == 202
    assert (await wait_status(api, f"/v1/snapshots/{snap['id']}", headers, {"deleted"}, 120))["status"] == "deleted"
    assert cloud.alive() == [], "nothing of ours is left in the cloud"
