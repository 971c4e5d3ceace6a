"""The rules of snapshots: made from a running instance, deleted when idle."""

from __future__ import annotations

from typing import Any

from app import quotas
from app.auth.tokens import Principal
from app.clock import utcnow
from app.ids import new_snapshot_id
from app.instances.service import InstanceService, owner_filter, request_delete
from app.lifecycle.states import InstanceStatus, SnapshotStatus, recorded
from app.pagination import page
from app.problems import Problem, not_found
from app.services import Services
from app.snapshots.models import SnapshotCreate
from app.worker.jobs import new_job

S = SnapshotStatus


class SnapshotService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.db = services.db

    async def get(self, principal: Principal, snapshot_id: str) -> dict[str, Any]:
        doc = await self.db.snapshots.find_one({"_id": snapshot_id, **owner_filter(principal)})
        if doc is None:
            raise not_found("snapshot", snapshot_id)
        return doc

    async def list(self, principal: Principal, *, status: str | None, instance_id: str | None, limit: int,
                   cursor: str | None, owner: str | None = None) -> tuple[list[dict], str | None]:
        query: dict[str, Any] = owner_filter(principal)
        if owner and principal.is_admin:
            query["owner"] = owner
        query["status"] = status if status else {"$ne": S.DELETED}
        if instance_id:
            query["instance_id"] = instance_id
        return await page(self.db.snapshots, query, limit, cursor)

    async def create(self, principal: Principal, instance_id: str, body: SnapshotCreate) -> dict[str, Any]:
        instance = await InstanceService(self.services).get(principal, instance_id)
        deleting = await self.db.delete_requests.find_one({"_id": instance_id}, {"_id": 1})
        if instance["status"] != InstanceStatus.RUNNING or deleting:
            raise Problem(409, "instance_not_running", "Instance is not running",
                          f"only a running instance can be snapshotted; {instance_id} is {instance['status']}",
                          current_status=instance["status"])
        now = utcnow()
        doc = {
            "_id": new_snapshot_id(),
            "instance_id": instance_id,
            "owner": instance["owner"],
            "name": body.name,
            "provider": instance["provider"],
            "region": instance["region"],
            "status": S.CREATING.value,
            "cloud_id": None,
            "error": None,
            "created_at": now,
            "updated_at": now,
            "transitions": [recorded(None, S.CREATING, now)],
            "job": new_job("create", now),
        }
        await quotas.acquire(self.db, self.services.settings, instance["owner"], doc["_id"], {"max_snapshots": 1})
        try:
            await self.db.snapshots.insert_one(doc)
        except Exception:
            await quotas.release(self.db, doc["_id"])
            raise
        await self.services.events.add(instance_id, "snapshot.requested", f"snapshot {doc['_id']} ({body.name}) queued",
                                       step="snapshot")
        return doc

    async def delete(self, principal: Principal, snapshot_id: str) -> dict[str, Any]:
        """Deleting a snapshot still being made waits for it to finish, then deletes it."""
        doc = await self.get(principal, snapshot_id)
        return await request_delete(self.services, "snapshots", doc, principal, "snapshot")
