"""The JWT attack suite: every forged, stale or misused token is refused with 401."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.main import create_app
from app.services import Services
from app.settings import JwtKey
from tests.conftest import make_settings


OLD = "old-key-" + "o" * 40
NEW = "new-key-" + "n" * 40


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def claims(**overrides) -> dict:
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    base = {"sub": "alice", "iat": now, "exp": now + 600, "iss": "onebox", "aud": "onebox", "typ": "user"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict, secret: str = NEW, kid: str | None = "new", **header) -> str:
    headers = {"kid": kid, **header} if kid else header
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def by_hand(header: dict, payload: dict, key: bytes) -> str:
    signing = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    return signing + "." + b64(hmac.new(key, signing.encode(), hashlib.sha256).digest())


@pytest.fixture(scope="module")
def rsa_pem():
    key = rsa.generate_private_key(65537, 2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@pytest.fixture
async def api_keys(dbserver, tmp_path, rsa_pem):
    """A onebox with two active keys (new: HS256, rs: RS256) — the old HS256 key was rotated out."""
    settings = make_settings(dbserver, tmp_path / "data", jwt_signing_kid="new", jwt_keys={
        "new": JwtKey(alg="HS256", secret=NEW), "rs": JwtKey(alg="RS256", public_key=rsa_pem)})
    svc = Services.build(settings)
    await svc.db.ensure_indexes()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(settings, svc)),
                                 base_url="http://onebox.test") as client:
        yield client, svc
    await svc.close()


CASES = {
    "alg_none": lambda pem: b64(b'{"alg":"none","typ":"JWT","kid":"new"}') + "." + b64(json.dumps(claims()).encode()) + ".",
    "hs256_with_rs256_public_key": lambda pem: by_hand({"alg": "HS256", "kid": "rs"}, claims(), pem.encode()),
    "expired": lambda pem: hs(claims(exp=int(dt.datetime.now(dt.timezone.utc).timestamp()) - 3600)),
    "nbf_in_future": lambda pem: hs(claims(nbf=int(dt.datetime.now(dt.timezone.utc).timestamp()) + 3600)),
    "missing_exp": lambda pem: hs(claims(exp=None)),
    "missing_sub": lambda pem: hs(claims(sub=None)),
    "wrong_iss": lambda pem: hs(claims(iss="evil")),
    "wrong_aud": lambda pem: hs(claims(aud="somebody-else")),
    "agent_token_on_user_route": lambda pem: hs(claims(typ="agent", aud="onebox-agent", jti="j")),
    "unknown_kid": lambda pem: hs(claims(), kid="nope"),
    "kid_is_a_path": lambda pem: hs(claims(), kid="../../../../dev/null"),
    "kid_is_sql": lambda pem: hs(claims(), kid="x' OR '1'='1"),
    "kid_is_a_url": lambda pem: hs(claims(), kid="https://evil.example/key"),
    "crit_header": lambda pem: hs(claims(), crit=["exp"]),
    "tampered_payload": lambda pem: (lambda t: t.split(".")[0] + "." + b64(json.dumps(claims(sub="root")).encode())
                                     + "." + t.split(".")[2])(hs(claims())),
    "rotated_out_key": lambda pem: hs(claims(), secret=OLD, kid="old"),
    "rotated_out_key_under_a_live_kid": lambda pem: hs(claims(), secret=OLD, kid="new"),
    "no_kid_with_several_keys": lambda pem: hs(claims(), kid=None),
}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_refused(case, api_keys, rsa_pem):
    api, _ = api_keys
    token = CASES[case](rsa_pem)
    response = await api.get("/v1/instances", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, (case, response.text)
    assert response.json()["code"] == "unauthorized"


async def test_the_live_key_works(api_keys):
    api, svc = api_keys
    assert (await api.get("/v1/instances", headers={"Authorization": f"Bearer {hs(claims())}"})).status_code == 200
    minted = svc.tokens.mint("alice")
    assert jwt.get_unverified_header(minted)["kid"] == "new"
    assert (await api.get("/v1/instances", headers={"Authorization": f"Bearer {minted}"})).status_code == 200


async def test_user_token_on_agent_route(api_keys):
    api, _ = api_keys
    response = await api.post("/v1/agent/metrics", headers={"Authorization": f"Bearer {hs(claims())}"},
                              json={"instance_id": "i-x", "samples": [{"at": "2026-01-01T00:00:00Z"}]})
    assert response.status_code == 401
