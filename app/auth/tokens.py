"""Signed tokens: minting and verifying the JWTs users (and, later, agents) present.

Algorithms are pinned by configuration, never taken from the token header.
Every token must carry ``exp``, ``iat``, ``sub``, ``iss``, ``aud`` and a
``typ`` claim, so a token minted for one purpose never passes for another.
"""

from __future__ import annotations

import dataclasses
import hashlib
import datetime as dt
import uuid
from typing import Any

import jwt

from app.clock import utcnow
from app.settings import Settings

USER_TOKEN_TYPE = "user"
AGENT_TOKEN_TYPE = "agent"
ROLE_ADMIN = "admin"
ROLE_USER = "user"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "iss", "aud"]


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


class TokenService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithm = settings.jwt_algorithm
        if self.algorithm == "HS256":
            secret = settings.hs256_secret()
            self._verify_key: Any = secret
            self._sign_key: Any = secret
        else:
            if not settings.jwt_public_key:
                raise ValueError(f"ONEBOX_JWT_PUBLIC_KEY is required for {self.algorithm}")
            self._verify_key = settings.jwt_public_key
            self._sign_key = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key else None

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
        return jwt.encode(claims, self._sign_key, algorithm=self.algorithm)

    def decode(self, token: str, *, typ: str = USER_TOKEN_TYPE, audience: str | None = None) -> dict[str, Any]:
        try:
            claims = jwt.decode(
                token,
                self._verify_key,
                algorithms=[self.algorithm],
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
        claims = self.decode(token, typ=AGENT_TOKEN_TYPE, audience=self.agent_audience)
        if not isinstance(claims.get("jti"), str):
            raise InvalidToken("agent token without jti")
        return AgentPrincipal(instance_id=claims["sub"], jti_hash=hash_jti(claims["jti"]))

    def verify_user(self, token: str) -> Principal:
        claims = self.decode(token)
        role = ROLE_ADMIN if claims.get("role") == ROLE_ADMIN else ROLE_USER
        return Principal(subject=claims["sub"], role=role)
