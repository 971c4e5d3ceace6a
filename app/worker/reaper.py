"""The reaper: cloud resources onebox manages that no live record accounts for.

Every resource a provider makes is tagged with its instance (or snapshot) id.
Periodically each provider's ``list_managed()`` is compared with the records:
a resource whose record is ``failed`` or ``deleted`` — states in which nothing
should exist in the cloud — and has not changed for a grace period is a leak
(a cleanup that lost a race, a delete that half-failed, a cloud that came back
with something later). The reaper deletes it by tag and records an event.
Resources with no record at all are only reported: they may belong to another
onebox sharing the cloud account.
"""

from __future__ import annotations

import datetime as dt
import logging

from app.clock import as_utc, utcnow
from app.services import Services
from providers.base import InstanceRef, SnapshotRef

log = logging.getLogger("onebox.reaper")

ENDED = ("failed", "deleted")


async def reap(services: Services) -> int:
    """One pass over every enabled provider; returns how many leaks were removed."""
    grace = dt.timedelta(seconds=services.settings.reaper_grace_seconds)
    removed = 0
    for name in services.providers.enabled:
        try:
            provider = services.providers.get(name)
            resources = await services.providers.call(provider.list_managed)
        except Exception as exc:  # noqa: BLE001 - one cloud down must not stop the others
            log.warning("reaper: cannot list %s: %s", name, type(exc).__name__)
            continue
        instance_ids = {r.instance_id for r in resources if r.instance_id and not r.snapshot_id}
        snapshot_ids = {r.snapshot_id for r in resources if r.snapshot_id}
        region_of = {r.instance_id or r.snapshot_id: r.region for r in resources}
        for instance_id in sorted(instance_ids):
            doc = await services.db.instances.find_one({"_id": instance_id}, {"status": 1, "updated_at": 1, "job": 1})
            if doc is None:
                log.warning("reaper: %s resource of unknown instance %s left alone", name, instance_id)
                continue
            if doc["status"] in ENDED and doc.get("job") is None and utcnow() - as_utc(doc["updated_at"]) > grace:
                await services.providers.call(provider.delete_instance, InstanceRef(instance_id, region_of[instance_id]))
                await services.events.add(instance_id, "reaper", f"removed {name} resources left behind while "
                                          f"{doc['status']}", step="reaper")
                removed += 1
        for snapshot_id in sorted(snapshot_ids):
            doc = await services.db.snapshots.find_one({"_id": snapshot_id})
            if doc and doc["status"] in ENDED and doc.get("job") is None and \
                    utcnow() - as_utc(doc["updated_at"]) > grace:
                await services.providers.call(provider.delete_snapshot,
                                              SnapshotRef(snapshot_id, doc["region"], doc.get("cloud_id")))
                await services.events.add(doc["instance_id"], "reaper",
                                          f"removed snapshot {snapshot_id} left behind while {doc['status']}",
                                          step="reaper")
                removed += 1
    return removed
