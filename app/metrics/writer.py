"""Group commit for agent samples: concurrent posts share one ``bulk_write``.

The embedded database commits each write command before answering it, so one
write per post caps ingestion at the database's commit rate. Instead every post
hands its operations (``app.metrics.repository.sample_ops``) to this process's
``MetricsWriter`` and waits: while one batch is being written, the posts that
arrive meanwhile gather, and are written together as the next batch as soon as
it returns. Nothing waits on a timer, so a lone post costs what it did before;
under load a batch is as large as what arrived during the previous write.

A post is answered only after its batch's write returned, so an acknowledged
sample is stored. Writes are unordered: a sample already stored fails alone
with a duplicate key and is counted as a duplicate for the post that sent it
(an operation that does not count as a sample, the "latest" upsert, may fail
that way harmlessly); any other error on an operation fails that post; an error
of the whole batch (database down, timeout) fails every post in it, and each
gets 503 and retries.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from dataclasses import dataclass, field

from pymongo.errors import BulkWriteError, PyMongoError

from app.db import DUPLICATE_KEY

log = logging.getLogger("onebox.metrics")


class BatchWriteFailed(Exception):
    """The batch holding this post's samples was not (fully) written."""


@dataclass
class _Pending:
    ops: list[tuple[object, bool]]  # (a pymongo write operation, does it count as a sample?)
    done: asyncio.Future
    duplicates: int = 0
    failed: bool = False
    offset: int = field(default=0)  # where this post's operations start in the batch


class MetricsWriter:
    def __init__(self, collection, max_batch_ops: int = 2000, max_wait_seconds: float | None = None) -> None:
        self.collection = collection
        self.max_batch_ops = max_batch_ops
        # A post waits at most this long (the request's database budget): behind a batch that hangs on
        # an unreachable database it answers 503 in time. Its samples may still be written later; the
        # agent's retry is then counted as a duplicate, never stored twice.
        self.max_wait_seconds = max_wait_seconds
        self._queue: deque[_Pending] = deque()
        self._flusher: asyncio.Task | None = None

    async def write(self, ops: list[tuple[object, bool]], max_wait: float | None = None) -> int:
        """Apply ``ops`` with whatever else is waiting; return how many samples were duplicates. The post
        waits at most ``max_wait`` (what is left of its request's budget), else ``max_wait_seconds``."""
        pending = _Pending(ops, asyncio.get_running_loop().create_future())
        pending.done.add_done_callback(_consume)  # a post that gave up leaves no unretrieved error behind
        self._queue.append(pending)
        if self._flusher is None or self._flusher.done():
            # A context of its own: the flusher outlives the request that started it, and must not
            # inherit that request's database deadline (app.api.deps.DeadlineRoute).
            self._flusher = asyncio.create_task(self._flush(), context=contextvars.Context())
        # shield: a post whose client went away (or gave up waiting) must not cancel the batch it is in
        try:
            return await asyncio.wait_for(asyncio.shield(pending.done),
                                          self.max_wait_seconds if max_wait is None else max_wait)
        except asyncio.TimeoutError:
            raise BatchWriteFailed("the database did not answer in time") from None

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, size = [], 0
                while self._queue and (not batch or size + len(self._queue[0].ops) <= self.max_batch_ops):
                    pending = self._queue.popleft()
                    pending.offset = size
                    size += len(pending.ops)
                    batch.append(pending)
                await self._write(batch)
        finally:  # stopped (cancelled, or a bug): whoever still waits gets an answer
            if self._queue:
                self._fail(list(self._queue), RuntimeError("the metrics writer stopped"))
                self._queue.clear()

    async def _write(self, batch: list[_Pending]) -> None:
        ops = [op for p in batch for op, _ in p.ops]
        try:
            await self.collection.bulk_write(ops, ordered=False)
        except BulkWriteError as exc:
            if exc.details.get("writeConcernErrors"):
                self._fail(batch, exc)
                return
            starts = [p.offset for p in batch]
            for error in exc.details.get("writeErrors", []):
                owner = batch[_owner(starts, error["index"])]
                counts = owner.ops[error["index"] - owner.offset][1]
                if error.get("code") == DUPLICATE_KEY:
                    owner.duplicates += 1 if counts else 0
                else:
                    owner.failed = True
        except (PyMongoError, OSError) as exc:
            self._fail(batch, exc)
            return
        except BaseException as exc:  # cancelled or a bug: no post may wait forever
            self._fail(batch, exc)
            raise
        for pending in batch:
            if pending.done.done():
                continue
            if pending.failed:
                pending.done.set_exception(BatchWriteFailed("a sample could not be stored"))
            else:
                pending.done.set_result(pending.duplicates)

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        log.warning("a batch of %d metric posts failed: %s", len(batch), type(exc).__name__)
        for pending in batch:
            if not pending.done.done():
                pending.done.set_exception(BatchWriteFailed(type(exc).__name__))


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _owner(starts: list[int], index: int) -> int:
    """The position in the batch of the post whose documents include ``index``."""
    low, high = 0, len(starts) - 1
    while low < high:
        mid = (low + high + 1) // 2
        if starts[mid] <= index:
            low = mid
        else:
            high = mid - 1
    return low
