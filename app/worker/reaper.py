"""The reaper: cloud resources onebox manages that no live record accounts for.

Every resource a provider makes is tagged ``managed-by=onebox`` and with its
instance (or snapshot) id. Every ``reaper_interval_seconds`` one process —
whoever wins that interval's slot, an insert against a unique index — compares
each provider's ``list_managed()`` with the records:

* **Orphans.** A resource whose record is missing, ``failed`` or ``deleted``
  (states in which nothing should exist in the cloud), and older than
  ``reaper_grace_seconds``, is deleted by tag and an audit record is written.
  Age is the record's last change, or for a missing record the creation time
  encoded in the id itself (ids are time-ordered), so a resource whose create
  is still within its grace window is never touched — nor is anything of a
  record a job still holds.
* **Lost instances.** A ``running`` or ``stopped`` record whose VM the cloud no longer has
  (absent from the listing, and the provider confirms: not found or
  terminated) becomes ``failed`` with code ``cloud_resource_missing``. The
  reaper does not write the record itself — a record has one writer at a
  time — but files a request in ``delete_requests`` that the dispatcher
  carries out (``app.lifecycle.delete_requests``); a user's delete already
  filed simply wins.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from app.audit import record_system_action
from app.clock import as_utc, utcnow
from app.db import is_duplicate_key
from app.ids import id_created_at
from app.lifecycle.delete_requests import MARK_LOST, new_delete_request
from app.metrics.revocations import revoke
from app.services import Services
from app.worker.slots import acquire_slot, release_slot
from providers.base import InstanceRef, InstanceState, ManagedResource, NotFound, SnapshotRef

log = logging.getLogger("onebox.reaper")

ENDED = ("failed", "deleted")
LOST_CODE = "cloud_resource_missing"
REAPER = "reaper"  # actor of its audit records and delete requests


@dataclass
class ReapReport:
    """What one pass did, per provider."""

    removed: list[tuple[str, str, str]] = field(default_factory=list)  # (provider, kind, id)
    lost: list[tuple[str, str]] = field(default_factory=list)  # (provider, instance id)
    unreachable: list[str] = field(default_factory=list)  # providers whose listing failed


class Reaper:
    def __init__(self, services: Services, owner: str) -> None:
        self.services = services
        self.owner = owner

    @property
    def grace(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.services.settings.reaper_grace_seconds)

    async def run_once(self) -> ReapReport | None:
        """One pass, if this process wins the current interval's slot (``app.worker.slots``); None when
        another one did, so two processes never reap at once."""
        claims = self.services.db.claims
        slot = await acquire_slot(claims, "reaper", self.services.settings.reaper_interval_seconds, self.owner)
        if slot is None:
            return None
        try:
            report = await self.reap()
        finally:
            await release_slot(claims, slot)
        if report.removed or report.lost:
            log.warning("reaper removed %d leaked resource(s), marked %d instance(s) lost",
                        len(report.removed), len(report.lost))
        return report

    async def reap(self) -> ReapReport:
        report = ReapReport()
        for name in self.services.providers.enabled:
            try:
                provider = self.services.providers.get(name)
                resources = await self.services.providers.call(provider.list_managed)
            except Exception as exc:  # noqa: BLE001 - one cloud down must not stop the others
                log.warning("reaper: cannot list %s: %s", name, type(exc).__name__)
                report.unreachable.append(name)
                continue
            await self._orphans(name, provider, resources, report)
            await self._lost_instances(name, provider, resources, report)
        return report

    def _old_enough(self, record: dict | None, resource_id: str) -> bool:
        if record is None:
            born = id_created_at(resource_id)
            return born is not None and utcnow() - born > self.grace
        return (record["status"] in ENDED and record.get("job") is None
                and utcnow() - as_utc(record["updated_at"]) > self.grace)

    async def _orphans(self, name: str, provider, resources: list[ManagedResource], report: ReapReport) -> None:
        db = self.services.db
        by_instance: dict[str, list[ManagedResource]] = defaultdict(list)
        by_snapshot: dict[str, list[ManagedResource]] = defaultdict(list)
        for r in resources:
            if r.state == InstanceState.TERMINATED:
                continue  # on its way out of the listing; it costs nothing
            if r.snapshot_id:
                by_snapshot[r.snapshot_id].append(r)
            elif r.instance_id:
                by_instance[r.instance_id].append(r)
        instances = await _records(db.instances, by_instance, {"status": 1, "updated_at": 1, "job": 1})
        snapshots = await _records(db.snapshots, by_snapshot, {"status": 1, "updated_at": 1, "job": 1, "cloud_id": 1})
        for instance_id, parts in sorted(by_instance.items()):
            record = instances.get(instance_id)
            if not self._old_enough(record, instance_id):
                continue
            await self.services.providers.call(provider.delete_instance, InstanceRef(instance_id, parts[0].region))
            await self._record(name, "instance", instance_id, record, parts, instance_id)
            report.removed.append((name, "instance", instance_id))
        for snapshot_id, parts in sorted(by_snapshot.items()):
            record = snapshots.get(snapshot_id)
            if not self._old_enough(record, snapshot_id):
                continue
            cloud_id = (record or {}).get("cloud_id") or parts[0].cloud_id
            await self.services.providers.call(provider.delete_snapshot,
                                               SnapshotRef(snapshot_id, parts[0].region, cloud_id))
            await self._record(name, "snapshot", snapshot_id, record, parts, parts[0].instance_id)
            report.removed.append((name, "snapshot", snapshot_id))

    async def _record(self, provider: str, kind: str, target_id: str, record: dict | None,
                      parts: list[ManagedResource], instance_id: str | None) -> None:
        why = f"its record is {record['status']}" if record else "it has no record"
        kinds = ", ".join(sorted({p.kind for p in parts}))
        await record_system_action(self.services.db, REAPER, "reap", kind, target_id, provider=provider,
                                   resources=kinds, reason=why)
        log.warning("reaper: removed %s %s (%s) on %s: %s", kind, target_id, kinds, provider, why)
        if record is not None and instance_id:
            await self.services.events.add(instance_id, "reaper", f"removed {provider} {kinds} of {kind} "
                                           f"{target_id} left behind: {why}", step="reaper")

    async def _lost_instances(self, name: str, provider, resources: list[ManagedResource],
                              report: ReapReport) -> None:
        db = self.services.db
        listed = {r.instance_id for r in resources
                  if r.kind == "instance" and r.instance_id and r.state != InstanceState.TERMINATED}
        at_rest = [doc for status in ("running", "stopped")  # one (status, provider) index range each
                   async for doc in db.instances.find({"status": status, "provider": name, "job": None})]
        for doc in at_rest:
            if doc["_id"] in listed:
                continue
            try:  # listings can lag: only the provider's own answer for this instance counts
                info = await self.services.providers.call(
                    provider.get_instance, InstanceRef(doc["_id"], doc["region"], doc.get("zone"), doc.get("cloud_id")))
                if info.state != InstanceState.TERMINATED:
                    continue
            except NotFound:
                pass
            except Exception as exc:  # noqa: BLE001 - not sure it is gone: leave it
                log.warning("reaper: cannot check %s on %s: %s", doc["_id"], name, type(exc).__name__)
                continue
            request = new_delete_request("instances", doc, REAPER)
            request["action"] = MARK_LOST
            try:
                await db.delete_requests.insert_one(request)
            except Exception as exc:
                if is_duplicate_key(exc):
                    continue  # a delete is already on its way
                raise
            await revoke(db, doc["_id"], doc.get("agent_jti_hash"), "lost")
            self.services.agent_revocations.add(doc.get("agent_jti_hash"))
            await self.services.events.add(doc["_id"], "reaper", f"the {name} VM is gone from the cloud; "
                                           "marking the instance failed", step="reaper")
            await record_system_action(db, REAPER, "mark_lost", "instance", doc["_id"], provider=name)
            report.lost.append((name, doc["_id"]))


async def _records(collection, ids, projection: dict) -> dict[str, dict]:
    """The records of ``ids``, read in one query (not one per listed resource)."""
    if not ids:
        return {}
    return {doc["_id"]: doc async for doc in collection.find({"_id": {"$in": sorted(ids)}}, projection)}
