"""Everything a request handler or a worker needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass

from app.auth.tokens import TokenService
from app.cloud import ProviderRegistry
from app.db import Database, connect
from app.events.repository import EventLog
from app.settings import Settings
from providers.base import Provider


@dataclass
class Services:
    settings: Settings
    db: Database
    tokens: TokenService
    providers: ProviderRegistry
    events: EventLog

    @classmethod
    def build(cls, settings: Settings, providers: dict[str, Provider] | None = None) -> "Services":
        db = Database(connect(settings), settings.database)
        return cls(
            settings=settings,
            db=db,
            tokens=TokenService(settings),
            providers=ProviderRegistry(settings, providers),
            events=EventLog(db.events),
        )

    async def close(self) -> None:
        await self.db.close()
