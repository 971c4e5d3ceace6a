"""Durations as people type them (``30m``, ``8h``, ``1h30m``, ``7d``), for ``--ttl`` and ``--idle``.

Pure and dependency-free: the server's ``onebox token --ttl`` parses with it too, so importing it
loads nothing of the client.
"""

from __future__ import annotations

import datetime as dt
import re

_PART = re.compile(r"(\d+)([smhd])")
_WHOLE = re.compile(r"(?:\d+[smhd])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
HINT = "use a number and s, m, h or d, e.g. 1h or 30m"


def parse_duration(text: str) -> dt.timedelta:
    """``8h`` → 8 hours; ``1h30m`` → 90 minutes. ``ValueError`` (with a hint) for anything else, or zero."""
    value = text.strip().lower()
    if not _WHOLE.fullmatch(value):
        raise ValueError(HINT)
    seconds = sum(int(n) * _UNIT_SECONDS[unit] for n, unit in _PART.findall(value))
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    return dt.timedelta(seconds=seconds)


def whole_minutes(text: str) -> int:
    """``30m`` → 30, ``2h`` → 120; a duration that is not a whole number of minutes is refused."""
    seconds = int(parse_duration(text).total_seconds())
    if seconds % 60:
        raise ValueError("must be a whole number of minutes, e.g. 30m or 2h")
    return seconds // 60


def describe(seconds: float) -> str:
    """A short human duration: ``45s``, ``12m``, ``3h 5m``, ``2d 4h``."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"
