"""Tokens from an identity provider, verified with keys from its JWKS document over https."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import ssl
import threading
import time

import jwt
import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from app.auth.jwks import JwksCache
from app.auth.tokens import InvalidToken, TokenService
from app.settings import Settings


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    """A small https server publishing a JWKS with one RSA and one EC key (and, on demand, slowly)."""
    rsa_key = rsa.generate_private_key(65537, 2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "idp-rsa", "alg": "RS256",
         "use": "sig"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "idp-ec", "alg": "ES256"},
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "idp-enc", "use": "enc"},
    ]}
    state = {"delay": 0.0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            time.sleep(state["delay"])
            body = json.dumps(jwks).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path = tmp_path_factory.mktemp("idp") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"url": f"https://127.0.0.1:{server.server_address[1]}/jwks.json", "ca": str(ca_path), "rsa": rsa_key,
           "ec": ec_key, "state": state}
    server.shutdown()


def idp_token(key, kid: str, alg: str, **claims) -> str:
    now = int(dt.datetime.now(dt.timezone.utc).timestamp())
    payload = {"sub": "dana", "iat": now, "exp": now + 600, "iss": "onebox", "aud": "onebox", "typ": "user", **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def service(idp, tmp_path, **overrides) -> TokenService:
    values = dict(jwt_secret="s" * 40, data_dir=tmp_path, jwks_url=idp["url"], jwks_allowed_hosts=["127.0.0.1"],
                  jwks_ca_bundle=idp["ca"], jwks_timeout_seconds=2.0)
    values.update(overrides)
    tokens = TokenService(Settings(**values))
    assert tokens.jwks.refresh()
    return tokens


def test_idp_tokens_verify_with_the_published_keys(idp, tmp_path):
    tokens = service(idp, tmp_path)
    assert tokens.verify_user(idp_token(idp["rsa"], "idp-rsa", "RS256")).subject == "dana"
    assert tokens.verify_user(idp_token(idp["ec"], "idp-ec", "ES256")).subject == "dana"
    assert tokens.verify_user(tokens.mint("local")).subject == "local"  # the configured key still works


@pytest.mark.parametrize("kid,alg,key_name", [
    ("idp-unknown", "RS256", "rsa"),  # not in the set
    ("idp-enc", "RS256", "rsa"),  # an encryption key is not a signing key
    ("idp-rsa", "ES256", "ec"),  # the key's algorithm is pinned
])
def test_idp_tokens_refused(idp, tmp_path, kid, alg, key_name):
    tokens = service(idp, tmp_path)
    with pytest.raises(InvalidToken):
        tokens.verify_user(idp_token(idp[key_name], kid, alg))


@pytest.mark.parametrize("url,hosts,message", [
    ("http://127.0.0.1/jwks.json", ["127.0.0.1"], "https"),
    ("https://evil.example/jwks.json", ["127.0.0.1"], "not in"),
])
def test_jwks_url_must_be_https_and_allowlisted(tmp_path, url, hosts, message):
    with pytest.raises(ValueError, match=message):
        TokenService(Settings(jwt_secret="s" * 40, data_dir=tmp_path, jwks_url=url, jwks_allowed_hosts=hosts))


def test_a_slow_idp_times_out_and_keeps_the_cache(idp, tmp_path):
    tokens = service(idp, tmp_path)
    idp["state"]["delay"] = 3.0
    try:
        started = time.monotonic()
        assert tokens.jwks.refresh() is False
        assert time.monotonic() - started < 3.0, "the fetch has a timeout"
        assert tokens.verify_user(idp_token(idp["rsa"], "idp-rsa", "RS256")).subject == "dana"
    finally:
        idp["state"]["delay"] = 0.0


def test_untrusted_certificate_is_refused(idp, tmp_path):
    cache = JwksCache(idp["url"], ["127.0.0.1"], timeout=2.0, max_age=60)  # the system CAs do not know the IdP's
    assert cache.refresh() is False and cache.get("idp-rsa") is None
