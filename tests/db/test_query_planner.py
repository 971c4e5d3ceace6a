"""The embedded server's query planner (tools/mongo-server): indexes change how much is read, never an answer.

Every query runs twice on the same server: against a collection with onebox-shaped compound indexes, where
the launcher's planner walks them, and against a twin without any index but ``_id``, where the library scans
and filters everything. The answers must be the same documents in the same order, for equality prefixes,
ranges of every kind, sorts served forwards and backwards, limits and skips, nulls and missing fields,
mixed types, and after updates that move index keys and deletes that remove them.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest
from pymongo import ASCENDING, DESCENDING, MongoClient

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
INDEXES = [
    [("owner", ASCENDING), ("_id", DESCENDING)],
    [("job.not_before", ASCENDING)],
    [("status", ASCENDING), ("provider", ASCENDING)],
    [("instance_id", ASCENDING), ("at", ASCENDING)],
    [("n", DESCENDING)],
]


@pytest.fixture(scope="module")
def pair(dbserver):
    client = MongoClient(dbserver.url(), tz_aware=True)
    db = client[f"planner_{random.randrange(10**9)}"]
    indexed, plain = db["indexed"], db["plain"]
    for spec in INDEXES:
        indexed.create_index(spec)
    rng = random.Random(7)
    docs = [_document(rng, n) for n in range(600)]
    indexed.insert_many(docs)
    plain.insert_many(docs)
    yield indexed, plain, rng
    client.drop_database(db.name)
    client.close()


def _document(rng: random.Random, n: int) -> dict:
    doc = {"_id": f"i-{n:05d}", "n": rng.choice([n, float(n), str(n), None]) if n % 17 == 0 else n % 50,
           "owner": rng.choice(["alice", "bob", "carol", None]), "status": rng.choice(["running", "deleted", "failed"]),
           "provider": rng.choice(["aws", "gcp", "local"]), "instance_id": f"i-{n % 7}",
           "at": EPOCH + dt.timedelta(seconds=rng.randrange(0, 3600))}
    if n % 5:
        doc["job"] = {"not_before": EPOCH + dt.timedelta(seconds=rng.randrange(0, 600)),
                      "lease_until": rng.choice([None, EPOCH + dt.timedelta(seconds=rng.randrange(0, 600))])}
    else:
        doc["job"] = None
    if n % 11 == 0:
        del doc["owner"]  # missing, not null
    return doc


def _queries(rng: random.Random) -> list[tuple[dict, list | None, int, int]]:
    """(filter, sort, skip, limit): onebox's own shapes first, then random ones."""
    now = EPOCH + dt.timedelta(seconds=300)
    shapes = [
        ({"owner": "alice", "status": {"$ne": "deleted"}}, [("_id", -1)], 0, 51),
        ({"owner": "alice", "status": {"$ne": "deleted"}, "_id": {"$lt": "i-00300"}}, [("_id", -1)], 0, 51),
        ({"owner": None}, [("_id", -1)], 0, 20),
        ({"job.not_before": {"$lte": now}, "$or": [{"job.lease_until": None}, {"job.lease_until": {"$lt": now}}]},
         [("job.not_before", 1)], 0, 8),
        ({"status": "running", "provider": "aws", "job": None}, None, 0, 0),
        ({"instance_id": "i-3", "at": {"$gte": EPOCH + dt.timedelta(seconds=600)}}, [("at", 1), ("_id", 1)], 0, 10),
        ({"instance_id": "i-3", "at": {"$gte": EPOCH + dt.timedelta(seconds=600)}}, [("at", 1), ("_id", 1)], 10, 10),
        ({"instance_id": "i-2"}, [("at", -1)], 0, 1),
        ({"n": {"$gt": 10, "$lte": 20}}, [("n", 1)], 0, 0),
        ({"n": {"$gte": "1"}}, [("n", -1)], 0, 5),  # strings only: a range stays within its type
        ({"n": {"$lt": 3}}, None, 0, 0),
        ({"n": {"$gt": 30, "$lt": 10}}, None, 0, 0),  # empty
        ({}, [("n", -1)], 3, 7),
        ({"_id": {"$in": ["i-00001", "i-00002", "i-99999"]}, "status": {"$ne": "x"}}, [("_id", 1)], 0, 0),
        ({"_id": "i-00010", "owner": {"$exists": True}}, None, 0, 0),
    ]
    for _ in range(120):
        query: dict = {}
        if rng.random() < 0.6:
            query["owner"] = rng.choice(["alice", "bob", None, {"$eq": "carol"}, {"$ne": "bob"}])
        if rng.random() < 0.4:
            bound = f"i-{rng.randrange(600):05d}"
            query["_id"] = {rng.choice(["$lt", "$lte", "$gt", "$gte"]): bound}
        if rng.random() < 0.3:
            query["status"] = rng.choice(["running", {"$ne": "deleted"}, {"$in": ["failed", "deleted"]}])
        if rng.random() < 0.3:
            low = rng.randrange(50)
            query["n"] = rng.choice([{"$gte": low}, {"$lt": low}, {"$gt": low, "$lte": low + 10}, low])
        sort = rng.choice([None, [("_id", -1)], [("_id", 1)], [("n", 1)], [("n", -1)], [("owner", 1), ("_id", -1)]])
        shapes.append((query, sort, rng.choice([0, 0, 2]), rng.choice([0, 1, 5, 51])))
    return shapes


