"""The routes the web dashboard (and any frontend) relies on: catalog, features, dev sign-in, CORS, the page
itself, and the instance event stream. Through the real app and a real FerretDB, like tests/api."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import httpx
import pytest

from app.clock import utcnow
from app.ids import new_instance_id
from tests.api.helpers import instance_body, wait_status
from tests.conftest import make_settings


def parse_sse(text: str) -> list[dict]:
    """SSE messages as dicts {id, event, data}; comments and the retry hint are dropped."""
    out = []
    for block in text.split("\n\n"):
        message: dict = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            if field == "data":
                message["data"] = json.loads(value)
            elif field in ("id", "event"):
                message[field] = value
        if "event" in message:
            out.append(message)
    return out


async def app_client(settings, services=None):
    from app.main import create_app
    from app.services import Services

    svc = services or Services.build(settings)
    app = create_app(settings, svc)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://onebox.test"), svc


# --- catalog ---------------------------------------------------------------------------------------


class TestCatalog:
    async def test_anonymous_is_401(self, api):
        assert (await api.get("/v1/catalog")).status_code == 401

    async def test_local_catalog_contents(self, api, mint):
        response = await api.get("/v1/catalog", headers=mint())
        assert response.status_code == 200, response.text
        [local] = response.json()["providers"]
        assert local["name"] == "local" and local["available"] is True and local["error"] is None
        [region] = local["regions"]
        assert region["name"] == "local" and region["zones"] == ["local"]
        assert region["machine_types"] == [{"name": "local", "vcpus": 1, "memory_gb": 1.0, "gpu_count": 0,
                                            "gpu_type": None, "hourly_usd": 0.0}]
        assert "ubuntu-24.04" in local["images"] and "local" in local["images"]

    async def test_a_machine_type_absent_from_the_catalog_is_refused(self, api, mint, ssh_keypair):
        catalog = (await api.get("/v1/catalog", headers=mint())).json()
        offered = {m["name"] for r in catalog["providers"][0]["regions"] for m in r["machine_types"]}
        assert "g5.xlarge" not in offered
        response = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, machine_type="g5.xlarge"),
                                  headers=mint())
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "machine_type"
        accepted = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, machine_type=offered.pop()),
                                  headers=mint())
        assert accepted.status_code == 202, accepted.text

    async def test_one_failing_provider_is_reported_and_the_others_answered(self, dbserver, tmp_path, ssh_keypair):
        from providers.base import ProviderError
        from providers.local import LocalConfig, LocalProvider

        class Broken:
            def catalog(self):
                raise ProviderError("AWS credentials were not found", code="auth_failed")

        settings = make_settings(dbserver, tmp_path / "data", providers=["local", "aws", "gcp"])
        from app.services import Services

        svc = Services.build(settings, providers={"aws": Broken(), "local": LocalProvider(LocalConfig(root=tmp_path / "l"))})
        client, _ = await app_client(settings, svc)
        async with client:
            token = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            body = (await client.get("/v1/catalog", headers=token)).json()
        await svc.close()
        by_name = {p["name"]: p for p in body["providers"]}
        assert by_name["local"]["available"] is True
        assert by_name["aws"] == {**by_name["aws"], "available": False,
                                  "error": {"code": "auth_failed", "message": "AWS credentials were not found"}}
        # gcp without ONEBOX_GCP_PROJECT is misconfigured: reported without leaking the exception text
        assert by_name["gcp"]["available"] is False and by_name["gcp"]["error"]["code"] == "unavailable"

    def test_clouds_report_gpus_and_prices(self):
        """Each cloud's catalog names GPU types and an indicative price (from the fakes the provider tests use)."""
        from providers.base import MachineType
        from providers import prices

        assert prices.hourly_usd("aws", "g5.xlarge") and prices.hourly_usd("gcp", "g2-standard-4")
        assert prices.azure_gpu_type("Standard_NC4as_T4_v3", 1) == "NVIDIA T4"
        assert prices.azure_gpu_type("Standard_D2s_v5", 0) is None
        assert prices.gcp_accelerator_name("projects/p/zones/z/acceleratorTypes/nvidia-l4") == "NVIDIA L4"
        assert MachineType("x", 1, 1.0).gpu_count == 0


# --- features and dev sign-in ------------------------------------------------------------------------


