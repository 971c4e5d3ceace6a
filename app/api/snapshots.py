"""HTTP routes for snapshots of an instance's root disk."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from app.api.deps import DeadlineRoute, PROBLEM_RESPONSES, Snapshots
from app.audit import Audit
from app.auth.deps import CurrentUser
from app.pagination import CURSOR_PATTERN
from app.snapshots.models import SnapshotCreate, SnapshotList, SnapshotPublic

router = APIRouter(route_class=DeadlineRoute, tags=["snapshots"], responses=PROBLEM_RESPONSES)


SNAPSHOT_LINKS = {
    "GetSnapshot": {"operationId": "get_snapshot", "parameters": {"snapshot_id": "$response.body#/id"}},
    "DeleteSnapshot": {"operationId": "delete_snapshot", "parameters": {"snapshot_id": "$response.body#/id"}},
}


@router.post("/v1/instances/{instance_id}/snapshots", status_code=202, response_model=SnapshotPublic,
             operation_id="create_snapshot",
             responses={202: {"description": "stored and queued", "links": SNAPSHOT_LINKS},
                        403: {"description": "over the snapshot quota"},
                        409: {"description": "the instance is not running"}})
async def create_snapshot(instance_id: str, body: SnapshotCreate, user: CurrentUser,
                          snapshots: Snapshots, audit: Audit) -> SnapshotPublic:
    """Snapshot the instance's root disk. New instances can start from it once it is `available`."""
    doc = await snapshots.create(user, instance_id, body)
    await audit.record("snapshot.create", "snapshot", doc["_id"], instance_id=instance_id)
    return SnapshotPublic.from_doc(doc)


@router.get("/v1/snapshots", response_model=SnapshotList, operation_id="list_snapshots")
async def list_snapshots(
    user: CurrentUser,
    snapshots: Snapshots,
    status: Literal["creating", "available", "failed", "deleting", "deleted"] | None = None,
    instance_id: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=200, description="admins only: one user's snapshots")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page")] = None,
) -> SnapshotList:
    docs, next_cursor = await snapshots.list(user, status=status, instance_id=instance_id, limit=limit, cursor=cursor,
                                             owner=owner)
    return SnapshotList(items=[SnapshotPublic.from_doc(d) for d in docs], next_cursor=next_cursor)


@router.get("/v1/snapshots/{snapshot_id}", response_model=SnapshotPublic, operation_id="get_snapshot")
async def get_snapshot(snapshot_id: str, user: CurrentUser, snapshots: Snapshots) -> SnapshotPublic:
    return SnapshotPublic.from_doc(await snapshots.get(user, snapshot_id))


@router.delete("/v1/snapshots/{snapshot_id}", status_code=202, response_model=SnapshotPublic,
               operation_id="delete_snapshot",
               responses={409: {"description": "the snapshot is being created or already deleted"}})
async def delete_snapshot(snapshot_id: str, user: CurrentUser, snapshots: Snapshots, audit: Audit) -> SnapshotPublic:
    doc = await snapshots.delete(user, snapshot_id)
    await audit.record("snapshot.delete", "snapshot", snapshot_id, owner=doc["owner"])
    return SnapshotPublic.from_doc(doc)
