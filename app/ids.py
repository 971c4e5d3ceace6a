"""Resource ids: time-ordered, lowercase, valid as a name in every cloud.

``i-`` + 26 characters (48-bit millisecond time, 80 random bits, Crockford
base32 in lowercase). Sorting ids sorts by creation time, which list cursors
rely on; lowercase letters and digits keep GCE and Azure name rules happy.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
ID_PATTERN = re.compile(r"^[iqs]-[0-9a-hjkmnp-tv-z]{26}$")  # instances, QA runs, snapshots


def _encode(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def new_id(prefix: str, at: float | None = None) -> str:
    """A fresh id made now (or at ``at``, a Unix time: tests and imports)."""
    stamp = int((time.time() if at is None else at) * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}-{_encode((stamp << 80) | rand, 26)}"


def id_created_at(value: str) -> dt.datetime | None:
    """When an id was made (millisecond precision), or None for something that is not our id."""
    if not ID_PATTERN.match(value):
        return None
    number = 0
    for char in value[2:]:
        number = number * 32 + _ALPHABET.index(char)
    return dt.datetime.fromtimestamp((number >> 80) / 1000, dt.timezone.utc)


def new_instance_id() -> str:
    return new_id("i")


def new_snapshot_id() -> str:
    return new_id("s")


def new_qa_run_id() -> str:
    return new_id("q")


def looks_like_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
