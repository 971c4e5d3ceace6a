"""The audit log: who created, deleted or snapshotted what, when, and from where.

Kept in its own collection (insert-only) and readable by admins
(``GET /v1/admin/audit``). It records ids and actions, never request bodies,
so no secret can reach it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.auth.deps import CurrentUser
from app.auth.tokens import Principal
from app.clock import utcnow
from app.db import is_duplicate_key


class AuditLog:
    def __init__(self, request: Request, principal: Principal) -> None:
        self.collection = request.app.state.services.db.audit
        self.principal = principal
        self.address = request.client.host if request.client else None

    async def record(self, action: str, target_type: str, target_id: str, **detail: str) -> None:
        await self.collection.insert_one(_entry(self.principal.subject, self.principal.role, action, target_type,
                                                target_id, self.address, detail))


def _entry(actor: str, role: str, action: str, target_type: str, target_id: str, address: str | None,
           detail: dict[str, str]) -> dict:
    return {"at": utcnow(), "actor": actor, "role": role, "action": action, "target_type": target_type,
            "target_id": target_id, "address": address, "detail": detail or None}


async def record_system_action(db, actor: str, action: str, target_type: str, target_id: str,
                               entry_id: str | None = None, **detail: str) -> None:
    """An action onebox took by itself (the reaper, a policy), in the same log as the users' own. With
    ``entry_id`` the entry is written at most once, however often this is called (after a crash, say)."""
    entry = _entry(actor, "system", action, target_type, target_id, None, detail)
    if entry_id is None:
        await db.audit.insert_one(entry)
        return
    try:
        await db.audit.insert_one({"_id": entry_id, **entry})
    except Exception as exc:
        if not is_duplicate_key(exc):
            raise


async def audit_log(request: Request, user: CurrentUser) -> AuditLog:
    return AuditLog(request, user)


Audit = Annotated[AuditLog, Depends(audit_log)]
