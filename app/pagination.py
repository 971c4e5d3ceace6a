"""Opaque list cursors: the last id seen, base64url-encoded."""

from __future__ import annotations

import base64
import binascii

from app.ids import looks_like_id
from app.problems import field_problem


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        value = ""
    if not looks_like_id(value):
        raise field_problem("cursor", "is not a cursor returned by this API")
    return value


async def page(collection, query: dict, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """Newest first; ``next_cursor`` is None on the last page."""
    if cursor:
        query = {**query, "_id": {"$lt": decode_cursor(cursor)}}
    docs = [d async for d in collection.find(query).sort("_id", -1).limit(limit + 1)]
    if len(docs) > limit:
        return docs[:limit], encode_cursor(docs[limit - 1]["_id"])
    return docs, None
