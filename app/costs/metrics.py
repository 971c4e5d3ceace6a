"""Spend and budget use as Prometheus gauges, computed from the ledger at scrape time.

Nothing is kept in any process: every scrape derives the figures from the records, as a report
does, so every API process answers the same and a restart loses nothing. Gauges (all USD, month =
the current calendar month, UTC):

* ``onebox_spend_month_to_date_usd{provider}`` and ``onebox_spend_hourly_usd{provider}``: what
  every instance and snapshot cost this month, and costs per hour now;
* ``onebox_budget_limit_usd{scope,name}``, ``onebox_budget_spent_usd{scope,name}``,
  ``onebox_budget_reserved_usd{scope,name}`` and ``onebox_budget_used_ratio{scope,name}`` (spent /
  limit; 1 = exhausted) for every budget.

To serve them from a ``GET /metrics`` of its own registry (prometheus-client, multiprocess or not),
a scrape reads them first, then registers them — one line in an async handler:

    registry.register(await CostCollector.read(services))

``CostCollector.read`` never raises: when the database does not answer, the collector is empty
(and the rest of the scrape is still served). Until such an endpoint exists, ``exposition`` below
serves the interim admin-only ``GET /metrics`` of ``app.api.costs``.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from app.clock import utcnow
from app.costs import ledger
from app.costs.budgets import BudgetKeeper
from app.costs.repository import CostRepository

log = logging.getLogger("onebox.costs.metrics")


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
    for budget in await repo.all_budgets():
        st = await keeper.standing(budget, book, now)
        labels = [budget["scope"], budget["name"]]
        limit.add_metric(labels, st.monthly_usd)
        used.add_metric(labels, st.spent_usd)
        reserved.add_metric(labels, st.reserved_usd)
        ratio.add_metric(labels, st.used_percent / 100)
    return [month_to_date, per_hour, limit, used, reserved, ratio]


class CostCollector:
    """The cost gauges of one scrape, read from the ledger beforehand (a collector's ``collect`` is not
    async), for any ``CollectorRegistry``."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    @classmethod
    async def read(cls, services) -> "CostCollector":
        try:
            return cls(await cost_families(services))
        except Exception as exc:  # noqa: BLE001 - the scrape's other metrics are still worth answering
            log.warning("metrics: cannot read the cost gauges: %s", type(exc).__name__)
            return cls([])

    def collect(self):
        return iter(self.families)


async def exposition(services) -> tuple[bytes, str]:
    """The interim ``GET /metrics`` answer: this process's default metrics, then the cost gauges."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(await CostCollector.read(services))
    return generate_latest(REGISTRY) + generate_latest(registry), CONTENT_TYPE_LATEST