class TestFeatures:
    async def test_defaults_are_public_and_on(self, api):
        response = await api.get("/v1/features")
        assert response.status_code == 200
        assert response.json() == {"features": {"instances_ui": True, "snapshots": True, "gpu_metrics": True},
                                   "dev_login": False}

    async def test_flags_come_from_settings(self, dbserver, tmp_path, monkeypatch):
        from app.settings import Settings

        monkeypatch.setenv("ONEBOX_FEATURES", '{"instances_ui": false}')
        assert Settings().feature_flags["instances_ui"] is False
        client, svc = await app_client(make_settings(dbserver, tmp_path, features={"instances_ui": False}))
        async with client:
            body = (await client.get("/v1/features")).json()
        await svc.close()
        assert body["features"] == {"instances_ui": False, "snapshots": True, "gpu_metrics": True}

    def test_unknown_flag_is_refused(self, dbserver, tmp_path):
        with pytest.raises(ValueError, match="unknown feature flags"):
            make_settings(dbserver, tmp_path, features={"instance_ui": False})


class TestDevLogin:
    async def test_off_by_default_is_404_problem(self, api):
        response = await api.post("/v1/dev/token")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("application/problem+json")

    async def test_refused_on_an_external_database_even_when_asked(self, dbserver, tmp_path):
        client, svc = await app_client(make_settings(dbserver, tmp_path, dev_login=True))  # mongodb_url is set
        async with client:
            assert (await client.post("/v1/dev/token")).status_code == 404
            assert (await client.get("/v1/features")).json()["dev_login"] is False
        await svc.close()

    async def test_on_with_the_embedded_default(self, dbserver, tmp_path):
        settings = make_settings(dbserver, tmp_path, dev_login=True)
        # The embedded default is "no ONEBOX_MONGODB_URL"; point its address at the test's FerretDB.
        settings = settings.model_copy(update={"mongodb_url": None, "embedded_db_address": dbserver.address})
        client, svc = await app_client(settings)
        async with client:
            assert (await client.get("/v1/features")).json()["dev_login"] is True
            minted = await client.post("/v1/dev/token", json={"user": "carol"})
            assert minted.status_code == 200, minted.text
            token = minted.json()["token"]
            listed = await client.get("/v1/instances", headers={"Authorization": f"Bearer {token}"})
            assert listed.status_code == 200
            assert svc.tokens.verify_user(token).subject == "carol" and not svc.tokens.verify_user(token).is_admin
            assert (await client.post("/v1/dev/token", json={"user": "Bad User"})).status_code == 422
            assert (await client.post("/v1/dev/token", json={"role": "admin"})).status_code == 422
            assert (await client.post("/v1/dev/token")).json()["user"] == "dev", "no body: the default user"
        await svc.close()


# --- CORS and the page -------------------------------------------------------------------------------


