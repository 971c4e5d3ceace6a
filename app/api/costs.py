"""HTTP routes for costs: reports and budgets for users; budgets, prices and teams for admins."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Path, Query, Response

from app.api.deps import PROBLEM_RESPONSES, Costs, DeadlineRoute
from app.audit import Audit
from app.auth.deps import AdminUser, CurrentUser
from app.costs import reports
from app.instances.models import ProviderName
from app.costs.models import (TEAM_NAME, BudgetOverview, BudgetStatus, BudgetUpdate, CostReport, GroupBy,
                              PricePublic, PricesPublic, PriceUpdate, TeamMembership)

router = APIRouter(route_class=DeadlineRoute, prefix="/v1", tags=["costs"], responses=PROBLEM_RESPONSES)
admin_router = APIRouter(route_class=DeadlineRoute, prefix="/v1/admin", tags=["admin"],
                         responses={**PROBLEM_RESPONSES, 403: {"description": "not an admin"}})

UserName = Annotated[str, Path(min_length=1, max_length=200)]
TeamName = Annotated[str, Path(pattern=TEAM_NAME)]
Part = Annotated[str, Path(min_length=1, max_length=64)]
CSV = "text/csv"


@router.get("/costs", response_model=CostReport, operation_id="cost_report",
            responses={200: {"description": "the report; CSV with `Accept: text/csv` (the same rows)",
                             "content": {CSV: {}}}})
async def cost_report(
    user: CurrentUser,
    costs: Costs,
    start: Annotated[dt.datetime | None, Query(alias="from", description="ISO date or time (UTC); default: the "
                                               "start of this month")] = None,
    end: Annotated[dt.datetime | None, Query(alias="to", description="ISO date or time (UTC); default: now")] = None,
    group_by: GroupBy = "provider",
    granularity: Literal["day", "month"] = "day",
    owner: Annotated[str | None, Query(max_length=200, description="admins only: one user's costs")] = None,
    team: Annotated[str | None, Query(pattern=TEAM_NAME, description="only the instances of this team")] = None,
    accept: Annotated[str | None, Header()] = None,
):
    """What your instances and snapshots cost, per period and group (admins: everyone's). Compute, disk,
    public IP and snapshot storage are reported apart, derived from each record's state history."""
    report = await costs.report(user, start, end, group_by, granularity, owner=owner, team=team)
    if accept and CSV in accept.lower():
        name = f"onebox-costs-{report.from_.date()}-{report.to.date()}-{group_by}-{granularity}.csv"
        return Response(reports.to_csv(i.model_dump() for i in report.items), media_type=f"{CSV}; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return report


@router.get("/budget", response_model=BudgetOverview, operation_id="my_budget")
async def my_budget(user: CurrentUser, costs: Costs) -> BudgetOverview:
    """Your spend this month, its forecast to the month's end, and your and your team's budgets."""
    return await costs.overview(user)


# --- admins: budgets -------------------------------------------------------------------------------

@admin_router.get("/budgets", response_model=list[BudgetStatus], operation_id="list_budgets")
async def list_budgets(admin: AdminUser, costs: Costs) -> list[BudgetStatus]:
    return await costs.all_budgets()


@admin_router.get("/budgets/users/{user}", response_model=BudgetStatus, operation_id="get_user_budget")
async def get_user_budget(user: UserName, admin: AdminUser, costs: Costs) -> BudgetStatus:
    return await costs.budget_status("user", user)


@admin_router.put("/budgets/users/{user}", response_model=BudgetStatus, operation_id="set_user_budget")
async def set_user_budget(user: UserName, body: BudgetUpdate, admin: AdminUser, costs: Costs,
                          audit: Audit) -> BudgetStatus:
    """A monthly budget for one user's instances and snapshots, checked before each create and start."""
    status = await costs.put_budget(admin, "user", user, body.model_dump())
    await audit.record("budget.set", "budget", f"user:{user}", monthly_usd=str(body.monthly_usd))
    return status


@admin_router.delete("/budgets/users/{user}", status_code=204, operation_id="delete_user_budget")
async def delete_user_budget(user: UserName, admin: AdminUser, costs: Costs, audit: Audit) -> Response:
    await costs.delete_budget("user", user)
    await audit.record("budget.delete", "budget", f"user:{user}")
    return Response(status_code=204)


@admin_router.get("/budgets/teams/{team}", response_model=BudgetStatus, operation_id="get_team_budget")
async def get_team_budget(team: TeamName, admin: AdminUser, costs: Costs) -> BudgetStatus:
    return await costs.budget_status("team", team)


@admin_router.put("/budgets/teams/{team}", response_model=BudgetStatus, operation_id="set_team_budget")
async def set_team_budget(team: TeamName, body: BudgetUpdate, admin: AdminUser, costs: Costs,
                          audit: Audit) -> BudgetStatus:
    """A monthly budget for the instances and snapshots of a team's members."""
    status = await costs.put_budget(admin, "team", team, body.model_dump())
    await audit.record("budget.set", "budget", f"team:{team}", monthly_usd=str(body.monthly_usd))
    return status


@admin_router.delete("/budgets/teams/{team}", status_code=204, operation_id="delete_team_budget")
async def delete_team_budget(team: TeamName, admin: AdminUser, costs: Costs, audit: Audit) -> Response:
    await costs.delete_budget("team", team)
    await audit.record("budget.delete", "budget", f"team:{team}")
    return Response(status_code=204)


# --- admins: prices and teams -----------------------------------------------------------------------

@admin_router.get("/prices", response_model=PricesPublic, operation_id="list_prices")
async def list_prices(admin: AdminUser, costs: Costs) -> PricesPublic:
    """The price sheets (dated, with their sources) and the overrides in force."""
    return await costs.prices()


@admin_router.put("/prices/{provider}/{region}/{machine_type}", response_model=PricePublic, operation_id="set_price")
async def set_price(provider: ProviderName, region: Part, machine_type: Part, body: PriceUpdate, admin: AdminUser,
                    costs: Costs, audit: Audit) -> PricePublic:
    """Price one machine type in one region from now on (hours before keep the price they had)."""
    price = await costs.set_price(admin, provider, region, machine_type, body.hourly_usd)
    await audit.record("price.set", "price", f"{provider}/{region}/{machine_type}", hourly_usd=str(body.hourly_usd))
    return price


@admin_router.delete("/prices/{provider}/{region}/{machine_type}", response_model=PricePublic,
                     operation_id="unset_price")
async def unset_price(provider: ProviderName, region: Part, machine_type: Part, admin: AdminUser, costs: Costs,
                      audit: Audit) -> PricePublic:
    """Back to the price sheet's price from now on."""
    price = await costs.set_price(admin, provider, region, machine_type, None)
    await audit.record("price.unset", "price", f"{provider}/{region}/{machine_type}")
    return price


@admin_router.get("/teams/{team}", response_model=TeamMembership, operation_id="get_team")
async def get_team(team: TeamName, admin: AdminUser, costs: Costs) -> TeamMembership:
    return TeamMembership(team=team, members=await costs.members(team))


@admin_router.put("/teams/{team}/members/{user}", response_model=TeamMembership, operation_id="add_team_member")
async def add_team_member(team: TeamName, user: UserName, admin: AdminUser, costs: Costs,
                          audit: Audit) -> TeamMembership:
    """Put a user in a team (one team per user; this wins over a token's team claim)."""
    members = await costs.assign(admin, team, user)
    await audit.record("team.assign", "user", user, team=team)
    return TeamMembership(team=team, members=members)


@admin_router.delete("/teams/{team}/members/{user}", status_code=204, operation_id="remove_team_member")
async def remove_team_member(team: TeamName, user: UserName, admin: AdminUser, costs: Costs, audit: Audit) -> Response:
    await costs.unassign(team, user)
    await audit.record("team.unassign", "user", user, team=team)
    return Response(status_code=204)
