"""List cursors: the last id of the previous page (ids sort by creation time).

A cursor is just that id, so a well-formed cursor is always a valid one; its
format is published in the OpenAPI document (``CURSOR_PATTERN``).
"""

from __future__ import annotations

from app.ids import ID_PATTERN

CURSOR_PATTERN = ID_PATTERN.pattern


async def page(collection, query: dict, limit: int, cursor: str | None) -> tuple[list[dict], str | None]:
    """Newest first; ``next_cursor`` is None on the last page."""
    if cursor:
        query = {**query, "_id": {"$lt": cursor}}
    docs = [d async for d in collection.find(query).sort("_id", -1).limit(limit + 1)]
    if len(docs) > limit:
        return docs[:limit], docs[limit - 1]["_id"]
    return docs, None
