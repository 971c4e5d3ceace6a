"""Everything a request handler or a worker needs, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    agent_revocations: object = field(default=None)  # this process's copy of the withdrawn agent tokens
    agent_pauses: object = field(default=None)  # … and of the tokens of stopped instances (app.metrics.pauses)
    metrics_writer: object = field(default=None)  # group commit of agent samples, one per process

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

    def __post_init__(self) -> None:
        from app.metrics.revocations import RevocationSet

        if self.agent_revocations is None:
            self.agent_revocations = RevocationSet(self.settings.agent_revocation_refresh_seconds)
        if self.agent_pauses is None:
            from app.metrics.pauses import PauseSet

            self.agent_pauses = PauseSet(self.settings.agent_revocation_refresh_seconds)
        if self.metrics_writer is None:
            from app.metrics.writer import MetricsWriter

            self.metrics_writer = MetricsWriter(self.db.metrics, max_wait_seconds=self.settings.db_timeout_seconds)

    async def close(self) -> None:
        await self.db.close()
