"""Claims: one holder per job, and a claimant that died before writing its lease strands nothing."""

from __future__ import annotations

import datetime as dt

from app.clock import utcnow
from app.worker.jobs import JobQueue, new_job


async def queued(services, name="job-doc", waiting: float = 1.0):
    job = new_job("provision", utcnow() - dt.timedelta(seconds=waiting))
    await services.db.instances.insert_one({"_id": name, "status": "pending", "job": job})
    return job


def queue(services, worker: str) -> JobQueue:
    return JobQueue(services.db.instances, services.db.claims, worker, lease_seconds=5)


async def test_a_claim_whose_worker_died_before_its_lease_is_taken_over(services):
    job = await queued(services, waiting=60)  # claimable for a minute: nobody took it
    # A worker won generation 1 a minute ago and died before writing its lease into the document.
    await services.db.claims.insert_one({"_id": f"{job['id']}:1", "owner": "dead",
                                         "at": utcnow() - dt.timedelta(minutes=1)})
    claim = await queue(services, "alive").claim()
    assert claim is not None and claim.job["claims"] == 2 and claim.job["lease_owner"] == "alive"
    assert await queue(services, "other").claim() is None, "held now: nobody else gets it"


async def test_a_fresh_claim_is_respected(services):
    job = await queued(services, waiting=60)  # even on a job that waited: the claim itself is fresh
    # Another worker won generation 1 just now and is writing its lease.
    await services.db.claims.insert_one({"_id": f"{job['id']}:1", "owner": "busy", "at": utcnow()})
    assert await queue(services, "other").claim() is None


async def test_two_workers_one_claim(services):
    await queued(services)
    first, second = await queue(services, "a").claim(), await queue(services, "b").claim()
    assert (first is None) != (second is None)
