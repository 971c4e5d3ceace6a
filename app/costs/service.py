"""The rules of costs: who sees which figures, how budgets are checked, how admins set prices.

Every figure is computed on demand from the records (``app.costs.ledger``): reports, an
instance's cost, a budget's standing. The check before a create is ``check_create``, called by
``InstanceService.create`` before it stores the record; ``check_start`` is the same for a start.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from app.auth.tokens import Principal
from app.clock import as_utc, utcnow
from app.cloud import UnknownProvider
from app.costs import ledger, reports
from app.costs.budgets import BudgetKeeper, Projection, Standing, horizon, price_unknown, round_usd
from app.costs.ledger import Record
from app.costs.models import (BudgetOverview, BudgetStatus, CostItem, CostReport, InstanceCost, PricePublic,
                              PricesPublic, SheetPublic)
from app.costs.prices import Override, PriceBook
from app.costs.repository import CostRepository
from app.costs.teams import team_of
from app.lifecycle.specs import DEFAULT_DISK_GB
from app.policies.rules import ttl_deadline
from app.policies.service import LifecycleSettings, PolicyService
from app.problems import Problem, field_problem, not_found
from app.services import Services
from providers.base import ProviderError
from providers.prices import SHEETS

MAX_REPORT_DAYS = 366
MAX_DAILY_REPORT_DAYS = 93


class CostService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings
        self.repo = CostRepository(services.db)
        self.keeper = BudgetKeeper(self.repo)

    # --- budgets before a create or a start ------------------------------------------------------
    async def check_create(self, principal: Principal, body: Any, instance_id: str) -> tuple[str | None, list[str]]:
        """The owner's team, and the reservations made for this create in the owner's and the team's
        budgets; 402 when it does not fit one of them."""
        team = await team_of(self.repo, principal)
        budgets = await self.repo.budgets_for(principal.subject, team)
        if not budgets:
            return team, []
        now = utcnow()
        record = Record(id=instance_id, kind="instance", provider=body.provider, region=body.region,
                        machine_type=body.machine_type, disk_gb=body.disk_gb or DEFAULT_DISK_GB,
                        owner=principal.subject, transitions=())
        own = {"ttl_seconds": getattr(body, "ttl_seconds", None), "expires_at": getattr(body, "expires_at", None),
               "ttl_set_at": now}
        book = await self.repo.price_book()
        projection = self._projection(record, book, await self._run_deadline(principal.subject, own, now, now), now)
        return team, await self.keeper.reserve(budgets, book, instance_id, "create", projection)

    async def check_start(self, doc: dict[str, Any]) -> list[str]:
        """Before a start is queued: the same check for the instance's owner and team (its record's);
        402 ``budget_exceeded`` when it does not fit, which an exhausted budget never does."""
        budgets = await self.repo.budgets_for(doc["owner"], doc.get("team"))
        if not budgets:
            return []
        now = utcnow()
        own = await LifecycleSettings(self.services).get(doc["_id"])
        book = await self.repo.price_book()
        deadline = await self._run_deadline(doc["owner"], own, as_utc(doc["created_at"]), now)
        projection = self._projection(Record.from_doc(doc, "instance"), book, deadline, now)
        return await self.keeper.reserve(budgets, book, doc["_id"], "start", projection)

    async def _run_deadline(self, owner: str, own: dict[str, Any], created_at: dt.datetime,
                            now: dt.datetime) -> dt.datetime | None:
        """When the TTL would end a run starting now: the instance's own TTL under its owner's policy
        (``app.policies.rules.ttl_deadline``, the scheduler's own reading), or None without one."""
        policy = await PolicyService(self.services).effective(owner)
        run = {"created_at": created_at, "transitions": [{"from": "starting", "to": "running", "at": now}]}
        deadline, _ = ttl_deadline(run, own, policy, self.settings.policy_time_scale)
        return deadline

    def _projection(self, record: Record, book: PriceBook, deadline: dt.datetime | None, now: dt.datetime) -> Projection:
        rate = ledger.running_rate(record, book, now)
        if rate is None:
            raise price_unknown(record.provider, record.region, record.machine_type or "")
        hours, basis = horizon(self.settings.budget_min_horizon_hours, now, expires_at=deadline)
        return Projection(rate, hours, basis)

    async def give_back(self, reservations: list[str]) -> None:
        """The create or start these were made for did not happen."""
        await self.keeper.void(reservations)

    # --- what things cost -------------------------------------------------------------------------
    async def instance_costs(self, docs: list[dict[str, Any]]) -> dict[str, InstanceCost]:
        book = await self.repo.price_book()
        now = utcnow()
        month = ledger.month_start(now)
        out = {}
        for doc in docs:
            record = Record.from_doc(doc, "instance")
            items = ledger.segments(record, book, now)
            live = doc["status"] not in ("deleted",)
            rate = ledger.running_rate(record, book, now) if live else 0.0
            out[doc["_id"]] = InstanceCost(
                to_date_usd=round_usd(ledger.total(items, as_utc(doc["created_at"]), now)),
                month_to_date_usd=round_usd(ledger.total(items, month, now)),
                hourly_usd=None if rate is None else round_usd(ledger.hourly_now(items)),
                priced=all(s.priced for s in items) and rate is not None)
        return out

    async def report(self, principal: Principal, start: dt.datetime | None, end: dt.datetime | None,
                     group_by: str, granularity: str, owner: str | None = None,
                     team: str | None = None) -> CostReport:
        now = utcnow()
        end = min(as_utc(end), now) if end else now
        start = as_utc(start) if start else ledger.month_start(now)
        if start >= end:
            raise field_problem("from", "must be before `to` (and before now)")
        if end - start > dt.timedelta(days=MAX_REPORT_DAYS):
            raise field_problem("from", f"a report spans at most {MAX_REPORT_DAYS} days")
        if granularity == "day" and end - start > dt.timedelta(days=MAX_DAILY_REPORT_DAYS):
            raise field_problem("granularity", f"daily reports span at most {MAX_DAILY_REPORT_DAYS} days; "
                                               "use granularity=month")
        match: dict[str, Any] = {}
        if not principal.is_admin:
            match["owner"] = principal.subject  # users see their own; admins everyone's
        elif owner:
            match["owner"] = owner
        if team:
            match["team"] = team
        records = await self.repo.records(match, start, end)
        book = await self._book()
        items = [s for r in records for s in ledger.segments(r, book, now) if s.end > start and s.start < end]
        rows = reports.rows(items, start, end, group_by, granularity)
        return CostReport(from_=start, to=end, group_by=group_by, granularity=granularity,
                          total_usd=round_usd(ledger.total(items, start, end)),
                          hourly_usd=round_usd(ledger.rate_at(items, end)),
                          items=[CostItem(**reports.rounded(r)) for r in rows], unpriced=reports.unpriced(items))

    async def _book(self) -> PriceBook:
        if not hasattr(self, "_cached_book"):
            self._cached_book = await self.repo.price_book()
        return self._cached_book

    # --- budgets ----------------------------------------------------------------------------------
    def status(self, st: Standing) -> BudgetStatus:
        b = st.budget
        warn = b.get("warn_at_percent") or self.settings.budget_warn_percent
        return BudgetStatus(scope=b["scope"], name=b["name"], monthly_usd=st.monthly_usd, warn_at_percent=warn,
                            on_exhausted=b.get("on_exhausted", "stop"), month=st.month,
                            spent_usd=round_usd(st.spent_usd), reserved_usd=round_usd(st.reserved_usd),
                            left_usd=round_usd(st.left_usd), used_percent=round(st.used_percent, 3),
                            hourly_usd=round_usd(st.hourly_usd), forecast_usd=round_usd(st.forecast_usd),
                            state=st.state(warn), updated_at=b.get("updated_at"), updated_by=b.get("updated_by"))

    async def budget_status(self, scope: str, name: str) -> BudgetStatus:
        budget = await self.repo.budget(scope, name)
        if budget is None:
            raise not_found(f"{scope} budget", name)
        return self.status(await self.keeper.standing(budget, await self._book()))

    async def all_budgets(self) -> list[BudgetStatus]:
        book = await self._book()
        return [self.status(await self.keeper.standing(b, book)) for b in await self.repo.all_budgets()]

    async def put_budget(self, admin: Principal, scope: str, name: str, values: dict[str, Any]) -> BudgetStatus:
        await self.repo.put_budget(scope, name, values, admin.subject)
        return await self.budget_status(scope, name)

    async def delete_budget(self, scope: str, name: str) -> None:
        if not await self.repo.delete_budget(scope, name):
            raise not_found(f"{scope} budget", name)

    async def overview(self, principal: Principal) -> BudgetOverview:
        now = utcnow()
        team = await team_of(self.repo, principal)
        book = await self._book()
        month = ledger.month_start(now)
        records = await self.repo.records({"owner": principal.subject}, month, now)
        items = [s for r in records for s in ledger.segments(r, book, now)]
        spent, hourly = ledger.total(items, month, now), ledger.hourly_now(items)
        hours_left = (ledger.next_month(now) - now).total_seconds() / 3600
        budgets = [self.status(await self.keeper.standing(b, book, now))
                   for b in await self.repo.budgets_for(principal.subject, team)]
        return BudgetOverview(user=principal.subject, team=team, month=month.strftime("%Y-%m"),
                              spent_usd=round_usd(spent), hourly_usd=round_usd(hourly),
                              forecast_usd=round_usd(spent + hourly * hours_left), budgets=budgets)

    # --- prices -----------------------------------------------------------------------------------
    async def _check_priceable(self, provider: str, region: str, machine_type: str) -> None:
        registry = self.services.providers
        try:
            catalog = await registry.catalog(provider)
        except UnknownProvider:
            raise field_problem("provider", f"'{provider}' is not enabled here; enabled: {', '.join(registry.enabled)}") from None
        except ProviderError as exc:
            raise Problem(503, "catalog_unavailable", "Provider catalog unavailable", exc.message,
                          headers={"Retry-After": "10"}) from None
        if region not in catalog.regions:
            raise field_problem("region", f"unknown region '{region}' for {provider}")
        if machine_type not in catalog.regions[region].machine_types:
            raise field_problem("machine_type", f"unknown machine type '{machine_type}' in {provider}/{region}")

    async def set_price(self, admin: Principal, provider: str, region: str, machine_type: str,
                        hourly_usd: float | None) -> PricePublic:
        await self._check_priceable(provider, region, machine_type)
        await self.repo.add_override(Override(provider, region, machine_type, hourly_usd, utcnow(), admin.subject))
        return self._price(await self.repo.price_book(), provider, region, machine_type)

    @staticmethod
    def _price(book: PriceBook, provider: str, region: str, machine_type: str) -> PricePublic:
        now = utcnow()
        overrides = {o.key: o for o in book.overrides()}
        current = overrides.get((provider, region, machine_type))
        return PricePublic(provider=provider, region=region, machine_type=machine_type,
                           hourly_usd=book.hourly_at(provider, region, machine_type, now),
                           listed_hourly_usd=book.sheet(provider).hourly_usd.get(
                               machine_type, book.sheet(provider).unlisted_hourly_usd),
                           overridden=current is not None,
                           effective_from=current.effective_from if current else None,
                           set_by=current.set_by if current else None)

    async def prices(self) -> PricesPublic:
        book = await self.repo.price_book()
        sheets = [SheetPublic(provider=s.provider, as_of=s.as_of, source=s.source, basis_region=s.basis_region,
                              disk_gb_month_usd=s.disk_gb_month_usd, public_ip_hourly_usd=s.public_ip_hourly_usd,
                              public_ip_while=s.public_ip_while, snapshot_gb_month_usd=s.snapshot_gb_month_usd)
                  for s in SHEETS.values()]
        return PricesPublic(sheets=sheets, overrides=[self._price(book, *o.key) for o in book.overrides()])

    async def current_hourly(self, provider: str, region: str, machine_type: str) -> float | None:
        """For the catalog: the price in force now (an admin's, else the sheet's)."""
        return (await self._book()).hourly_at(provider, region, machine_type, utcnow())

    # --- teams ------------------------------------------------------------------------------------
    async def assign(self, admin: Principal, team: str, user: str) -> list[str]:
        await self.repo.assign_team(user, team, admin.subject)
        return await self.repo.team_members(team)

    async def members(self, team: str) -> list[str]:
        return await self.repo.team_members(team)

    async def unassign(self, team: str, user: str) -> None:
        if not await self.repo.unassign_team(user, team):
            raise not_found("team member", f"{user} in {team}")
