"""Which team a user belongs to, for team budgets and reports.

A team comes from the user's token (the ``team`` claim, ``ONEBOX_JWT_TEAM_CLAIM``: an identity
provider's group) or from an admin's assignment (``PUT /v1/admin/teams/{team}/members/{user}``).
The assignment wins: budgets are onebox's own rules, so an onebox admin must be able to correct a
membership the identity provider got wrong. A new instance records the team its owner is in at
that moment, so an instance keeps counting against the team that approved its cost even if its
owner moves on.
"""

from __future__ import annotations

from app.auth.tokens import Principal
from app.costs.repository import CostRepository


async def team_of(repo: CostRepository, principal: Principal) -> str | None:
    return await repo.assigned_team(principal.subject) or principal.team
