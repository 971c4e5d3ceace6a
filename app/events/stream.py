"""An instance's (or a QA run's) events and status changes as Server-Sent Events, read by polling the database.

Events are written by whichever process runs the instance's job (an
in-process worker or a separate ``onebox worker``), so nothing in this
process is notified of them: each open stream polls the database every
``events_stream_poll_seconds`` (one read of the instance's status, one of its
new events) and holds no cursor or thread in between.

The contract, for frontends (also in the README):

* ``event: status`` — ``data`` is ``{status, error, public_ip, ssh_port,
  updated_at}``; sent first on every (re)connection, then whenever one of
  those fields changes (before the events read in the same poll). It is
  state, not history: changes quicker than one poll are coalesced, and a
  resumed stream sends the current one again. Every transition is also an
  event of type ``status`` (``"running → deleting"``), so none is lost.
* ``event: instance`` — ``data`` is one event ``{at, type, step, message}``,
  oldest first, each exactly once per stream.
* ``event: end`` — ``data`` is ``{status}``: the instance reached its final
  state and the server closes the stream. Final means ``deleted``, or
  ``failed`` with no job left and no delete waiting to be carried out (a
  failed instance can still be deleted later; a new stream would show that).
  Every event written up to the final transition (its own ``status`` event
  included) is sent before ``end``. ``running`` and ``stopped`` are steady but
  not final: a stop, start, reboot or a policy may move the instance on at any
  time, so the stream stays open (until ``events_stream_max_seconds``).
* ``event: reconnect`` — the stream reached ``events_stream_max_seconds``
  (a token is checked once per connection, so streams do not outlive it by
  long); reconnect with ``Last-Event-ID``.
* every message has an ``id:``: the position after the last event sent
  (``<milliseconds>-<event id>``, or ``0`` before the first). Reconnecting
  with ``Last-Event-ID`` resumes after that event: no duplicates, no gaps.
* a comment line (``: keep-alive``) every ``events_stream_keepalive_seconds``
  of silence keeps proxies from closing an idle stream.

Ordering: events are sent in (``at``, id) order as they become visible. An
event another process stored with a timestamp up to ``LOOKBACK`` older than
the newest one sent is still sent within the same stream (late, not lost).

A QA run's stream (``GET /v1/qa-runs/{id}/events/stream``) is the same
machinery over another ``Subject``: its status message carries ``{status,
error, updated_at}``, each event is an ``event: qa`` message, and it ends once
the run reached a final status (passed, failed, error, cancelled) with its job
done.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from app.clock import as_utc
from app.lifecycle.states import FINAL_INSTANCE_STATUSES
from app.services import Services

CURSOR_RE = re.compile(r"^(0|(\d{1,16})-([0-9a-f]{24}))$")
LOOKBACK = dt.timedelta(seconds=5)
BATCH = 500
FINAL_GRACE_SECONDS = 5.0  # how long to wait for the final transition's own event before ending anyway
STATUS_FIELDS = ("status", "error", "public_ip", "ssh_port")


@dataclass(frozen=True, order=True)
class Position:
    """Where a stream is: after the event with this (``at`` in ms, id); (0, "") is the beginning."""

    at_ms: int = 0
    oid: str = ""

    @classmethod
    def parse(cls, value: str | None) -> "Position":
        """``Last-Event-ID`` → a position; ``ValueError`` when it is not one we made."""
        if value is None or value == "":
            return cls()
        match = CURSOR_RE.match(value.strip())
        if match is None:
            raise ValueError("not a stream position this server made")
        if match.group(1) == "0":
            return cls()
        return cls(int(match.group(2)), match.group(3))

    def __str__(self) -> str:
        return "0" if not self.oid else f"{self.at_ms}-{self.oid}"


def _ms(value: dt.datetime) -> int:
    return int(as_utc(value).timestamp() * 1000)


def sse(event: str, data: Any, ident: str) -> bytes:
    return f"id: {ident}\nevent: {event}\ndata: {json.dumps(data, default=_json_default, separators=(',', ':'))}\n\n".encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return as_utc(value).isoformat().replace("+00:00", "Z")
    raise TypeError(type(value).__name__)


def is_final(doc: dict[str, Any], delete_pending: bool) -> bool:
    return doc["status"] in FINAL_INSTANCE_STATUSES or (
        doc["status"] == "failed" and doc.get("job") is None and not delete_pending)


@dataclass(frozen=True)
class Subject:
    """What a stream follows: where its status lives, what the status message carries, when it is over."""

    collection: str
    fields: tuple[str, ...]  # the ``status`` message's fields (``updated_at`` is always added)
    event_name: str  # the SSE event name of one of its events
    final: Callable[[dict[str, Any], bool], bool]
    deletable: bool  # a failed one may still be deleted: look for a pending delete request


INSTANCE = Subject("instances", STATUS_FIELDS, "instance", is_final, deletable=True)
QA_RUN = Subject("qa_runs", ("status", "error"), "qa",
                 lambda doc, _: doc["status"] in ("passed", "failed", "error", "cancelled") and doc.get("job") is None,
                 deletable=False)


class EventStream:
    """One client's stream; ``run`` yields the bytes to send."""

    def __init__(self, services: Services, instance_id: str, start: Position,
                 is_disconnected: Callable[[], Awaitable[bool]], subject: Subject = INSTANCE) -> None:
        self.services = services
        self.db = services.db
        self.subject = subject
        self.instance_id = instance_id  # the events' key: an instance id, or a QA run id
        self.start = start
        self.position = start
        self.sent: dict[str, int] = {}  # event ids sent within LOOKBACK of the position → their at (ms)
        self.is_disconnected = is_disconnected

    async def _status(self) -> tuple[dict[str, Any] | None, bool]:
        doc = await self.db.db[self.subject.collection].find_one(
            {"_id": self.instance_id}, {**{f: 1 for f in self.subject.fields}, "updated_at": 1, "job": 1})
        if doc is None:
            return None, False
        pending = False
        if self.subject.deletable and doc["status"] == "failed" and doc.get("job") is None:
            request = await self.db.delete_requests.find_one({"_id": self.instance_id}, {"job": 1})
            pending = request is not None and request.get("job") is not None
        return doc, pending

    async def _new_events(self) -> list[dict[str, Any]]:
        query: dict[str, Any] = {"instance_id": self.instance_id}
        if self.position.oid:
            since = dt.datetime.fromtimestamp(self.position.at_ms / 1000, dt.timezone.utc) - LOOKBACK
            query["at"] = {"$gte": since}
        out: list[dict[str, Any]] = []
        skip = 0
        while True:
            cursor = self.db.events.find(query).sort([("at", 1), ("_id", 1)]).skip(skip).limit(BATCH)
            batch = [d async for d in cursor]
            for doc in batch:
                oid = str(doc["_id"])
                key = Position(_ms(doc["at"]), oid)
                if oid in self.sent or (self.start.oid and key <= self.start):
                    continue
                out.append(doc)
            if len(batch) < BATCH:
                return out
            skip += BATCH

    def _remember(self, doc: dict[str, Any]) -> None:
        key = Position(_ms(doc["at"]), str(doc["_id"]))
        self.sent[key.oid] = key.at_ms
        if key > self.position:
            self.position = key
        horizon = self.position.at_ms - int(LOOKBACK.total_seconds() * 1000)
        if len(self.sent) > 2 * BATCH:
            self.sent = {k: v for k, v in self.sent.items() if v >= horizon}

    async def run(self, poll: float, keepalive: float, max_seconds: float) -> AsyncIterator[bytes]:
        last_status: tuple | None = None
        final_since: float | None = None
        started = last_sent = time.monotonic()
        yield b"retry: 2000\n\n"
        while True:
            doc, delete_pending = await self._status()  # status first: events written before it are then visible
            if doc is None:
                yield sse("end", {"status": None}, str(self.position))
                return
            fields = self.subject.fields
            status = tuple(doc.get(f) for f in fields)
            if status != last_status:
                last_status = status
                payload = {f: doc.get(f) for f in fields} | {"updated_at": doc.get("updated_at")}
                yield sse("status", payload, str(self.position))
                last_sent = time.monotonic()
            for event in await self._new_events():
                self._remember(event)
                payload = {"at": event["at"], "type": event["type"], "step": event.get("step"),
                           "message": event["message"]}
                yield sse(self.subject.event_name, payload, str(self.position))
                last_sent = time.monotonic()
            if self.subject.final(doc, delete_pending):
                # The final transition writes its own "status" event just after the status: wait for it.
                final_since = final_since or time.monotonic()
                updated_ms = _ms(doc["updated_at"]) if doc.get("updated_at") else 0
                if self.position.at_ms >= updated_ms or time.monotonic() - final_since > FINAL_GRACE_SECONDS:
                    yield sse("end", {"status": doc["status"]}, str(self.position))
                    return
            else:
                final_since = None
            now = time.monotonic()
            if now - started >= max_seconds:
                yield sse("reconnect", {"after_seconds": max_seconds}, str(self.position))
                return
            if now - last_sent >= keepalive:
                yield b": keep-alive\n\n"
                last_sent = now
            if await self.is_disconnected():
                return
            await asyncio.sleep(poll)
