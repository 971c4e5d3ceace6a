"""Database call latency, from pymongo's command monitoring (every client onebox opens has it).

Command names label the histogram, so only the commands onebox sends are kept as they are;
anything else (a future driver's internals) is counted as ``other`` to keep the label bounded.
"""

from __future__ import annotations

from pymongo import monitoring

from app.observability.metrics import DB_COMMANDS

KNOWN_COMMANDS = frozenset({
    "find", "insert", "update", "delete", "findAndModify", "aggregate", "count", "distinct", "getMore",
    "killCursors", "createIndexes", "listIndexes", "ping", "hello", "isMaster", "endSessions", "drop",
    "dropDatabase", "listCollections", "create",
})


def _name(command_name: str) -> str:
    return command_name if command_name in KNOWN_COMMANDS else "other"


class CommandLatency(monitoring.CommandListener):
    """Observes ``onebox_db_command_duration_seconds`` for every command that succeeded or failed."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        return None

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        DB_COMMANDS.labels(_name(event.command_name), "ok").observe(event.duration_micros / 1e6)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        DB_COMMANDS.labels(_name(event.command_name), "error").observe(event.duration_micros / 1e6)
