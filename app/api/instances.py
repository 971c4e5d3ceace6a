"""HTTP routes for instances: parse, authorize, call the service, shape the answer."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.api.deps import PROBLEM_RESPONSES, DeadlineRoute, Instances, ServicesDep
from app.audit import Audit
from app.auth.deps import CurrentUser
from app.events.stream import EventStream, Position
from app.instances.models import Event, InstanceCreate, InstanceList, InstancePublic
from app.pagination import CURSOR_PATTERN
from app.policies.models import LifecyclePatch
from app.problems import Problem, field_problem

router = APIRouter(route_class=DeadlineRoute, prefix="/v1/instances", tags=["instances"],
                   responses=PROBLEM_RESPONSES)

StatusFilter = Literal["pending", "provisioning", "configuring", "running", "stopping", "stopped", "starting",
                       "rebooting", "failed", "deleting", "deleted"]
MERGE_PATCH = "application/merge-patch+json"
ProviderFilter = Literal["aws", "gcp", "azure", "local", "qemu"]


INSTANCE_LINKS = {
    "GetInstance": {"operationId": "get_instance", "parameters": {"instance_id": "$response.body#/id"}},
    "DeleteInstance": {"operationId": "delete_instance", "parameters": {"instance_id": "$response.body#/id"}},
    "InstanceEvents": {"operationId": "instance_events", "parameters": {"instance_id": "$response.body#/id"}},
    "SnapshotInstance": {"operationId": "create_snapshot", "parameters": {"instance_id": "$response.body#/id"}},
    "StopInstance": {"operationId": "stop_instance", "parameters": {"instance_id": "$response.body#/id"}},
    "StartInstance": {"operationId": "start_instance", "parameters": {"instance_id": "$response.body#/id"}},
    "RebootInstance": {"operationId": "reboot_instance", "parameters": {"instance_id": "$response.body#/id"}},
    "UpdateInstance": {"operationId": "update_instance", "parameters": {"instance_id": "$response.body#/id"}},
}
WRONG_STATUS = {409: {"description": "not in the status the action needs, being deleted, or another request is "
                                     "waiting; `current_status` says where it is"}}


@router.post("", status_code=202, response_model=InstancePublic, operation_id="create_instance",
             responses={202: {"description": "stored and queued", "links": INSTANCE_LINKS},
                        402: {"description": "over a budget (`budget_exceeded`: the budget, spent, left and the "
                                              "projection), or no known price to check it with (`price_unknown`)"},
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
    [doc] = await instances.with_lifecycle([doc])
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
    docs = await instances.for_display(docs)
    return InstanceList(items=[InstancePublic.from_doc(d) for d in docs], next_cursor=next_cursor)


@router.get("/{instance_id}", response_model=InstancePublic, operation_id="get_instance")
async def get_instance(instance_id: str, user: CurrentUser, instances: Instances) -> InstancePublic:
    """The instance, with its health, its lifecycle schedule and what it has cost (`cost`)."""
    [doc] = await instances.for_display([await instances.get(user, instance_id)])
    return InstancePublic.from_doc(doc)


async def merge_patch_body(request: Request) -> None:
    """A PATCH body is a JSON merge patch (RFC 7396): as application/merge-patch+json or plain
    application/json; anything else is 415 (checked before the body is validated)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in (MERGE_PATCH, "application/json"):
        raise Problem(415, "unsupported_media_type", "Unsupported media type",
                      f"send the patch as {MERGE_PATCH} or application/json")


@router.patch("/{instance_id}", response_model=InstancePublic, operation_id="update_instance",
              dependencies=[Depends(merge_patch_body)],
              responses={409: {"description": "being deleted or deleted; `current_status` says which"},
                         415: {"description": f"the body is neither {MERGE_PATCH} nor application/json"},
                         422: {"description": "invalid, or looser than your policy: `errors` names each field and "
                                              "`ceilings` its limit"}},
              openapi_extra={"requestBody": {"content": {
                  MERGE_PATCH: {"schema": {"$ref": "#/components/schemas/LifecyclePatch"}}}}})
async def update_instance(instance_id: str, patch: LifecyclePatch, user: CurrentUser, instances: Instances,
                          audit: Audit) -> InstancePublic:
    """Change the instance's lifecycle settings with a JSON merge patch (RFC 7396): a field left out is kept,
    `null` clears it. A value looser than your policy is refused (422 naming the field and its ceiling)."""
    doc = await instances.update_lifecycle(user, instance_id, patch)
    await audit.record("instance.update", "instance", instance_id, owner=doc["owner"],
                       fields=",".join(sorted(patch.model_fields_set)))
    return await get_instance(instance_id, user, instances)


async def _act(action: str, instance_id: str, user, instances, audit) -> InstancePublic:
    doc = await instances.request_action(user, instance_id, action)
    await audit.record(f"instance.{action}", "instance", instance_id, owner=doc["owner"])
    [doc] = await instances.for_display([doc])
    return InstancePublic.from_doc(doc)


@router.post("/{instance_id}/stop", status_code=202, response_model=InstancePublic, operation_id="stop_instance",
             responses=WRONG_STATUS)
async def stop_instance(instance_id: str, user: CurrentUser, instances: Instances, audit: Audit) -> InstancePublic:
    """Stop a running instance; its disks are kept. Status goes `stopping`, then `stopped`."""
    return await _act("stop", instance_id, user, instances, audit)


@router.post("/{instance_id}/start", status_code=202, response_model=InstancePublic, operation_id="start_instance",
             responses={**WRONG_STATUS, 402: {"description": "over a budget (`budget_exceeded`, the same body as a "
                                                             "create's), or no known price (`price_unknown`)"}})
async def start_instance(instance_id: str, user: CurrentUser, instances: Instances, audit: Audit) -> InstancePublic:
    """Start a stopped instance. Status goes `starting`, then `running` with its public IP read again;
    configuration is not run again (the agent comes back by itself). Checked against your budgets first."""
    return await _act("start", instance_id, user, instances, audit)


@router.post("/{instance_id}/reboot", status_code=202, response_model=InstancePublic, operation_id="reboot_instance",
             responses=WRONG_STATUS)
async def reboot_instance(instance_id: str, user: CurrentUser, instances: Instances, audit: Audit) -> InstancePublic:
    """Reboot a running instance. Status goes `rebooting`, then `running`."""
    return await _act("reboot", instance_id, user, instances, audit)


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
