"""How agent samples are stored: one document per instance per ten minutes, and one "latest" per instance.

Every read a user makes is then a key lookup or a short index range, whatever the number of samples stored:

* a **bucket** ``{_id: "<instance>:<YYYYmmddTHHMM>", kind: "bucket", instance_id, start, s: {<ms>: sample}}``
  holds the samples of one instance from ``start`` for ``BUCKET_SECONDS``, each under its offset from
  ``start`` in milliseconds. A series is the instance's buckets in a time range, read in ``start`` order
  through the ``(instance_id, start)`` index;
* the **latest** ``{_id: "<instance>:latest", kind: "latest", instance_id, at, sample}`` is what an
  instance's ``health`` summary shows: a list page reads its instances' latest documents in one query by
  ``_id``.

Writes are single-document updates any MongoDB (and the embedded server) makes atomic. A sample is added
with ``{_id: bucket, "s.<ms>": {$exists: false}}`` as the filter and ``upsert``: a new bucket is created, an
existing one gains the field, and a sample that is already there makes the upsert collide with the bucket's
``_id`` (duplicate key, 11000), which is how a re-sent sample is told apart and counted, never stored twice
(the first one stored wins). The latest document is replaced the same way only by a newer sample
(``at < new``), so a late re-send never moves it back. Both kinds live in one collection so that one batch of
posts is one ``bulk_write`` (one commit on the embedded server).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, AsyncIterator

from pymongo import UpdateOne

from app.clock import as_utc

BUCKET_SECONDS = 600
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def bucket_start(at: dt.datetime) -> dt.datetime:
    seconds = int((as_utc(at) - _EPOCH).total_seconds())
    return _EPOCH + dt.timedelta(seconds=seconds - seconds % BUCKET_SECONDS)


def bucket_id(instance_id: str, start: dt.datetime) -> str:
    return f"{instance_id}:{start:%Y%m%dT%H%M}"


def latest_id(instance_id: str) -> str:
    return f"{instance_id}:latest"


def _offset_ms(at: dt.datetime, start: dt.datetime) -> int:
    return int(round((as_utc(at) - start).total_seconds() * 1000))


def sample_ops(instance_id: str, samples: list[dict[str, Any]]) -> list[tuple[UpdateOne, bool]]:
    """The writes that store ``samples`` (each with its ``at``): (operation, counts as a sample).

    One upsert per sample (a duplicate key error on it means the sample was already stored), then one
    upsert of the instance's latest document, whose duplicate key error only means a newer one is there.
    """
    ops: list[tuple[UpdateOne, bool]] = []
    newest: dict[str, Any] | None = None
    for sample in samples:
        at = as_utc(sample["at"])
        start = bucket_start(at)
        field = f"s.{_offset_ms(at, start)}"
        body = {k: v for k, v in sample.items() if k != "at"}
        ops.append((UpdateOne({"_id": bucket_id(instance_id, start), field: {"$exists": False}},
                              {"$set": {field: body},
                               "$setOnInsert": {"kind": "bucket", "instance_id": instance_id, "start": start}},
                              upsert=True), True))
        if newest is None or at > as_utc(newest["at"]):
            newest = sample
    if newest is not None:
        at = as_utc(newest["at"])
        body = {k: v for k, v in newest.items() if k != "at"}
        ops.append((UpdateOne({"_id": latest_id(instance_id), "at": {"$lt": at}},
                              {"$set": {"kind": "latest", "instance_id": instance_id, "at": at, "sample": body}},
                              upsert=True), False))
    return ops


async def latest(collection, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each instance's newest sample (with its ``at``), read in one query; instances without any are absent."""
    if not instance_ids:
        return {}
    found = collection.find({"_id": {"$in": [latest_id(i) for i in instance_ids]}},
                            {"instance_id": 1, "at": 1, "sample": 1})
    return {doc["instance_id"]: {**doc.get("sample", {}), "at": doc["at"]} async for doc in found}


async def series(collection, instance_id: str, since: dt.datetime, until: dt.datetime,
                 limit: int) -> list[dict[str, Any]]:
    """The instance's samples with ``since <= at <= until``, oldest first, at most ``limit``."""
    since, until = as_utc(since), as_utc(until)
    points: list[dict[str, Any]] = []
    async for bucket in _buckets(collection, instance_id, since, until):
        start = as_utc(bucket["start"])
        for offset in sorted(bucket.get("s", {}), key=int):
            at = start + dt.timedelta(milliseconds=int(offset))
            if since <= at <= until:
                points.append({**bucket["s"][offset], "at": at})
                if len(points) >= limit:
                    return points
    return points


async def _buckets(collection, instance_id: str, since: dt.datetime, until: dt.datetime) -> AsyncIterator[dict]:
    cursor = collection.find({"instance_id": instance_id, "start": {"$gte": bucket_start(since), "$lte": until}},
                             {"start": 1, "s": 1}).sort("start", 1).batch_size(8)
    try:
        async for bucket in cursor:
            yield bucket
    finally:
        await cursor.close()


async def purge(collection, cutoff: dt.datetime) -> int:
    """Drop buckets that ended before ``cutoff``, and latest samples older than it; how many documents went."""
    buckets = await collection.delete_many({"start": {"$lt": bucket_start(cutoff)}})
    latests = await collection.delete_many({"kind": "latest", "at": {"$lt": cutoff}})
    return buckets.deleted_count + latests.deleted_count


async def stored_samples(collection, instance_ids: list[str] | None = None) -> list[tuple[str, dt.datetime]]:
    """Every stored (instance, at): for tests and drills that check nothing was lost or doubled."""
    query: dict[str, Any] = {"kind": "bucket"}
    if instance_ids is not None:
        query["instance_id"] = {"$in": instance_ids}
    out = []
    async for bucket in collection.find(query, {"instance_id": 1, "start": 1, "s": 1}):
        start = as_utc(bucket["start"])
        out.extend((bucket["instance_id"], start + dt.timedelta(milliseconds=int(k))) for k in bucket.get("s", {}))
    return out
