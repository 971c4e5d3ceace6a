"""The instances API contract, through the real app and a real FerretDB (no worker)."""

from __future__ import annotations

import pytest

from tests.api.helpers import instance_body



async def count_instances(services) -> int:
    return await services.db.instances.count_documents({})


class TestAuth:
    async def test_no_token_is_401_problem(self, api):
        response = await api.get("/v1/instances")
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "unauthorized"

    @pytest.mark.parametrize("header", ["Bearer nonsense", "Basic YWxpY2U6cHc=", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."])
    async def test_bad_token_is_401(self, api, header):
        response = await api.get("/v1/instances", headers={"Authorization": header})
        assert response.status_code == 401

    async def test_expired_token_is_401(self, api, services):
        import datetime as dt

        token = services.tokens.mint("alice", ttl=dt.timedelta(seconds=-120))
        response = await api.get("/v1/instances", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401

    async def test_health_needs_no_token(self, api):
        assert (await api.get("/healthz")).status_code == 200
        assert (await api.get("/readyz")).json() == {"status": "ready"}


class TestCreate:
    async def test_create_returns_202_location_and_the_instance(self, api, mint, ssh_keypair):
        response = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, labels={"team": "ml"}),
                                  headers=mint("alice"))
        assert response.status_code == 202, response.text
        body = response.json()
        assert response.headers["location"] == f"/v1/instances/{body['id']}"
        for field in ("id", "name", "owner", "provider", "region", "zone", "machine_type", "image", "snapshot_id",
                      "status", "error", "public_ip", "private_ip", "cloud_id", "ssh_user", "labels",
                      "created_at", "updated_at"):
            assert field in body, field
        assert body["owner"] == "alice" and body["status"] == "pending" and body["labels"] == {"team": "ml"}
        assert "ssh_public_key" not in body and "job" not in body
        got = await api.get(body["id"].join(["/v1/instances/", ""]), headers=mint("alice"))
        assert got.status_code == 200 and got.json()["id"] == body["id"]
        events = (await api.get(f"/v1/instances/{body['id']}/events", headers=mint("alice"))).json()
        assert events[0]["type"] == "created"

    @pytest.mark.parametrize(
        "overrides,field",
        [
            ({"provider": "openstack"}, "provider"),
            ({"provider": "aws", "region": "us-east-1", "machine_type": "t3.micro"}, "provider"),  # not enabled here
            ({"region": "mars-1"}, "region"),
            ({"machine_type": "huge"}, "machine_type"),
            ({"zone": "nowhere"}, "zone"),
            ({"image": "windows-95"}, "image"),
            ({"ssh_public_key": "ssh-rsa AAAAnotbase64!!"}, "ssh_public_key"),
            ({"ssh_public_key": "not a key"}, "ssh_public_key"),
            ({"name": "Bad_Name"}, "name"),
            ({"name": "-leading"}, "name"),
            ({"name": "x" * 64}, "name"),
            ({"ssh_user": "root"}, "ssh_user"),
            ({"ssh_user": "Bad User"}, "ssh_user"),
            ({"labels": {"Bad Key": "v"}}, "labels"),
            ({"labels": {"onebox-owner": "mallory"}}, "labels"),
            ({"disk_gb": 1}, "disk_gb"),
            ({"owner": "mallory"}, "owner"),
            ({"status": "running"}, "status"),
            ({"id": "i-x"}, "id"),
            ({"cloud_id": "x"}, "cloud_id"),
        ],
    )
    async def test_bad_input_names_the_field_and_creates_nothing(self, api, mint, ssh_keypair, services,
                                                                 overrides, field):
        response = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, **overrides),
                                  headers=mint("alice"))
        assert response.status_code == 422, response.text
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert any(e["field"].split(".")[0] == field for e in problem["errors"]), problem
        assert await count_instances(services) == 0

    async def test_image_and_snapshot_together_refused(self, api, mint, ssh_keypair, services):
        body = instance_body(ssh_keypair.public, image="ubuntu-24.04", snapshot_id="s-x")
        response = await api.post("/v1/instances", json=body, headers=mint("alice"))
        assert response.status_code == 422
        assert "snapshot_id" in response.json()["detail"] and "image" in response.json()["detail"]
        assert await count_instances(services) == 0

    async def test_snapshot_checks(self, api, mint, ssh_keypair, services):
        from app.clock import utcnow

        now = utcnow()
        base = {"instance_id": "i-x", "owner": "alice", "name": "s", "cloud_id": "c", "error": None,
                "created_at": now, "updated_at": now, "job": None}
        await services.db.snapshots.insert_many([
            {"_id": "s-other-region", "provider": "local", "region": "elsewhere", "status": "available", **base},
            {"_id": "s-other-provider", "provider": "aws", "region": "local", "status": "available", **base},
            {"_id": "s-creating", "provider": "local", "region": "local", "status": "creating", **base},
            {"_id": "s-bobs", "provider": "local", "region": "local", "status": "available", **{**base, "owner": "bob"}},
        ])
        for snap, status in [("s-other-region", 422), ("s-other-provider", 422), ("s-creating", 409),
                             ("s-bobs", 422), ("s-missing", 422)]:
            response = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, snapshot_id=snap),
                                      headers=mint("alice"))
            assert response.status_code == status, (snap, response.text)
            assert response.json()["errors"][0]["field"] == "snapshot_id"
        assert await count_instances(services) == 0

    async def test_idempotency_key(self, api, mint, ssh_keypair, services):
        headers = {**mint("alice"), "Idempotency-Key": "abc-123"}
        first = await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)
        again = await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=headers)
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"]
        other = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name="box-2"), headers=headers)
        assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
        # The same key from another user is another key.
        bobs = await api.post("/v1/instances", json=instance_body(ssh_keypair.public),
                              headers={**mint("bob"), "Idempotency-Key": "abc-123"})
        assert bobs.status_code == 202 and bobs.json()["id"] != first.json()["id"]
        assert await count_instances(services) == 2


