"""Group commit of agent posts (app.metrics.writer): batched, acknowledged only once stored."""

from __future__ import annotations

import asyncio
import datetime as dt

from pymongo.errors import AutoReconnect, BulkWriteError

from app.clock import utcnow
from app.metrics.writer import BatchWriteFailed, MetricsWriter
from tests.api.test_agent_metrics import bearer, running_instance, sample


class SlowCollection:
    """The real collection, with each insert_many held until released, and counted."""

    def __init__(self, real, fail: Exception | None = None) -> None:
        self.real = real
        self.fail = fail
        self.calls: list[int] = []
        self.release = asyncio.Event()

    async def insert_many(self, docs, ordered=True):
        self.calls.append(len(docs))
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return await self.real.insert_many(docs, ordered=ordered)


async def post_concurrently(api, posts, collection):
    """Start every post, let them queue behind the first write, then let the writes go."""
    tasks = [asyncio.create_task(api.post("/v1/agent/metrics", json=body, headers=headers)) for body, headers in posts]
    for _ in range(200):
        await asyncio.sleep(0.01)
        if collection.calls and len(collection.writer._queue) + collection.calls[0] >= len(posts):
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
    assert sum(slow.calls) == len(posts)
    for instance_id, _ in agents:
        assert await services.db.metrics.count_documents({"instance_id": instance_id}) == 6


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
    assert await services.db.metrics.count_documents({"instance_id": instance_id}) == 3
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
        assert await services.db.metrics.count_documents({"instance_id": instance_id}) == 0
    # the writer carries on once the database is back
    services.metrics_writer = MetricsWriter(services.db.metrics)
    body, headers = posts[0]
    assert (await api.post("/v1/agent/metrics", json=body, headers=headers)).status_code == 202


async def test_a_document_error_fails_only_the_post_that_sent_it():
    class Collection:
        async def insert_many(self, docs, ordered=True):
            assert ordered is False
            raise BulkWriteError({"writeErrors": [{"index": 1, "code": 11000, "errmsg": "dup"},
                                                  {"index": 3, "code": 2, "errmsg": "bad value"}]})

    writer = MetricsWriter(Collection())
    first = asyncio.create_task(writer.write([{"n": 0}, {"n": 1}]))
    second = asyncio.create_task(writer.write([{"n": 2}, {"n": 3}]))
    third = asyncio.create_task(writer.write([{"n": 4}]))
    results = await asyncio.gather(first, second, third, return_exceptions=True)
    assert results[0] == 1, "one duplicate in the first post"
    assert isinstance(results[1], BatchWriteFailed)
    assert results[2] == 0


async def test_posts_waiting_on_a_stopped_writer_are_answered():
    class Hanging:
        async def insert_many(self, docs, ordered=True):
            await asyncio.Event().wait()

    writer = MetricsWriter(Hanging())
    first = asyncio.create_task(writer.write([{"n": 0}]))
    await asyncio.sleep(0.01)  # the first batch is being written
    second = asyncio.create_task(writer.write([{"n": 1}]))
    await asyncio.sleep(0.01)
    writer._flusher.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert all(isinstance(r, BatchWriteFailed) for r in results), results
