"""The one clock: timezone-aware UTC, at millisecond precision (what BSON keeps)."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def as_utc(value: dt.datetime) -> dt.datetime:
    """BSON datetimes come back naive unless the client is tz-aware; make sure."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