class TestCors:
    async def _preflight(self, client, origin):
        return await client.options("/v1/instances", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})

    async def test_allowed_and_denied_origins(self, dbserver, tmp_path, monkeypatch):
        from app.settings import Settings

        monkeypatch.setenv("ONEBOX_CORS_ORIGINS", "https://app.example.com, http://localhost:5173/")
        assert Settings().cors_origins == ["https://app.example.com", "http://localhost:5173"]
        client, svc = await app_client(make_settings(dbserver, tmp_path, cors_origins="https://app.example.com"))
        async with client:
            ok = await self._preflight(client, "https://app.example.com")
            assert ok.status_code == 200
            assert ok.headers["access-control-allow-origin"] == "https://app.example.com"
            assert "authorization" in ok.headers["access-control-allow-headers"].lower()
            denied = await self._preflight(client, "https://evil.example.net")
            assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
            simple = await client.get("/v1/features", headers={"Origin": "https://app.example.com"})
            assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
            assert "access-control-allow-credentials" not in simple.headers
        await svc.close()

    async def test_no_origin_allowed_by_default(self, api):
        response = await api.options("/v1/instances", headers={"Origin": "https://app.example.com",
                                                               "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in response.headers

    def test_wildcard_is_refused(self, dbserver, tmp_path):
        with pytest.raises(ValueError, match="cannot be allowed"):
            make_settings(dbserver, tmp_path, cors_origins="*")


async def test_the_dashboard_is_served_with_a_strict_csp(api):
    page = await api.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    for directive in ("script-src 'self'", "style-src 'self'", "connect-src 'self'", "default-src 'none'"):
        assert directive in csp
    assert "http" not in page.text.replace("http-equiv", ""), "nothing is fetched from elsewhere"
    for asset in ("app.js", "api.js", "charts.js", "style.css"):
        response = await api.get(f"/static/{asset}")
        assert response.status_code == 200, asset
        assert "https://" not in response.text and "//cdn" not in response.text, asset
        assert response.headers["content-security-policy"] == csp
    assert "content-security-policy" not in (await api.get("/healthz")).headers
    assert (await api.head("/")).status_code == 200


# --- the event stream --------------------------------------------------------------------------------


async def _instance_record(services, owner="alice", status="running", job=None, updated_at=None) -> str:
    """A record as a worker leaves it; ``updated_at`` is when it reached ``status`` (its final event comes after)."""
    instance_id = new_instance_id()
    now = utcnow()
    await services.db.instances.insert_one({
        "_id": instance_id, "owner": owner, "name": "box", "provider": "local", "region": "local", "zone": None,
        "machine_type": "local", "image": None, "snapshot_id": None, "disk_gb": 20, "ssh_user": "alice",
        "ssh_public_key": "k", "labels": {}, "status": status, "error": None, "public_ip": None, "ssh_port": None,
        "created_at": now, "updated_at": updated_at or now, "job": job})
    return instance_id


class TestEventStream:
    async def test_anonymous_is_401_and_another_users_instance_404(self, api, services, mint):
        instance_id = await _instance_record(services, status="deleted")
        assert (await api.get(f"/v1/instances/{instance_id}/events/stream")).status_code == 401
        other = await api.get(f"/v1/instances/{instance_id}/events/stream", headers=mint("bob"))
        assert other.status_code == 404 and other.json()["code"] == "not_found"
        missing = await api.get("/v1/instances/i-nothing/events/stream", headers=mint("alice"))
        assert missing.status_code == 404

    async def test_malformed_last_event_id_is_a_field_problem(self, api, services, mint):
        instance_id = await _instance_record(services, status="deleted")
        response = await api.get(f"/v1/instances/{instance_id}/events/stream",
                                 headers={**mint(), "Last-Event-ID": "nonsense"})
        assert response.status_code == 422 and response.json()["errors"][0]["field"] == "Last-Event-ID"

    async def test_order_ids_resume_and_end(self, api, services, mint):
        base = utcnow() - dt.timedelta(seconds=30)
        instance_id = await _instance_record(services, status="deleted", updated_at=base)
        # Same timestamps on purpose: ties are broken by id, so order and resume stay exact.
        for n in range(7):
            await services.db.events.insert_one({"instance_id": instance_id, "at": base + dt.timedelta(seconds=n // 2),
                                                 "type": f"e{n}", "step": None, "message": f"event {n}"})
        await services.db.events.insert_one({"instance_id": "i-someone-else", "at": base, "type": "x", "step": None,
                                             "message": "not ours"})
        response = await api.get(f"/v1/instances/{instance_id}/events/stream", headers=mint())
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"].startswith("no-cache")
        messages = parse_sse(response.text)
        events = [m for m in messages if m["event"] == "instance"]
        assert [e["data"]["type"] for e in events] == [f"e{n}" for n in range(7)]
        ids = [e["id"] for e in events]
        assert len(set(ids)) == 7
        assert messages[0]["event"] == "status" and messages[0]["data"]["status"] == "deleted"
        assert messages[0]["id"] == "0", "before any event, the position is the beginning"
        assert messages[-1]["data"] == {"status": "deleted"} and messages[-1]["id"] == ids[-1]
        # resume after the third event: exactly the four after it, no duplicates, no gaps
        resumed = parse_sse((await api.get(f"/v1/instances/{instance_id}/events/stream",
                                           headers={**mint(), "Last-Event-ID": ids[2]})).text)
        assert [m["data"]["type"] for m in resumed if m["event"] == "instance"] == ["e3", "e4", "e5", "e6"]
        assert resumed[0]["event"] == "status", "state comes first on every connection"
        assert resumed[-1]["event"] == "end"
        # resume after the last one: nothing but the state and the end
        done = parse_sse((await api.get(f"/v1/instances/{instance_id}/events/stream",
                                        headers={**mint(), "Last-Event-ID": ids[-1]})).text)
        assert [m["event"] for m in done] == ["status", "end"]

    async def test_a_failed_instance_with_a_job_left_is_not_final(self, dbserver, tmp_path, mint):
        settings = make_settings(dbserver, tmp_path, events_stream_poll_seconds=0.05,
                                 events_stream_keepalive_seconds=0.1, events_stream_max_seconds=0.6)
        client, svc = await app_client(settings)
        async with client:
            instance_id = await _instance_record(svc, status="failed", job={"id": "x", "kind": "provision"})
            token = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            text = (await client.get(f"/v1/instances/{instance_id}/events/stream", headers=token)).text
            messages = parse_sse(text)
            assert [m["event"] for m in messages] == ["status", "reconnect"], "not ended: a job is still at work"
            assert ": keep-alive" in text
            now = utcnow()
            await svc.db.instances.update_one({"_id": instance_id}, {"$set": {"job": None, "updated_at": now}})
            await svc.db.events.insert_one({"instance_id": instance_id, "at": now, "type": "status", "step": None,
                                            "message": "provisioning → failed"})
            messages = parse_sse((await client.get(f"/v1/instances/{instance_id}/events/stream", headers=token)).text)
            assert [m["event"] for m in messages] == ["status", "instance", "end"]
            assert messages[-1]["data"] == {"status": "failed"} and messages[-1]["id"] == messages[1]["id"]
        await svc.close()

    async def test_live_instance_streams_its_whole_life_until_deleted(self, dbserver, tmp_path, ssh_keypair):
        from tests.e2e.cloud_support import running_onebox

        settings = make_settings(dbserver, tmp_path / "data", events_stream_poll_seconds=0.1,
                                 events_stream_max_seconds=120)
        async with running_onebox(settings) as (api, svc):
            headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
            created = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)).json()
            stream = asyncio.create_task(api.get(f"/v1/instances/{created['id']}/events/stream", headers=headers))
            path = f"/v1/instances/{created['id']}"
            await wait_status(api, path, headers, {"running"}, 60)
            assert not stream.done(), "a running instance's stream stays open"
            assert (await api.post(f"{path}/stop", headers=headers)).status_code == 202
            await wait_status(api, path, headers, {"stopped"}, 60)
            await asyncio.sleep(0.3)  # a few polls of the stream
            assert not stream.done(), "stopped is steady, not final: the stream stays open"
            assert (await api.post(f"{path}/start", headers=headers)).status_code == 202
            await wait_status(api, path, headers, {"running"}, 60)
            assert (await api.delete(f"/v1/instances/{created['id']}", headers=headers)).status_code == 202
            response = await asyncio.wait_for(stream, 60)
            listed = (await api.get(f"/v1/instances/{created['id']}/events", headers=headers)).json()
        messages = parse_sse(response.text)
        statuses = [m["data"]["status"] for m in messages if m["event"] == "status"]
        # Status messages are state, sampled each poll: a state shorter than a poll may not get its own.
        assert statuses[0] == "pending" and statuses[-1] == "deleted"
        assert "stopped" in statuses
        stopped_at = statuses.index("stopped")
        order = ["pending", "provisioning", "configuring", "running", "stopping", "stopped", "starting", "running",
                 "deleting", "deleted"]
        assert statuses[:stopped_at] == sorted(statuses[:stopped_at], key=order.index) and \
               statuses[stopped_at:] == sorted(statuses[stopped_at:], key=order[5:].index), \
               "status changes arrive in lifecycle order"
        streamed = [m["data"] for m in messages if m["event"] == "instance"]
        # Status messages are state (changes within one poll are coalesced); the history is in the events.
        assert [e["message"] for e in streamed if e["type"] == "status"] == [
            "pending → provisioning", "provisioning → configuring", "configuring → running",
            "running → stopping (requested by alice)", "stopping → stopped", "stopped → starting (requested by alice)",
            "starting → running", "instance running → deleting", "deleting → deleted"]
        assert [(e["type"], e["message"]) for e in streamed] == [(e["type"], e["message"]) for e in listed], \
            "every event, in the same order as GET /events, each once"
        assert streamed[-1]["message"].endswith("→ deleted"), "the final transition's own event comes before the end"
        assert messages[-1]["event"] == "end" and messages[-1]["data"] == {"status": "deleted"}
        running = next(e for e in streamed if e["type"] == "instance.running")
        assert running["message"].startswith("running at 127.0.0.")
        for m in messages:
            if m["event"] == "status" and m["data"]["status"] == "running":
                assert m["data"]["public_ip"].startswith("127.0.0.")
