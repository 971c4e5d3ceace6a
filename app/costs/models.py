"""What clients send about costs, budgets, prices and teams, and what they get back."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.auth.tokens import TEAM_PATTERN

GroupBy = Literal["instance", "provider", "region", "machine_type", "user", "team"]
TEAM_NAME = TEAM_PATTERN.pattern


class InstanceCost(BaseModel):
    to_date_usd: float = Field(description="everything the instance has cost since it was created (compute, disk, "
                                           "public IP)")
    month_to_date_usd: float = Field(description="since the current month began (UTC)")
    hourly_usd: float | None = Field(description="what it costs per hour now (0 once deleted); null when its "
                                                 "machine type has no known price")
    priced: bool = Field(description="false when part of its history had no known price (counted as 0)")


class BudgetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={
        "examples": [{"monthly_usd": 500, "warn_at_percent": 80, "on_exhausted": "stop"}]})

    monthly_usd: float = Field(gt=0, le=10_000_000, description="the budget for each calendar month (UTC), in USD")
    warn_at_percent: float | None = Field(default=None, gt=0, lt=100, description="an event and the webhook once "
                                          "spend reaches this share; default ONEBOX_BUDGET_WARN_PERCENT (80)")
    on_exhausted: Literal["stop", "delete"] = Field(default="stop", description="what happens to the running "
                                                    "instances once spend reaches 100 %")


class BudgetStatus(BaseModel):
    scope: Literal["user", "team"]
    name: str
    monthly_usd: float
    warn_at_percent: float
    on_exhausted: Literal["stop", "delete"]
    month: str = Field(description="YYYY-MM (UTC)")
    spent_usd: float = Field(description="spent this month by the budget's instances and snapshots")
    reserved_usd: float = Field(description="projected by accepted creates and starts and not spent yet")
    left_usd: float = Field(description="monthly_usd − spent − reserved, at least 0: what new requests may project")
    used_percent: float = Field(description="spent / monthly_usd × 100")
    hourly_usd: float = Field(description="what the budget's instances cost per hour right now")
    forecast_usd: float = Field(description="spent plus the current hourly rate until the month ends")
    state: Literal["ok", "warning", "exhausted"]
    updated_at: dt.datetime | None = None
    updated_by: str | None = None


class BudgetOverview(BaseModel):
    user: str
    team: str | None = Field(description="your team: an admin's assignment, else your token's team claim")
    month: str
    spent_usd: float = Field(description="what your own instances and snapshots cost this month")
    hourly_usd: float = Field(description="what they cost per hour right now")
    forecast_usd: float = Field(description="spent plus the current hourly rate until the month ends")
    budgets: list[BudgetStatus] = Field(description="your budget and your team's, where an admin set them")


class CostItem(BaseModel):
    period: str = Field(description="YYYY-MM-DD (day) or YYYY-MM (month), UTC")
    group: str
    label: str | None = Field(default=None, description="the instance's or snapshot's name (group_by=instance)")
    compute_usd: float
    disk_usd: float
    public_ip_usd: float
    snapshot_usd: float
    total_usd: float


class CostReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: dt.datetime = Field(alias="from")
    to: dt.datetime
    group_by: GroupBy
    granularity: Literal["day", "month"]
    currency: Literal["USD"] = "USD"
    total_usd: float
    hourly_usd: float = Field(description="what the report's instances and snapshots cost per hour at `to`: with "
                                          "total_usd, a forecast")
    items: list[CostItem]
    unpriced: list[str] = Field(description="provider/region/machine_type with no known price (counted as 0)")


class PriceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{"hourly_usd": 0.25}]})

    hourly_usd: float = Field(ge=0, le=100_000, description="compute price per hour from now on")


class PricePublic(BaseModel):
    provider: str
    region: str
    machine_type: str
    hourly_usd: float | None = Field(description="in force now; null when unknown")
    listed_hourly_usd: float | None = Field(description="the price sheet's")
    overridden: bool
    effective_from: dt.datetime | None = None
    set_by: str | None = None


class SheetPublic(BaseModel):
    provider: str
    as_of: str
    source: str
    basis_region: str
    disk_gb_month_usd: float
    public_ip_hourly_usd: float
    public_ip_while: Literal["running", "exists"]
    snapshot_gb_month_usd: float


class PricesPublic(BaseModel):
    sheets: list[SheetPublic]
    overrides: list[PricePublic]


class TeamMembership(BaseModel):
    team: str
    members: list[str] = Field(description="users an admin assigned to this team (token claims are not listed)")
