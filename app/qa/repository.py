"""The QA collections: runs, the lock on each instance under test, cancel requests, results, baselines.

* ``qa_runs`` — one document per run, holding its job (``app.worker.jobs``):
  while the job is active only its holder writes it.
* ``qa_locks`` — ``_id`` = an instance id: one QA run per instance at a time,
  taken with unique inserts (atomic on every backend, like quota slots), so two
  runs racing for one instance cannot both get it. A lock names its run; a lock
  whose run never got stored (the API died between the two writes) or has
  ended is stale and may be taken over.
* ``qa_cancel_requests`` — ``_id`` = a run id: a ``DELETE`` from outside,
  recorded in a document of its own (the run's document belongs to its job),
  which the job sees at its next step boundary or while a command runs.
* ``qa_results`` — every result of every finished run, flattened with the
  instance's provider, region, machine type and image: the history that
  baselines are derived from and that comparisons chart. Written by the run's
  job when the run ends (idempotent upserts keyed by run, instance, check and
  target), read by anyone's runs: machine types perform the same whoever owns
  the instance.
* ``qa_baselines`` — the baselines admins set, ``_id`` =
  ``suite|check|provider|machine type``.
"""

from __future__ import annotations

from typing import Any

from app.clock import as_utc, utcnow
from app.db import Database, is_duplicate_key
from app.lifecycle.states import QA_RUN_FINAL_STATUSES
from app.qa.baselines import Baseline, from_history
from app.qa.suites import Check

STALE_LOCK_SECONDS = 60.0  # a lock whose run was never stored is older than any create request


class LockTaken(Exception):
    def __init__(self, instance_id: str, run_id: str) -> None:
        super().__init__(instance_id)
        self.instance_id, self.run_id = instance_id, run_id


def baseline_id(suite: str, check: str, provider: str, machine_type: str) -> str:
    return "|".join((suite, check, provider, machine_type))


class QaRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- locks ----------------------------------------------------------------------------------
    async def take_locks(self, run_id: str, instance_ids: list[str]) -> None:
        """All the instances' locks for ``run_id``, or none (``LockTaken`` names the run holding one).

        Locks are taken in one global order (by instance id), so requests racing for overlapping sets of
        instances cannot each take a part and all give up: whoever takes the first one goes on."""
        taken: list[str] = []
        try:
            for instance_id in sorted(instance_ids):
                await self._take_one(run_id, instance_id)
                taken.append(instance_id)
        except BaseException:
            if taken:
                await self.db.qa_locks.delete_many({"_id": {"$in": taken}, "run_id": run_id})
            raise

    async def _take_one(self, run_id: str, instance_id: str) -> None:
        for _ in range(2):
            try:
                await self.db.qa_locks.insert_one({"_id": instance_id, "run_id": run_id, "at": utcnow()})
                return
            except Exception as exc:
                if not is_duplicate_key(exc):
                    raise
            held = await self.db.qa_locks.find_one({"_id": instance_id})
            if held is None:
                continue  # released a moment ago
            if not await self._stale(held):
                raise LockTaken(instance_id, held["run_id"])
            # Only the stale holder's own lock is removed: a fresh lock taken meanwhile stays.
            await self.db.qa_locks.delete_one({"_id": instance_id, "run_id": held["run_id"]})
        raise LockTaken(instance_id, "")

    async def _stale(self, lock: dict[str, Any]) -> bool:
        run = await self.db.qa_runs.find_one({"_id": lock["run_id"]}, {"status": 1})
        if run is None:
            return (utcnow() - as_utc(lock["at"])).total_seconds() > STALE_LOCK_SECONDS
        return run["status"] in QA_RUN_FINAL_STATUSES

    async def release_locks(self, run_id: str) -> None:
        await self.db.qa_locks.delete_many({"run_id": run_id})

    # --- cancel requests ------------------------------------------------------------------------
    async def request_cancel(self, run_id: str, requested_by: str) -> bool:
        """False when a cancel was already requested."""
        try:
            await self.db.qa_cancel_requests.insert_one({"_id": run_id, "requested_by": requested_by,
                                                         "requested_at": utcnow()})
            return True
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
            return False

    async def cancel_requested(self, run_id: str) -> bool:
        return await self.db.qa_cancel_requests.count_documents({"_id": run_id}, limit=1) > 0

    async def cancel_requested_among(self, run_ids: list[str]) -> set[str]:
        found = self.db.qa_cancel_requests.find({"_id": {"$in": run_ids}}, {"_id": 1})
        return {d["_id"] async for d in found}

    async def instances_being_deleted(self, instance_ids: list[str]) -> list[str]:
        found = self.db.delete_requests.find({"_id": {"$in": instance_ids}}, {"_id": 1})
        return [d["_id"] async for d in found]

    # --- results and baselines ------------------------------------------------------------------
    async def record_results(self, run: dict[str, Any], results: list[dict[str, Any]], run_status: str) -> None:
        targets = {t["instance_id"]: t for t in run["targets"]}
        for r in results:
            if r["value"] is None or r["verdict"] not in ("pass", "fail"):
                continue  # skipped, errored and pass/fail checks have no value to compare
            target = targets[r["instance_id"]]
            key = f"{run['_id']}|{r['instance_id']}|{r['check']}|{r.get('target') or ''}"
            await self.db.qa_results.update_one({"_id": key}, {"$set": {
                "run_id": run["_id"], "owner": run["owner"], "suite": run["suite"], "check": r["check"],
                "instance_id": r["instance_id"], "target": r.get("target"), "provider": target["provider"],
                "region": target["region"], "machine_type": target["machine_type"], "image": target.get("image"),
                "value": r["value"], "unit": r["unit"], "verdict": r["verdict"], "run_status": run_status,
                "comparable": r.get("comparable", True), "at": r["at"],
            }}, upsert=True)

    async def admin_baseline(self, suite: str, check: str, provider: str, machine_type: str) -> dict | None:
        return await self.db.qa_baselines.find_one({"_id": baseline_id(suite, check, provider, machine_type)})

    async def baseline_for(self, suite: str, check: Check, provider: str, machine_type: str, *,
                           runs: int, min_runs: int, exclude_run: str | None = None) -> Baseline | None:
        """The admin's baseline if one is set, else the median of the latest passed runs (``None``: none yet)."""
        admin = await self.admin_baseline(suite, check.name, provider, machine_type)
        if admin is not None:
            return Baseline(float(admin["value"]), float(admin["tolerance_percent"]), "admin")
        if not check.auto_baseline:
            return None
        query: dict[str, Any] = {"suite": suite, "check": check.name, "provider": provider,
                                 "machine_type": machine_type, "run_status": "passed", "comparable": True}
        if exclude_run:
            query["run_id"] = {"$ne": exclude_run}
        found = self.db.qa_results.find(query, {"value": 1, "run_id": 1}).sort("at", -1).limit(runs * 8)
        values: list[float] = []
        seen_runs: set[str] = set()
        async for doc in found:  # one value per run (its first instance/target), the latest ``runs`` runs
            if doc["run_id"] in seen_runs:
                continue
            seen_runs.add(doc["run_id"])
            values.append(float(doc["value"]))
            if len(values) == runs:
                break
        return from_history(values, check, min_runs)

    async def history(self, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
        found = self.db.qa_results.find(query, {"_id": 0}).sort("at", -1).limit(limit)
        return [d async for d in found]

    async def set_admin_baseline(self, suite: str, check: str, provider: str, machine_type: str, value: float,
                                 tolerance_percent: float, set_by: str) -> dict[str, Any]:
        doc = {"suite": suite, "check": check, "provider": provider, "machine_type": machine_type, "value": value,
               "tolerance_percent": tolerance_percent, "set_by": set_by, "set_at": utcnow()}
        await self.db.qa_baselines.update_one({"_id": baseline_id(suite, check, provider, machine_type)},
                                              {"$set": doc}, upsert=True)
        return doc

    async def delete_admin_baseline(self, suite: str, check: str, provider: str, machine_type: str) -> bool:
        deleted = await self.db.qa_baselines.delete_one({"_id": baseline_id(suite, check, provider, machine_type)})
        return deleted.deleted_count > 0

    async def admin_baselines(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        found = self.db.qa_baselines.find(query, {"_id": 0}).sort([("suite", 1), ("check", 1)])
        return [d async for d in found]

