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


async def test_a_live_lease_is_never_taken_even_from_a_stale_candidate(services):
    """A worker read a job as claimable, but by the time it gets to it another worker holds it (a long-queued
    job whose old claim looks abandoned): the live lease wins, and its holder keeps writing."""
    from app.worker.jobs import LeaseLost

    job = await queued(services, waiting=60)
    holder = await queue(services, "holder").claim()
    assert holder is not None
    # The holder's claim record looks old (it has held the job for long, renewing its lease), and the other
    # worker's candidate read predates the holder's lease: what a loaded machine produces.
    await services.db.claims.update_one({"_id": f"{job['id']}:1"}, {"$set": {"at": utcnow() - dt.timedelta(minutes=5)}})
    late = queue(services, "late")
    candidate = {"_id": "job-doc", "job": {**job, "claims": 0}}
    assert await late._take(candidate, utcnow()) is None, "the live lease was taken over"
    await holder.update({"$set": {"note": "still mine"}})  # no LeaseLost: the holder carries on
    try:
        await holder.renew()
    except LeaseLost:  # pragma: no cover - the assertion below says it better
        pass
    assert (await services.db.instances.find_one({"_id": "job-doc"}))["job"]["lease_owner"] == "holder"
