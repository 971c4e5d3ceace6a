"""The scheduler: the actions onebox takes by itself, decided in one process at a time.

Every ``scheduler_interval_seconds`` each worker tries to win the interval's slot (``scheduler:<n>``,
``app.worker.slots``, as the reaper does); the winner runs every check of ``CHECKS`` once. A check decides
and files requests — action requests and delete requests, the queues users' own requests go through — and
never writes a record a job may hold, so an automatic action and a user's never race. A check that fails is
logged and does not keep the others from running; the next pass tries again.

Checks: ``policies`` (``app.policies.checks``: TTL with its warnings, idle autostop, stopped-then-deleted).
A new kind of automatic action (budgets, say) is one more entry here; it files its actions as
``app.policies.checks`` does — ``file_action_request(db, instance, "stop", <actor>, rule=…, reason=…)``
(``app.lifecycle.action_requests``) or ``file_delete_request(services, instance, <actor>, rule=…,
reason=…)`` (``app.lifecycle.delete_requests``), then ``audit_policy_request`` and an event — and every
request naming a ``rule`` gets its audit record with ``<actor>`` as the actor, exactly once.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable

from app.policies.checks import check_policies
from app.services import Services
from app.worker.slots import acquire_slot, release_slot

log = logging.getLogger("onebox.scheduler")

Check = Callable[[Services], Awaitable[Any]]
CHECKS: list[tuple[str, Check]] = [("policies", check_policies)]


class Scheduler:
    def __init__(self, services: Services, owner: str, checks: list[tuple[str, Check]] | None = None) -> None:
        self.services = services
        self.owner = owner
        self.checks = CHECKS if checks is None else checks

    async def run_once(self) -> dict[str, Any] | None:
        """One pass if this process wins the current slot: each check's report (None for one that failed);
        None when another process has the slot."""
        claims = self.services.db.claims
        slot = await acquire_slot(claims, "scheduler", self.services.settings.scheduler_interval_seconds, self.owner)
        if slot is None:
            return None
        reports: dict[str, Any] = {}
        try:
            for name, check in self.checks:
                try:
                    reports[name] = await check(self.services)
                except Exception:  # noqa: BLE001 - the other checks still run; this one runs again next pass
                    log.exception("scheduler check %s failed", name)
                    reports[name] = None
        finally:
            await release_slot(claims, slot)
        return reports
