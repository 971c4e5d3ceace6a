"""``GET /metrics``: every process's counters, and the state read from the database at scrape time.

In multiprocess mode (``onebox serve``/``onebox worker``, see ``multiprocess``) the counters and
histograms of every process sharing the directory are added up from their files; otherwise
(tests, embedding) they are this process's own. Two families are not counted at all but read
when scraped, so every API process answers the same thing without any process keeping state:

* ``onebox_instances{provider, status}``: records per provider and status (``deleted`` ones
  excluded, they only grow), one aggregation of the ``instances`` collection within the request's
  database budget; every status the lifecycle knows is reported, 0 included, for each enabled
  provider, so an alert can tell "none" from "not scraped". When the database does not answer,
  the family is left out (and ``onebox_scrape_errors_total`` says so).
* ``onebox_build_info{version, python, deployment}``: always 1.

Other features add scrape-time families of their own by appending an async function of ``Services``
returning prometheus-client ``Metric`` families to ``SCRAPE_SOURCES`` (one line where the feature is
wired up): they join this one route and registry. One that fails is left out of that scrape, counted in
``onebox_scrape_errors_total``, and does not cost the others.
"""

from __future__ import annotations

import asyncio
import hmac
import importlib.metadata
import logging
import platform
from typing import Annotated, Awaitable, Callable

from fastapi import Depends, Request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app.lifecycle.states import InstanceStatus
from app.observability.metrics import NAMESPACE
from app.observability.multiprocess import shared_directory
from app.problems import Problem
from app.services import Services

log = logging.getLogger("onebox.observability")

SCRAPE_ERRORS = Counter("scrape_errors", "Scrapes that left a scrape-time family out (onebox_instances when the "
                        "database did not answer, or a feature's gauges that failed).", namespace=NAMESPACE)
# The hook for other features' scrape-time gauges (costs: spend and budgets, app.costs.metrics.cost_families).
SCRAPE_SOURCES: list[Callable[[Services], Awaitable[list[Metric]]]] = []
COUNTED_STATUSES = [s.value for s in InstanceStatus if s is not InstanceStatus.DELETED]


def version() -> str:
    try:
        return importlib.metadata.version("onebox")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


async def instance_counts(services: Services) -> dict[tuple[str, str], int]:
    """Records per (provider, status), deleted ones left out."""
    pipeline = [{"$match": {"status": {"$in": COUNTED_STATUSES}}},
                {"$group": {"_id": {"provider": "$provider", "status": "$status"}, "n": {"$sum": 1}}}]
    cursor = await services.db.instances.aggregate(pipeline)
    return {(row["_id"]["provider"], row["_id"]["status"]): int(row["n"]) async for row in cursor}


class _State:
    """The families read at scrape time, as a collector of one scrape's registry."""

    def __init__(self, providers: list[str], counts: dict[tuple[str, str], int] | None, deployment: str) -> None:
        self.providers, self.counts, self.deployment = providers, counts, deployment

    def collect(self):
        build = GaugeMetricFamily(f"{NAMESPACE}_build_info", "The running onebox: version, Python and the "
                                  "deployment id it tags cloud resources with (always 1).",
                                  labels=["version", "python", "deployment"])
        build.add_metric([version(), platform.python_version(), self.deployment], 1)
        yield build
        if self.counts is None:
            return
        instances = GaugeMetricFamily(f"{NAMESPACE}_instances", "Instance records by provider and status "
                                      "(deleted ones excluded), read from the database at scrape time.",
                                      labels=["provider", "status"])
        keys = {(p, s) for p in self.providers for s in COUNTED_STATUSES} | set(self.counts)
        for provider, status in sorted(keys):
            instances.add_metric([provider, status], self.counts.get((provider, status), 0))
        yield instances


class _Families:
    """Families computed for one scrape."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self):
        return self.families


class _ThisProcess:
    """This process's own metrics (when counters are not shared through files)."""

    def collect(self):
        return REGISTRY.collect()


async def render(services: Services) -> tuple[bytes, str]:
    try:
        counts = await instance_counts(services)
    except Exception as exc:  # noqa: BLE001 - counters are still worth answering while the database is away
        log.warning("metrics: cannot count instances: %s", type(exc).__name__)
        SCRAPE_ERRORS.inc()
        counts = None
    registry = CollectorRegistry(auto_describe=False)
    directory = shared_directory()
    if directory:
        MultiProcessCollector(registry, directory)
    else:
        registry.register(_ThisProcess())
    registry.register(_State(services.providers.enabled, counts, services.settings.deployment()))
    for source in SCRAPE_SOURCES:
        try:
            registry.register(_Families(await source(services)))
        except Exception as exc:  # noqa: BLE001 - one feature's gauges must not cost the whole scrape
            log.warning("metrics: %s failed: %s", getattr(source, "__qualname__", source), type(exc).__name__)
            SCRAPE_ERRORS.inc()
    body = await asyncio.to_thread(generate_latest, registry)  # reads one file per process and kind
    return body, CONTENT_TYPE_LATEST


async def scraper(request: Request) -> None:
    """Who may scrape: anyone, unless ``ONEBOX_PROMETHEUS_TOKEN`` is set; then its bearer only."""
    expected = request.app.state.services.settings.prometheus_token
    if expected is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                             expected.get_secret_value().encode()):
        raise Problem(401, "unauthorized", "Unauthorized", "GET /metrics needs the Prometheus bearer token",
                      headers={"WWW-Authenticate": "Bearer"})


Scraper = Annotated[None, Depends(scraper)]