class TestTenancy:
    async def test_other_users_get_404_admin_sees_all(self, api, mint, ssh_keypair, services):
        created = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=mint("alice"))).json()
        path = f"/v1/instances/{created['id']}"
        for method, suffix in [("GET", ""), ("DELETE", ""), ("GET", "/events")]:
            response = await api.request(method, path + suffix, headers=mint("bob"))
            assert response.status_code == 404, (method, suffix)
        response = await api.post(path + "/snapshots", json={"name": "s1"}, headers=mint("bob"))
        assert response.status_code == 404
        assert (await api.get("/v1/instances", headers=mint("bob"))).json()["items"] == []
        from app.clock import utcnow

        now = utcnow()
        await services.db.snapshots.insert_one({
            "_id": "s-alices", "instance_id": created["id"], "owner": "alice", "name": "s", "provider": "local",
            "region": "local", "status": "available", "cloud_id": "c", "error": None, "created_at": now,
            "updated_at": now, "job": None})
        for method in ("GET", "DELETE"):
            assert (await api.request(method, "/v1/snapshots/s-alices", headers=mint("bob"))).status_code == 404
        assert (await api.get("/v1/snapshots", headers=mint("bob"))).json()["items"] == []
        assert (await api.get("/v1/snapshots/s-alices", headers=mint("alice"))).status_code == 200
        assert (await api.get(path, headers=mint("root", admin=True))).status_code == 200
        listed = (await api.get("/v1/instances", headers=mint("root", admin=True))).json()["items"]
        assert [i["id"] for i in listed] == [created["id"]]


class TestList:
    async def test_pagination_and_filters(self, api, mint, ssh_keypair, services):
        ids = []
        for n in range(5):
            r = await api.post("/v1/instances", json=instance_body(ssh_keypair.public, name=f"box-{n}"),
                               headers=mint("alice"))
            ids.append(r.json()["id"])
        seen, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = (await api.get("/v1/instances", params=params, headers=mint("alice"))).json()
            seen += [i["id"] for i in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))
        await services.db.instances.update_one({"_id": ids[0]}, {"$set": {"status": "deleted"}})
        listed = (await api.get("/v1/instances", headers=mint("alice"))).json()["items"]
        assert ids[0] not in [i["id"] for i in listed]
        deleted = (await api.get("/v1/instances?status=deleted", headers=mint("alice"))).json()["items"]
        assert [i["id"] for i in deleted] == [ids[0]]
        assert (await api.get("/v1/instances?provider=aws", headers=mint("alice"))).json()["items"] == []
        bad = await api.get("/v1/instances?cursor=garbage", headers=mint("alice"))
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"
        assert (await api.get("/v1/instances?limit=1000", headers=mint("alice"))).status_code == 422
        assert (await api.get("/v1/instances?status=bogus", headers=mint("alice"))).status_code == 422


class TestDelete:
    async def test_delete_while_pending_then_again_is_409(self, api, mint, ssh_keypair):
        created = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=mint("alice"))).json()
        first = await api.delete(f"/v1/instances/{created['id']}", headers=mint("alice"))
        assert first.status_code == 202
        second = await api.delete(f"/v1/instances/{created['id']}", headers=mint("alice"))
        assert second.status_code == 409
        assert second.json()["current_status"] == "pending"

    async def test_delete_deleted_is_409_with_status(self, api, mint, ssh_keypair, services):
        created = (await api.post("/v1/instances", json=instance_body(ssh_keypair.public), headers=mint("alice"))).json()
        await services.db.instances.update_one({"_id": created["id"]}, {"$set": {"status": "deleted", "job": None}})
        response = await api.delete(f"/v1/instances/{created['id']}", headers=mint("alice"))
        assert response.status_code == 409 and response.json()["current_status"] == "deleted"


class TestOpenApi:
    async def test_every_request_body_has_an_example(self, api):
        spec = (await api.get("/openapi.json")).json()
        schemas = spec["components"]["schemas"]
        bodies = 0
        for path, ops in spec["paths"].items():
            for method, op in ops.items():
                content = op.get("requestBody", {}).get("content", {}).get("application/json")
                if not content:
                    continue
                bodies += 1
                ref = content["schema"]["$ref"].rsplit("/", 1)[1]
                assert schemas[ref].get("examples"), f"{method.upper()} {path} has no example"
        assert bodies >= 2
        assert (await api.get("/docs")).status_code == 200

    async def test_body_too_large_is_413(self, api, mint, ssh_keypair):
        body = instance_body(ssh_keypair.public, bootstrap_script="x" * 300_000)
        response = await api.post("/v1/instances", json=body, headers=mint("alice"))
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"