def _run(collection, query, sort, skip, limit) -> list[str]:
    cursor = collection.find(query, {"_id": 1})
    if sort:
        cursor = cursor.sort(sort)
    return [d["_id"] for d in cursor.skip(skip).limit(limit)]


def _comparable(value) -> str:
    """Equal under MongoDB's sort, equal here: 34 and 34.0 are one value."""
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


def _same(indexed, plain, query, sort, skip, limit) -> None:
    got, want = _run(indexed, query, sort, skip, limit), _run(plain, query, sort, skip, limit)
    if sort:
        # Ties under the sort may come in any order on any server: compare the sort keys' sequence and the sets.
        assert len(got) == len(want), (query, sort, skip, limit)
        if skip == 0 and (not limit or len(want) < limit):
            assert set(got) == set(want), (query, sort)
        keys = [k for k, _ in sort]
        project = {k: 1 for k in keys}

        def keyed(ids):
            docs = {d["_id"]: d for d in plain.find({"_id": {"$in": ids}}, project)}
            return [tuple(_comparable(docs[i].get(k)) for k in keys) for i in ids]
        assert keyed(got) == keyed(want), (query, sort, skip, limit)
    else:
        # Without a sort the order is the server's choice: which documents a skip or a limit leaves is too.
        assert len(got) == len(want), (query, skip, limit)
        if skip == 0 and (not limit or len(want) < limit):
            assert sorted(got) == sorted(want), (query, limit)
        else:
            assert set(got) <= set(_run(plain, query, None, 0, 0)), (query, skip, limit)


def test_answers_with_indexes_equal_answers_without(pair):
    indexed, plain, rng = pair
    for query, sort, skip, limit in _queries(rng):
        _same(indexed, plain, query, sort, skip, limit)


def test_answers_stay_equal_after_updates_and_deletes_move_the_keys(pair):
    indexed, plain, rng = pair
    for n in range(0, 600, 3):
        change = {"$set": {"owner": rng.choice(["alice", "bob", None]), "n": rng.randrange(60),
                           "job": None if n % 2 else {"not_before": EPOCH + dt.timedelta(seconds=rng.randrange(600))}}}
        for collection in (indexed, plain):
            collection.update_one({"_id": f"i-{n:05d}"}, change)
    for n in range(1, 600, 13):
        for collection in (indexed, plain):
            collection.delete_one({"_id": f"i-{n:05d}"})
    indexed.update_many({"status": "failed"}, {"$set": {"status": "deleted"}})
    plain.update_many({"status": "failed"}, {"$set": {"status": "deleted"}})
    for query, sort, skip, limit in _queries(random.Random(11)):
        _same(indexed, plain, query, sort, skip, limit)


def test_explain_names_the_index_for_onebox_query_shapes(pair):
    indexed, _, _ = pair
    db = indexed.database

    def stage(query, sort=None, limit=0):
        body = {"find": indexed.name, "filter": query, "limit": limit, **({"sort": sort} if sort else {})}
        return db.command("explain", body)["queryPlanner"]["winningPlan"]

    assert stage({"owner": "alice", "status": {"$ne": "deleted"}}, {"_id": -1}, 51)["plan"].startswith(
        "IXSCAN owner_1__id_-1")
    assert "job.not_before" in stage({"job.not_before": {"$lte": EPOCH}}, {"job.not_before": 1}, 8)["plan"]
    assert stage({"_id": "i-00001", "job.token": "t"})["stage"] == "IDHACK"
    assert stage({"status": "running", "provider": "aws"})["plan"].startswith("IXSCAN status_1_provider_1")
    assert stage({"ssh_user": "x"})["stage"] == "COLLSCAN"  # no index: said so, not hidden


def test_indexes_are_rebuilt_when_the_server_restarts(tmp_path):
    from tests.conftest import start_database

    server = start_database(tmp_path / "db")
    try:
        client = MongoClient(server.url())
        collection = client.t.x
        collection.create_index([("owner", ASCENDING), ("_id", DESCENDING)])
        collection.insert_many([{"_id": f"d{n:03d}", "owner": "a" if n % 2 else "b"} for n in range(100)])
        client.close()
        server.stop()
        server.start()
        client = MongoClient(server.url())
        collection = client.t.x
        plan = client.t.command("explain", {"find": "x", "filter": {"owner": "a"}, "sort": {"_id": -1}, "limit": 3})
        assert plan["queryPlanner"]["winningPlan"]["stage"] == "IXSCAN"
        assert [d["_id"] for d in collection.find({"owner": "a"}).sort("_id", -1).limit(3)] == ["d099", "d097", "d095"]
        client.close()
    finally:
        server.stop()
