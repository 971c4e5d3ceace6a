"""Keys from an identity provider's JWKS document, for production tokens (RS256/ES256).

The URL must be https and its host on the configured allowlist: a token can
never make onebox fetch anything, since the URL comes from settings only and
a ``kid`` is only ever looked up in the cached set. The set is fetched at
start and refreshed in the background, each fetch with a timeout; tokens are
verified against the cache alone, so a slow identity provider never holds a
request.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from urllib.parse import urlsplit

import httpx
import jwt

log = logging.getLogger("onebox.auth")

ALLOWED_ALGORITHMS = {"RS256", "ES256"}
DEFAULT_ALG = {"RSA": "RS256", "EC": "ES256"}


def check_jwks_url(url: str, allowed_hosts: list[str]) -> None:
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise ValueError("ONEBOX_JWKS_URL must be an https URL")
    if (parts.hostname or "").lower() not in {h.lower() for h in allowed_hosts}:
        raise ValueError(f"ONEBOX_JWKS_URL host {parts.hostname!r} is not in ONEBOX_JWKS_ALLOWED_HOSTS")


class JwksCache:
    def __init__(self, url: str, allowed_hosts: list[str], *, timeout: float, max_age: float,
                 ca_bundle: str | None = None) -> None:
        check_jwks_url(url, allowed_hosts)
        self.url, self.timeout, self.max_age = url, timeout, max_age
        self.verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=ca_bundle) if ca_bundle else True
        self._keys: dict[str, tuple[str, object]] = {}
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Fetch the key set; keep the old one when the fetch fails."""
        try:
            response = httpx.get(self.url, timeout=self.timeout, verify=self.verify, follow_redirects=False)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("JWKS fetch failed: %s", type(exc).__name__)
            return False
        keys: dict[str, tuple[str, object]] = {}
        for jwk in document.get("keys", []) if isinstance(document, dict) else []:
            kid, alg = jwk.get("kid"), jwk.get("alg") or DEFAULT_ALG.get(jwk.get("kty"))
            if not isinstance(kid, str) or alg not in ALLOWED_ALGORITHMS or jwk.get("use", "sig") != "sig":
                continue
            try:
                keys[kid] = (alg, jwt.PyJWK(jwk, algorithm=alg).key)
            except jwt.PyJWTError:
                continue
        with self._lock:
            self._keys, self._fetched_at = keys, time.monotonic()
        return True

    def get(self, kid: str) -> tuple[str, object] | None:
        with self._lock:
            return self._keys.get(kid)

    @property
    def stale(self) -> bool:
        return time.monotonic() - self._fetched_at > self.max_age
