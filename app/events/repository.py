"""An instance's events: what happened to it, oldest first.

Events are for people watching an instance come up. They never hold secrets:
messages come from our own code and providers' user-facing messages.
"""

from __future__ import annotations

import logging
from typing import Any

from app.db import is_duplicate_key, retry_while_down

from pymongo.asynchronous.collection import AsyncCollection

from app.clock import utcnow

log = logging.getLogger("onebox.events")
MAX_MESSAGE_CHARS = 8192


class EventLog:
    def __init__(self, collection: AsyncCollection) -> None:
        self.collection = collection

    async def add(self, instance_id: str, type_: str, message: str, *, step: str | None = None,
                  wait_until: float | None = None, actor: str | None = None,
                  data: dict[str, Any] | None = None) -> None:
        """Record one event. With ``wait_until`` (a monotonic deadline: a job's lease), a database
        outage is waited out instead of raised; the event keeps its ``_id`` across tries, so one
        that was written before the answer got lost is not written twice."""
        doc = {"instance_id": instance_id, "at": utcnow(), "type": type_, "step": step,
               "message": message[-MAX_MESSAGE_CHARS:]}
        if actor is not None:  # onebox acting by itself (a budget, the reaper): named in the event
            doc["actor"] = actor
        if data is not None:  # machine-readable details of some events (failover.attempt: zone, code, ...)
            doc["data"] = data
        if wait_until is None:
            await self.collection.insert_one(doc)
        else:
            async def once():
                try:
                    await self.collection.insert_one(doc)
                except Exception as exc:
                    if not is_duplicate_key(exc):
                        raise
            await retry_while_down(once, deadline=wait_until, what=f"an event of {instance_id}")
        log.info("%s %s%s: %s", instance_id, type_, f" [{step}]" if step else "", message[:300],
                 extra={"instance_id": instance_id, "step": step})

    async def list(self, instance_id: str, limit: int = 1000) -> list[dict[str, Any]]:
        cursor = self.collection.find({"instance_id": instance_id}).sort([("at", 1), ("_id", 1)]).limit(limit)
        return [doc async for doc in cursor]
