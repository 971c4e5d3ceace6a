"""Spend and budget use as Prometheus gauges, computed from the ledger at scrape time.

Nothing is kept in any process: every scrape derives the figures from the records, as a report
does, so every API process answers the same and a restart loses nothing. Gauges (all USD, month =
the current calendar month, UTC):

* ``onebox_spend_month_to_date_usd{provider}`` and ``onebox_spend_hourly_usd{provider}``: what
  every instance and snapshot cost this month, and costs per hour now;
* ``onebox_budget_limit_usd{scope,name}``, ``onebox_budget_spent_usd{scope,name}``,
  ``onebox_budget_reserved_usd{scope,name}`` and ``onebox_budget_used_ratio{scope,name}`` (spent /
  limit; 1 = exhausted) for every budget.

They join the one ``GET /metrics`` as a scrape-time source (``app.observability.service.SCRAPE_SOURCES``,
registered in ``app.main``); when the database does not answer, that scrape leaves them out and counts
``onebox_scrape_errors_total``. The budget gauges name users and teams, so they are served only when
``/metrics`` is guarded (``ONEBOX_PROMETHEUS_TOKEN``); the spend by provider always is.
"""

from __future__ import annotations

from collections import defaultdict

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from app.clock import utcnow
from app.costs import ledger
from app.costs.budgets import BudgetKeeper
from app.costs.repository import CostRepository

async def cost_families(services) -> list[Metric]:
    repo = CostRepository(services.db)
    keeper = BudgetKeeper(repo)
    book = await repo.price_book()
    now = utcnow()
    month = ledger.month_start(now)
    items = [s for r in await repo.records({}, month, now) for s in ledger.segments(r, book, now)]
    spent, hourly = defaultdict(float), defaultdict(float)
    for s in items:
        spent[s.record.provider] += s.usd_between(month, now)
        if s.current:
            hourly[s.record.provider] += s.usd_per_hour
    month_to_date = GaugeMetricFamily("onebox_spend_month_to_date_usd", "What instances and snapshots cost this "
                                      "calendar month (UTC), by provider, from the ledger.", labels=["provider"])
    per_hour = GaugeMetricFamily("onebox_spend_hourly_usd", "What instances and snapshots cost per hour now, by "
                                 "provider.", labels=["provider"])
    for provider in sorted(set(spent) | set(hourly)):
        month_to_date.add_metric([provider], spent[provider])
        per_hour.add_metric([provider], hourly[provider])
    limit = GaugeMetricFamily("onebox_budget_limit_usd", "A budget's monthly limit.", labels=["scope", "name"])
    used = GaugeMetricFamily("onebox_budget_spent_usd", "What a budget's instances and snapshots cost this month.",
                             labels=["scope", "name"])
    reserved = GaugeMetricFamily("onebox_budget_reserved_usd", "Projected by accepted creates and starts, not spent "
                                 "yet.", labels=["scope", "name"])
    ratio = GaugeMetricFamily("onebox_budget_used_ratio", "Spent / limit (1 = exhausted).", labels=["scope", "name"])
    if services.settings.prometheus_token is None:  # an open endpoint names nobody
        return [month_to_date, per_hour]
    for budget in await repo.all_budgets():
        st = await keeper.standing(budget, book, now)
        labels = [budget["scope"], budget["name"]]
        limit.add_metric(labels, st.monthly_usd)
        used.add_metric(labels, st.spent_usd)
        reserved.add_metric(labels, st.reserved_usd)
        ratio.add_metric(labels, st.used_percent / 100)
    return [month_to_date, per_hour, limit, used, reserved, ratio]
