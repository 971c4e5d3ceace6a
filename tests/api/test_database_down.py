"""The database going away: 503 problems within 5 s, and no partial records after."""

from __future__ import annotations

import time
import uuid

import pytest

from tests.api.helpers import instance_body
from tests.conftest import make_settings, start_database



async def test_database_down_gives_503_then_recovers(tmp_path, ssh_keypair):
    import httpx

    from app.main import create_app
    from app.services import Services

    db = start_database(tmp_path / f"db-{uuid.uuid4().hex[:6]}")
    settings = make_settings(db, tmp_path / "data")
    svc = Services.build(settings)
    await svc.db.ensure_indexes()
    try:
        transport = httpx.ASGITransport(app=create_app(settings, svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://onebox.test") as api:
            headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            ok = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="before"), headers=headers)
            assert ok.status_code == 202
            db.stop()
            for method, path, body in [("GET", "/v1/instances", None),
                                       ("POST", "/v1/instances", instance_body(ssh_keypair.public, name="during")),
                                       ("GET", f"/v1/instances/{ok.json()['id']}", None)]:
                started = time.monotonic()
                response = await api.request(method, path, json=body, headers=headers)
                took = time.monotonic() - started
                assert response.status_code == 503, (method, path, response.text)
                assert response.json()["code"] == "database_unavailable"
                assert response.headers["content-type"].startswith("application/problem+json")
                assert took < 5.0, f"{method} {path} took {took:.1f}s"
            ready = await api.get("/readyz")
            assert ready.status_code == 503
            db.start()
            assert (await api.get("/readyz")).status_code == 200
            listed = (await api.get("/v1/instances", headers=headers)).json()["items"]
            assert [i["name"] for i in listed] == ["before"], "the request made while down left nothing"
            assert await svc.db.instances.count_documents({}) == 1
    finally:
        await svc.close()
        db.stop()
