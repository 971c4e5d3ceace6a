"""Signed tokens: minting and verifying the JWTs users (and, later, agents) present.

Algorithms are pinned by configuration, never taken from the token header.
Every token must carry ``exp``, ``iat``, ``sub``, ``iss``, ``aud`` and a
``typ`` claim, so a token minted for one purpose never passes for another.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import time
import uuid
from typing import Any

import jwt

from app.clock import utcnow
from app.settings import MIN_HS256_SECRET_BYTES, Settings

USER_TOKEN_TYPE = "user"
AGENT_TOKEN_TYPE = "agent"
ROLE_ADMIN = "admin"
ROLE_USER = "user"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]
AGENT_VERIFIED_SECONDS = 300.0  # how long a verified agent token is remembered (at most until its exp)
MAX_VERIFIED_AGENTS = 200_000


class InvalidToken(Exception):
    """The token is missing, malformed, expired, wrongly signed or of the wrong kind."""


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and role."""

    subject: str
    role: str = ROLE_USER

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN


@dataclasses.dataclass(frozen=True)
class AgentPrincipal:
    """An instance's agent: its instance id and the hash of its token's jti."""

    instance_id: str
    jti_hash: str


def hash_jti(jti: str) -> str:
    return hashlib.sha256(jti.encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class VerifyKey:
    """One key of the ring: its id, the one algorithm it may be used with, the key itself."""

    kid: str
    algorithm: str
    key: Any


DEFAULT_KID = "default"


def _checked_secret(kid: str, secret: bytes) -> bytes:
    if len(secret) < MIN_HS256_SECRET_BYTES:
        raise ValueError(f"the HS256 secret of key '{kid}' is {len(secret)} bytes; at least"
                         f" {MIN_HS256_SECRET_BYTES} are required")
    return secret


class TokenService:
    """Mints and verifies tokens against a ring of keys selected by ``kid``.

    Each key is pinned to one algorithm. A token naming a ``kid`` outside the
    configured allowlist is refused; the ``kid`` is only ever a dictionary key
    here, never a path, URL or query. Several keys may be active at once, so a
    key can be rotated in before the old one is removed.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys: dict[str, VerifyKey] = {}
        self._sign_key: Any = None
        self._verified_agents: dict[str, tuple[float, AgentPrincipal]] = {}  # token → (until, principal)
        if settings.jwt_keys:
            for kid, spec in settings.jwt_keys.items():
                if spec.alg == "HS256":
                    if spec.secret is None:
                        raise ValueError(f"key '{kid}' (HS256) needs a secret")
                    material: Any = _checked_secret(kid, spec.secret.get_secret_value().encode())
                else:
                    if not spec.public_key:
                        raise ValueError(f"key '{kid}' ({spec.alg}) needs a public_key")
                    material = spec.public_key
                self.keys[kid] = VerifyKey(kid, spec.alg, material)
            self.signing_kid = settings.jwt_signing_kid or next(iter(settings.jwt_keys))
            if self.signing_kid not in self.keys:
                raise ValueError(f"ONEBOX_JWT_SIGNING_KID '{self.signing_kid}' is not one of ONEBOX_JWT_KEYS")
        else:
            self.signing_kid = DEFAULT_KID
            if settings.jwt_algorithm == "HS256":
                material = settings.hs256_secret()
            else:
                if not settings.jwt_public_key:
                    raise ValueError(f"ONEBOX_JWT_PUBLIC_KEY is required for {settings.jwt_algorithm}")
                material = settings.jwt_public_key
            self.keys[DEFAULT_KID] = VerifyKey(DEFAULT_KID, settings.jwt_algorithm, material)
        self.jwks = None
        if settings.jwks_url:
            from app.auth.jwks import JwksCache

            self.jwks = JwksCache(settings.jwks_url, settings.jwks_allowed_hosts, timeout=settings.jwks_timeout_seconds,
                                  max_age=settings.jwks_refresh_seconds, ca_bundle=settings.jwks_ca_bundle)
        signing = self.keys[self.signing_kid]
        self.algorithm = signing.algorithm
        if signing.algorithm == "HS256":
            self._sign_key = signing.key
        elif settings.jwt_private_key is not None:
            self._sign_key = settings.jwt_private_key.get_secret_value()

    def _key_for(self, token: str) -> VerifyKey:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        if "crit" in header:
            raise InvalidToken("critical header extensions are not supported")
        kid = header.get("kid")
        if kid is None:
            if self.settings.jwt_keys or len(self.keys) != 1:
                raise InvalidToken("a kid is required")
            return next(iter(self.keys.values()))
        if not isinstance(kid, str):
            raise InvalidToken("unknown kid")
        if kid in self.keys:
            return self.keys[kid]
        if self.jwks is not None:
            found = self.jwks.get(kid)
            if found is not None:
                return VerifyKey(kid, found[0], found[1])
        raise InvalidToken("unknown kid")

    def mint(self, subject: str, *, role: str = ROLE_USER, ttl: dt.timedelta = dt.timedelta(hours=1),
             typ: str = USER_TOKEN_TYPE, audience: str | None = None, extra: dict[str, Any] | None = None) -> str:
        if self._sign_key is None:
            raise ValueError("minting needs ONEBOX_JWT_PRIVATE_KEY with " + self.algorithm)
        now = utcnow()
        claims = {
            "sub": subject,
            "iat": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
            "iss": self.settings.jwt_issuer,
            "aud": audience or self.settings.jwt_audience,
            "typ": typ,
            "jti": uuid.uuid4().hex,
            "role": role,
        }
        claims.update(extra or {})
        return jwt.encode(claims, self._sign_key, algorithm=self.algorithm, headers={"kid": self.signing_kid})

    def decode(self, token: str, *, typ: str = USER_TOKEN_TYPE, audience: str | None = None) -> dict[str, Any]:
        key = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=audience or self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway_seconds,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        if claims.get("typ") != typ:
            raise InvalidToken("wrong token type")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken("empty subject")
        return claims

    @property
    def agent_audience(self) -> str:
        return f"{self.settings.jwt_audience}-agent"

    def mint_agent(self, instance_id: str) -> tuple[str, str]:
        """A token for one instance's agent, and the hash of its jti (what we store)."""
        jti = uuid.uuid4().hex
        token = self.mint(instance_id, typ=AGENT_TOKEN_TYPE, audience=self.agent_audience, role="agent",
                          ttl=dt.timedelta(days=self.settings.agent_token_ttl_days), extra={"jti": jti})
        return token, hash_jti(jti)

    def verify_agent(self, token: str) -> AgentPrincipal:
        """An agent's token, verified. Each agent presents the same token every 30 s, so a verified one is
        remembered (by its exact text, until its ``exp`` or for ``AGENT_VERIFIED_SECONDS``, whichever comes
        first): the signature check is most of a post's CPU otherwise. Withdrawal is not this cache's
        business: ``app.metrics.revocations`` checks every post."""
        now = time.time()
        cached = self._verified_agents.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        claims = self.decode(token, typ=AGENT_TOKEN_TYPE, audience=self.agent_audience)
        if not isinstance(claims.get("jti"), str):
            raise InvalidToken("agent token without jti")
        principal = AgentPrincipal(instance_id=claims["sub"], jti_hash=hash_jti(claims["jti"]))
        if len(self._verified_agents) >= MAX_VERIFIED_AGENTS:
            self._verified_agents.clear()
        self._verified_agents[token] = (min(float(claims["exp"]), now + AGENT_VERIFIED_SECONDS), principal)
        return principal

    def verify_user(self, token: str) -> Principal:
        claims = self.decode(token)
        role = ROLE_ADMIN if claims.get("role") == ROLE_ADMIN else ROLE_USER
        return Principal(subject=claims["sub"], role=role)
