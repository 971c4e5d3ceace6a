"""Group commit of agent posts (app.metrics.writer): batched, acknowledged only once stored."""

from __future__ import annotations

import asyncio
import datetime as dt

from pymongo.errors import AutoReconnect, BulkWriteError

from app.clock import utcnow
from app.metrics.repository import stored_samples
from app.metrics.writer import BatchWriteFailed, MetricsWriter
from tests.api.test_agent_metrics import bearer, running_instance, sample


class SlowCollection:
    """The real collection, with each bulk_write held until released, and counted (operations per write)."""

    def __init__(self, real, fail: Exception | None = None) -> None:
        self.real = real
        self.fail = fail
        self.calls: list[int] = []
        self.release = asyncio.Event()

    async def bulk_write(self, ops, ordered=True):
        self.calls.append(len(ops))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return await self.real.bulk_write(ops, ordered=ordered)


async def post_concurrently(api, posts, collection):
    """Start every post, let them queue behind the first write, then let the writes go."""
    tasks = [asyncio.create_task(api.post("/v1/agent/metrics", json=body, headers=headers)) for body, headers in posts]
    for _ in range(200):
        await asyncio.sleep(0.01)
        if collection.calls and len(collection.writer._queue) + 1 >= len(posts):
            break
    collection.release.set()
    return await asyncio.gather(*tasks)


def install(services, collection: SlowCollection) -> None:
    services.metrics_writer = MetricsWriter(collection)
    collection.writer = services.metrics_writer


async def test_concurrent_posts_share_a_write_and_every_acknowledged_sample_is_stored(api, services):
    slow = SlowCollection(services.db.metrics)
    install(services, slow)
    agents = [await running_instance(services) for _ in range(5)]
    now = utcnow()
    posts = [({"instance_id": i, "samples": [sample(now - dt.timedelta(seconds=n))]}, bearer(t))
             for n in range(6) for i, t in agents]
    responses = await post_concurrently(api, posts, slow)
    assert [r.status_code for r in responses] == [202] * len(posts)
    assert all(r.json() == {"accepted": 1, "duplicates": 0} for r in responses)
    assert len(slow.calls) < len(posts), f"one write per post: {slow.calls}"
    assert sum(slow.calls) == 2 * len(posts), "a sample and its instance's latest per post"
    for instance_id, _ in agents:
        assert len(await stored_samples(services.db.metrics, [instance_id])) == 6


async def test_duplicates_within_one_batch_and_across_batches_are_counted_not_stored(api, services):
    slow = SlowCollection(services.db.metrics)
    install(services, slow)
    instance_id, token = await running_instance(services)
    now = utcnow()
    same = {"instance_id": instance_id, "samples": [sample(now), sample(now - dt.timedelta(seconds=30))]}
    other = {"instance_id": instance_id, "samples": [sample(now - dt.timedelta(seconds=60))]}
    responses = await post_concurrently(api, [(same, bearer(token)), (other, bearer(token)), (same, bearer(token)),
                                              (same, bearer(token))], slow)
    assert [r.status_code for r in responses] == [202] * 4
    results = [r.json() for r in responses]
    assert results[1] == {"accepted": 1, "duplicates": 0}
    same_results = [results[0], results[2], results[3]]
    assert sum(r["accepted"] for r in same_results) == 2 and sum(r["duplicates"] for r in same_results) == 4
    assert len(await stored_samples(services.db.metrics, [instance_id])) == 3
    again = await api.post("/v1/agent/metrics", json=same, headers=bearer(token))
    assert again.json() == {"accepted": 0, "duplicates": 2}


async def test_a_failed_batch_fails_every_post_in_it(api, services):
    slow = SlowCollection(services.db.metrics, fail=AutoReconnect("connection reset"))
    install(services, slow)
    agents = [await running_instance(services) for _ in range(4)]
    now = utcnow()
    posts = [({"instance_id": i, "samples": [sample(now - dt.timedelta(seconds=n))]}, bearer(t))
             for n in range(3) for i, t in agents]
    responses = await post_concurrently(api, posts, slow)
    assert [r.status_code for r in responses] == [503] * len(posts)
    assert responses[0].json()["code"] == "database_unavailable"
    assert len(slow.calls) < len(posts)
    for instance_id, _ in agents:
        assert await stored_samples(services.db.metrics, [instance_id]) == []
    # the writer carries on once the database is back
    services.metrics_writer = MetricsWriter(services.db.metrics)
    body, headers = posts[0]
    assert (await api.post("/v1/agent/metrics", json=body, headers=headers)).status_code == 202


async def test_a_document_error_fails_only_the_post_that_sent_it():
    class Collection:
        async def bulk_write(self, ops, ordered=True):
            assert ordered is False
            raise BulkWriteError({"writeErrors": [{"index": 1, "code": 11000, "errmsg": "dup"},
                                                  {"index": 2, "code": 11000, "errmsg": "dup latest"},
                                                  {"index": 4, "code": 2, "errmsg": "bad value"}]})

    writer = MetricsWriter(Collection())
    # (operation, counts as a sample): a duplicate of a sample counts, a duplicate of a "latest" upsert does not
    first = asyncio.create_task(writer.write([("s0", True), ("s1", True), ("latest", False)]))
    second = asyncio.create_task(writer.write([("s2", True), ("s3", True)]))
    third = asyncio.create_task(writer.write([("s4", True)]))
    results = await asyncio.gather(first, second, third, return_exceptions=True)
    assert results[0] == 1, "one duplicate in the first post"
    assert isinstance(results[1], BatchWriteFailed)
    assert results[2] == 0


async def test_posts_waiting_on_a_stopped_writer_are_answered():
    class Hanging:
        async def bulk_write(self, ops, ordered=True):
            await asyncio.Event().wait()

    writer = MetricsWriter(Hanging())
    first = asyncio.create_task(writer.write([("s0", True)]))
    await asyncio.sleep(0.01)  # the first batch is being written
    second = asyncio.create_task(writer.write([("s1", True)]))
    await asyncio.sleep(0.01)
    writer._flusher.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, BatchWriteFailed) for r in results), results
