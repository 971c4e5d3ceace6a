"""HTTP routes for instances: parse, authorize, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.api.deps import PROBLEM_RESPONSES, DeadlineRoute, Instances, ServicesDep
from app.audit import Audit
from app.auth.deps import CurrentUser
from app.events.stream import EventStream, Position
from app.instances.models import Event, InstanceCreate, InstanceList, InstancePublic
from app.pagination import CURSOR_PATTERN
from app.problems import field_problem

router = APIRouter(route_class=DeadlineRoute, prefix="/v1/instances", tags=["instances"],
                   responses=PROBLEM_RESPONSES)

StatusFilter = Literal["pending", "provisioning", "configuring", "running", "failed", "deleting", "deleted"]
ProviderFilter = Literal["aws", "gcp", "azure", "local", "qemu"]


INSTANCE_LINKS = {
    "GetInstance": {"operationId": "get_instance", "parameters": {"instance_id": "$response.body#/id"}},
    "DeleteInstance": {"operationId": "delete_instance", "parameters": {"instance_id": "$response.body#/id"}},
    "InstanceEvents": {"operationId": "instance_events", "parameters": {"instance_id": "$response.body#/id"}},
    "SnapshotInstance": {"operationId": "create_snapshot", "parameters": {"instance_id": "$response.body#/id"}},
}


@router.post("", status_code=202, response_model=InstancePublic, operation_id="create_instance",
             responses={202: {"description": "stored and queued", "links": INSTANCE_LINKS},
                        403: {"description": "over a quota; `limit` names it"},
                        409: {"description": "Idempotency-Key reused with another body, or snapshot not available"}})
async def create_instance(
    body: InstanceCreate,
    user: CurrentUser,
    instances: Instances,
    response: Response,
    audit: Audit,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None,
) -> InstancePublic:
    """Ask for an instance. It is stored and queued; a worker provisions it. Watch `status` and the events."""
    doc = await instances.create(user, body, idempotency_key)
    await audit.record("instance.create", "instance", doc["_id"], provider=body.provider, region=body.region)
    response.headers["Location"] = f"/v1/instances/{doc['_id']}"
    return InstancePublic.from_doc(doc)


@router.get("", response_model=InstanceList, operation_id="list_instances")
async def list_instances(
    user: CurrentUser,
    instances: Instances,
    status: StatusFilter | None = None,
    provider: ProviderFilter | None = None,
    owner: Annotated[str | None, Query(max_length=200, description="admins only: one user's instances")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page")] = None,
) -> InstanceList:
    """Your instances, newest first. Deleted ones are left out unless `status=deleted`."""
    docs, next_cursor = await instances.list(user, status=status, provider=provider, limit=limit, cursor=cursor,
                                             owner=owner)
    docs = await instances.with_health(docs)
    return InstanceList(items=[InstancePublic.from_doc(d) for d in docs], next_cursor=next_cursor)


@router.get("/{instance_id}", response_model=InstancePublic, operation_id="get_instance")
async def get_instance(instance_id: str, user: CurrentUser, instances: Instances) -> InstancePublic:
    [doc] = await instances.with_health([await instances.get(user, instance_id)])
    return InstancePublic.from_doc(doc)


@router.delete("/{instance_id}", status_code=202, response_model=InstancePublic, operation_id="delete_instance",
               responses={409: {"description": "already deleting or deleted; `current_status` says which"}})
async def delete_instance(instance_id: str, user: CurrentUser, instances: Instances, audit: Audit) -> InstancePublic:
    """Delete the instance in its cloud. Status goes `deleting`, then `deleted`; the record is kept."""
    doc = await instances.delete(user, instance_id)
    await audit.record("instance.delete", "instance", instance_id, owner=doc["owner"])
    return InstancePublic.from_doc(doc)


@router.get("/{instance_id}/events", response_model=list[Event], operation_id="instance_events")
async def instance_events(instance_id: str, user: CurrentUser, instances: Instances) -> list[Event]:
    """What happened to the instance, oldest first."""
    return [Event.model_validate(e) for e in await instances.events(user, instance_id)]


@router.get("/{instance_id}/events/stream", operation_id="instance_event_stream",
            response_class=StreamingResponse,
            responses={200: {"description": "Server-Sent Events: `status`, `instance` (one event), `end`, "
                                            "`reconnect`; every message has an `id` for `Last-Event-ID`",
                             "content": {"text/event-stream": {}}}})
async def instance_event_stream(
    instance_id: str,
    request: Request,
    user: CurrentUser,
    instances: Instances,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> StreamingResponse:
    """The instance's events and status changes as they happen, until it reaches its final state.

    The current status comes first, then every event (oldest first), then each new event and status change.
    Reconnect with `Last-Event-ID` to resume after the last event received. The stream ends with `event: end`
    once the instance is `deleted`, or `failed` with nothing left to do.
    """
    await instances.get(user, instance_id)
    try:
        start = Position.parse(last_event_id)
    except ValueError as exc:
        raise field_problem("Last-Event-ID", str(exc)) from None
    settings = services.settings
    stream = EventStream(services, instance_id, start, request.is_disconnected)
    return StreamingResponse(
        stream.run(settings.events_stream_poll_seconds, settings.events_stream_keepalive_seconds,
                   settings.events_stream_max_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"},
    )
