"""The rules of instances: who may see what, what may be created, how deletes go.

Requests never call a cloud: creating stores the record with its provision
job (one write); deleting records a delete request, and stopping, starting
or rebooting an action request (one insert each, unique per instance).
Workers do the rest (``app.lifecycle``). Lifecycle settings (TTL, idle, …)
are kept apart from the record, which a job may be holding
(``app.policies``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from app import quotas
from app.auth.tokens import Principal
from app.clock import utcnow
from app.cloud import UnknownProvider
from app.db import is_duplicate_key
from app.ids import new_instance_id
from app.instances.models import InstanceCreate
from app.lifecycle.delete_requests import new_delete_request
from app.metrics.revocations import revoke
from app.lifecycle.specs import DEFAULT_DISK_GB
from app.lifecycle.action_requests import file_action_request
from app.lifecycle.states import ACTIONS, InstanceStatus, recorded
from app.policies.models import LifecyclePatch, lifecycle_values
from app.policies.rules import LIFECYCLE_FIELDS, run_started_at
from app.policies.service import LifecycleSettings, PolicyService, attach_lifecycle, refuse_looser
from app.pagination import page
from app.problems import Problem, field_problem, not_found
from app.services import Services
from app.validation import check_public_url
from app.worker.jobs import new_job
from providers.base import ProviderError

S = InstanceStatus
MAX_IDEMPOTENCY_KEY = 200


def owner_filter(principal: Principal) -> dict[str, Any]:
    return {} if principal.is_admin else {"owner": principal.subject}


class InstanceService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.db = services.db

    # --- reading -------------------------------------------------------------
    async def get(self, principal: Principal, instance_id: str) -> dict[str, Any]:
        doc = await self.db.instances.find_one({"_id": instance_id, **owner_filter(principal)})
        if doc is None:
            raise not_found("instance", instance_id)  # another user's instance looks absent, not forbidden
        return doc

    async def list(self, principal: Principal, *, status: str | None, provider: str | None, limit: int,
                   cursor: str | None, owner: str | None = None) -> tuple[list[dict], str | None]:
        query: dict[str, Any] = owner_filter(principal)
        if owner and principal.is_admin:
            query["owner"] = owner
        query["status"] = status if status else {"$ne": S.DELETED}
        if provider:
            query["provider"] = provider
        return await page(self.db.instances, query, limit, cursor)

    async def with_health(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The instances with their ``health`` summary (kept in a document of its own)."""
        from app.metrics.service import MetricsService

        health = await MetricsService(self.services).health_for([d["_id"] for d in docs])
        return [{**d, "health": _health_of(d, health[d["_id"]])} for d in docs]

    async def with_lifecycle(self, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The instances with their own lifecycle settings and ``schedule`` (``app.policies``)."""
        return await attach_lifecycle(self.services, docs)

    async def events(self, principal: Principal, instance_id: str) -> list[dict[str, Any]]:
        await self.get(principal, instance_id)
        return await self.services.events.list(instance_id)

    # --- creating --------------------------------------------------------------
    async def _check_placement(self, body: InstanceCreate) -> int:
        """Validate provider, region, zone, machine type and image; return the machine type's vCPUs."""
        registry = self.services.providers
        try:
            catalog = await registry.catalog(body.provider)
        except UnknownProvider:
            raise field_problem("provider", f"'{body.provider}' is not enabled here; enabled: {', '.join(registry.enabled)}") from None
        except ProviderError as exc:
            raise Problem(503, "catalog_unavailable", "Provider catalog unavailable", exc.message,
                          headers={"Retry-After": "10"}) from None
        region = catalog.regions.get(body.region)
        if region is None:
            known = ", ".join(sorted(catalog.regions)[:20])
            raise field_problem("region", f"unknown region '{body.region}' for {body.provider}; known: {known}")
        if body.zone is not None and body.zone not in region.zones:
            raise field_problem("zone", f"unknown zone '{body.zone}' in {body.region}; known: {', '.join(region.zones)}")
        if body.machine_type not in region.machine_types:
            known = ", ".join(sorted(region.machine_types)[:20])
            raise field_problem("machine_type", f"unknown machine type '{body.machine_type}' in {body.region}; known: {known}")
        if body.image is not None and body.image not in catalog.images:
            pattern = catalog.native_image_pattern
            if not pattern or not re.fullmatch(pattern, body.image):
                raise field_problem("image", f"unknown image '{body.image}'; use one of {', '.join(catalog.images)}"
                                    + (" or a native image id" if pattern else ""))
        key_type = body.ssh_public_key.split()[0]
        if catalog.ssh_key_types is not None and key_type not in catalog.ssh_key_types:
            raise field_problem("ssh_public_key", f"{body.provider} accepts {', '.join(catalog.ssh_key_types)} keys only")
        if body.ssh_user.lower() in catalog.reserved_ssh_users:
            raise field_problem("ssh_user", f"'{body.ssh_user}' is reserved on {body.provider}; choose another name")
        return region.machine_types[body.machine_type].vcpus

    async def _check_snapshot(self, principal: Principal, body: InstanceCreate) -> None:
        if body.snapshot_id is None:
            return
        snap = await self.db.snapshots.find_one({"_id": body.snapshot_id, **owner_filter(principal)})
        if snap is None:
            raise field_problem("snapshot_id", f"no snapshot {body.snapshot_id}")
        if snap["provider"] != body.provider or snap["region"] != body.region:
            raise field_problem("snapshot_id", f"snapshot {body.snapshot_id} is in {snap['provider']}/{snap['region']},"
                                f" not {body.provider}/{body.region}")
        if snap["status"] != "available":
            raise field_problem("snapshot_id", f"snapshot {body.snapshot_id} is {snap['status']}, not available",
                                status=409, code="snapshot_not_available")

    async def create(self, principal: Principal, body: InstanceCreate,
                     idempotency_key: str | None) -> dict[str, Any]:
        for index, bucket in enumerate(body.buckets):
            if bucket.endpoint is not None:
                try:
                    check_public_url(bucket.endpoint, self.services.settings.url_allowlist)
                except ValueError as exc:
                    raise field_problem(f"buckets.{index}.endpoint", str(exc)) from None
        lifecycle = lifecycle_values(body)
        await self._check_lifecycle(principal.subject, lifecycle, utcnow())
        vcpus = await self._check_placement(body)
        await self._check_snapshot(principal, body)
        instance_id = new_instance_id()
        if idempotency_key is not None:
            replay, instance_id = await self._claim_idempotency_key(principal, body, idempotency_key, instance_id)
            if replay is not None:
                return replay
        now = utcnow()
        if any(v is not None for v in lifecycle.values()):
            # Before the record: a record never exists without the settings it was created with.
            await LifecycleSettings(self.services).put(instance_id, principal.subject, lifecycle, now)
        doc = {
            "_id": instance_id,
            "owner": principal.subject,
            **body.model_dump(exclude={"disk_gb", *LIFECYCLE_FIELDS}),
            "disk_gb": body.disk_gb or DEFAULT_DISK_GB,
            "status": S.PENDING.value,
            "error": None,
            "public_ip": None,
            "private_ip": None,
            "ssh_port": None,
            "cloud_id": None,
            "created_at": now,
            "updated_at": now,
            "transitions": [recorded(None, S.PENDING, now)],
            "job": new_job("provision", now),
        }
        await quotas.acquire(self.db, self.services.settings, principal.subject, instance_id,
                             {"max_instances": 1, "max_vcpus": vcpus})
        try:
            await self.db.instances.insert_one(doc)
        except Exception as exc:
            if is_duplicate_key(exc):  # a concurrent replay of the same idempotency key won
                return await self.db.instances.find_one({"_id": instance_id})
            await quotas.release(self.db, instance_id)
            raise
        await self.services.events.add(instance_id, "created", f"queued {body.provider} instance in {body.region}")
        return doc

    async def _claim_idempotency_key(self, principal: Principal, body: InstanceCreate, key: str,
                                     instance_id: str) -> tuple[dict | None, str]:
        if not key or len(key) > MAX_IDEMPOTENCY_KEY:
            raise field_problem("Idempotency-Key", f"must be 1-{MAX_IDEMPOTENCY_KEY} characters")
        body_hash = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        record = {"_id": hashlib.sha256(f"{principal.subject}\0{key}".encode()).hexdigest(),
                  "owner": principal.subject, "key": key, "body_hash": body_hash,
                  "instance_id": instance_id, "created_at": utcnow()}
        try:
            await self.db.idempotency.insert_one(record)
            return None, instance_id
        except Exception as exc:
            if not is_duplicate_key(exc):
                raise
        existing = await self.db.idempotency.find_one({"owner": principal.subject, "key": key})
        if existing is None:  # pragma: no cover - the record cannot vanish; be safe anyway
            raise Problem(409, "idempotency_conflict", "Idempotency-Key in use", "retry the request")
        if existing["body_hash"] != body_hash:
            raise Problem(409, "idempotency_conflict", "Idempotency-Key reused",
                          "this Idempotency-Key was used with a different request body",
                          errors=[{"field": "Idempotency-Key", "message": "already used with another body"}])
        instance = await self.db.instances.find_one({"_id": existing["instance_id"]})
        # No instance yet: the first request died between the two writes; finish its work.
        return instance, existing["instance_id"]

    async def _check_lifecycle(self, user: str, values: dict[str, Any], ttl_from) -> None:
        """The lifecycle fields a request sets: in the future, and no looser than the user's policy."""
        expires_at = values.get("expires_at")
        if expires_at is not None and expires_at <= utcnow():
            raise field_problem("expires_at", "is in the past")
        policy = await PolicyService(self.services).effective(user)
        refuse_looser(values, policy, ttl_from, self.services.settings.policy_time_scale)

    # --- day 2: lifecycle settings, stop, start, reboot ----------------------------
    async def update_lifecycle(self, principal: Principal, instance_id: str, patch: LifecyclePatch) -> dict[str, Any]:
        """Apply a JSON merge patch to the instance's lifecycle settings (a document of their own: the
        record itself may be held by a job)."""
        doc = await self.get(principal, instance_id)
        if doc["status"] in ("deleting", "deleted"):
            raise Problem(409, "invalid_status", f"Instance is {doc['status']}",
                          f"instance {instance_id} is {doc['status']}", current_status=doc["status"])
        given = {name: getattr(patch, name) for name in patch.model_fields_set}
        if await self.db.delete_requests.find_one({"_id": instance_id}, {"_id": 1}):
            raise Problem(409, "already_deleting", "Instance is being deleted",
                          f"a delete of instance {instance_id} is under way", current_status=doc["status"])
        # A running instance's TTL ceiling counts from its run's start; a stopped one's from now (its next run).
        ttl_from = utcnow() if doc["status"] in ("stopping", "stopped") else run_started_at(doc)
        await self._check_lifecycle(doc["owner"], given, ttl_from)
        settings = LifecycleSettings(self.services)
        current = await settings.get(instance_id)
        values = {k: current.get(k) for k in LIFECYCLE_FIELDS}
        ttl_set_at = current.get("ttl_set_at")
        if "ttl_seconds" in given or "expires_at" in given:  # one deadline: giving either replaces both
            values["ttl_seconds"] = values["expires_at"] = None
            ttl_set_at = utcnow()
        values.update(given)
        await settings.put(instance_id, doc["owner"], values, ttl_set_at)
        await self.services.events.add(instance_id, "lifecycle.updated", "lifecycle settings changed: " + ", ".join(
            f"{k}={_show(v)}" for k, v in sorted(given.items())), step="lifecycle")
        return doc

    async def request_action(self, principal: Principal, instance_id: str, action: str) -> dict[str, Any]:
        """Record a stop, start or reboot request; its job carries it out (``app.lifecycle.action_requests``)."""
        doc = await self.get(principal, instance_id)
        needed, _ = ACTIONS[action]
        status = doc["status"]
        if status in ("deleting", "deleted") or await self.db.delete_requests.find_one({"_id": instance_id}, {"_id": 1}):
            raise Problem(409, "already_deleting", "Instance is being deleted",
                          f"instance {instance_id} is {status if status in ('deleting', 'deleted') else 'being deleted'}",
                          current_status=status)
        if status != needed:
            raise Problem(409, "invalid_status", f"Cannot {action} a {status} instance",
                          f"{action} needs a {needed} instance; instance {instance_id} is {status}",
                          current_status=status)
        request = await file_action_request(self.db, doc, action, principal.subject)
        if request is None:
            pending = await self.db.action_requests.find_one({"_id": instance_id}) or {}
            raise Problem(409, "request_pending", "Another request is waiting",
                          f"a {pending.get('action', 'previous')} request for instance {instance_id} is still being "
                          "carried out", current_status=status)
        await self.services.events.add(instance_id, f"{action}.requested", f"{action} requested by "
                                       f"{principal.subject} while {status}", step=action)
        return doc

    # --- deleting --------------------------------------------------------------
    async def delete(self, principal: Principal, instance_id: str) -> dict[str, Any]:
        doc = await self.get(principal, instance_id)
        return await request_delete(self.services, "instances", doc, principal, "instance")


async def request_delete(services: Services, collection: str, doc: dict[str, Any], principal: Principal,
                         kind: str) -> dict[str, Any]:
    """Record a delete request; its job moves the target to deleting once no other job holds it."""
    status = doc["status"]
    if status in ("deleting", "deleted"):
        raise Problem(409, "already_deleting", f"{kind.capitalize()} is {status}",
                      f"{kind} {doc['_id']} is {status}", current_status=status)
    try:
        await services.db.delete_requests.insert_one(new_delete_request(collection, doc, principal.subject))
    except Exception as exc:
        if not is_duplicate_key(exc):
            raise
        raise Problem(409, "already_deleting", f"{kind.capitalize()} is being deleted",
                      f"a delete of {kind} {doc['_id']} is already under way", current_status=status) from None
    if collection == "instances":  # its agent's token stops working now here, within seconds elsewhere
        await revoke(services.db, doc["_id"], doc.get("agent_jti_hash"), "delete")
        services.agent_revocations.add(doc.get("agent_jti_hash"))
    await services.events.add(doc.get("instance_id") or doc["_id"], "delete.requested",
                              f"delete of {kind} {doc['_id']} requested while {status}", step="delete")
    return doc


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return value.isoformat().replace("+00:00", "Z") if hasattr(value, "isoformat") else str(value)


def _health_of(doc: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """A stopped VM's agent is not expected to report: its health says stopped, not stale (the figures of
    its last sample would describe a machine that is not running)."""
    if doc["status"] == S.STOPPED:
        return {"state": "stopped", "last_seen_at": summary.get("last_seen_at")}
    return summary
