"""User tokens: pinned algorithms, required claims, RS256/ES256 keys, and the `onebox token` command."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.auth.tokens import InvalidToken, TokenService
from app.settings import Settings


def pem_pair(kind: str) -> tuple[str, str]:
    key = rsa.generate_private_key(65537, 2048) if kind == "RS256" else ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_asymmetric_keys_verify_and_pin_the_algorithm(alg, tmp_path):
    private, public = pem_pair(alg)
    tokens = TokenService(Settings(jwt_algorithm=alg, jwt_public_key=public, jwt_private_key=private,
                                   data_dir=tmp_path))
    principal = tokens.verify_user(tokens.mint("carol", role="admin"))
    assert principal.subject == "carol" and principal.is_admin
    # HS256 signed with the public key as the secret: the classic confusion attack.
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = {"sub": "mallory", "iat": now, "exp": now + 60, "iss": "onebox", "aud": "onebox", "typ": "user"}
    import hmac, hashlib, base64, json  # noqa: E401 - build the forgery by hand: pyjwt refuses PEM secrets

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    forged = signing + "." + b64(hmac.new(public.encode(), signing.encode(), hashlib.sha256).digest())
    with pytest.raises(InvalidToken):
        tokens.verify_user(forged)


@pytest.mark.parametrize("missing", ["exp", "iat", "sub", "iss", "aud"])
def test_required_claims(missing, tmp_path):
    secret = "s" * 40
    tokens = TokenService(Settings(jwt_secret=secret, data_dir=tmp_path))
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    claims = {"sub": "a", "iat": now, "exp": now + 60, "iss": "onebox", "aud": "onebox", "typ": "user"}
    del claims[missing]
    with pytest.raises(InvalidToken):
        tokens.verify_user(jwt.encode(claims, secret, algorithm="HS256"))


def test_short_secret_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="at least 32"):
        TokenService(Settings(jwt_secret="short", data_dir=tmp_path))
    env = {**os.environ, "ONEBOX_JWT_SECRET": "short", "ONEBOX_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "app.cli", "serve", "--port", "1"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "at least 32" in result.stderr


def test_onebox_token_command_prints_a_valid_token(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBOX_")}
    env["ONEBOX_DATA_DIR"] = str(tmp_path)  # the embedded default: a secret generated under the data dir
    out = subprocess.run([sys.executable, "-m", "app.cli", "token", "--user", "alice", "--admin", "--ttl", "2h"],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    secret = (tmp_path / "jwt-secret").read_text().strip()
    assert oct((tmp_path / "jwt-secret").stat().st_mode & 0o777) == "0o600"
    principal = TokenService(Settings(jwt_secret=secret, data_dir=tmp_path)).verify_user(out)
    assert principal.subject == "alice" and principal.is_admin
    claims = jwt.decode(out, options={"verify_signature": False})
    assert 7100 < claims["exp"] - claims["iat"] <= 7200


def test_a_remembered_agent_token_still_expires(tmp_path):
    """Verified agent tokens are remembered to spare the signature check, never past their exp."""
    import time as clock

    from app.auth.tokens import AGENT_TOKEN_TYPE

    tokens = TokenService(Settings(jwt_secret="s" * 40, jwt_leeway_seconds=0, data_dir=tmp_path))
    short = tokens.mint("i-1", typ=AGENT_TOKEN_TYPE, audience=tokens.agent_audience, role="agent",
                        ttl=dt.timedelta(seconds=2), extra={"jti": "j1"})
    assert tokens.verify_agent(short).instance_id == "i-1"
    assert tokens.verify_agent(short).instance_id == "i-1"  # from memory
    clock.sleep(2.5)
    with pytest.raises(InvalidToken):
        tokens.verify_agent(short)
    tampered = short[:-2] + ("A" if short[-2] != "A" else "B") + short[-1]
    with pytest.raises(InvalidToken):
        tokens.verify_agent(tampered)  # a different text is verified afresh
