"""Prices as the ledger reads them: the dated sheets of ``providers/prices.py``, and admins' overrides.

An admin prices one machine type in one region with ``PUT /v1/admin/prices/{provider}/{region}/
{machine_type}``; that is how an on-premises team charges for its local machines, which are free
otherwise. An override takes effect when it is set and is appended, never edited (``DELETE``
appends a return to the sheet's price), so the ledger charges every hour at the price in force
during that hour and the figures of a past month never move when a price changes. This module is
pure: the overrides are read by ``app.costs.repository`` and handed to a ``PriceBook``.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from providers.prices import PriceSheet, sheet_for

PriceKey = tuple[str, str, str]  # (provider, region, machine type)


@dataclass(frozen=True)
class Override:
    """From ``effective_from`` on, this machine type in this region costs ``hourly_usd`` (None: the sheet's)."""

    provider: str
    region: str
    machine_type: str
    hourly_usd: float | None
    effective_from: dt.datetime
    set_by: str | None = None

    @property
    def key(self) -> PriceKey:
        return (self.provider, self.region, self.machine_type)


@dataclass(frozen=True)
class Piece:
    """A stretch of time at one compute price (None: no price is known)."""

    start: dt.datetime
    end: dt.datetime
    hourly_usd: float | None


class PriceBook:
    def __init__(self, overrides: Iterable[Override] = ()) -> None:
        history: dict[PriceKey, list[Override]] = defaultdict(list)
        for override in overrides:
            history[override.key].append(override)
        self._history = {key: sorted(items, key=lambda o: o.effective_from) for key, items in history.items()}

    @staticmethod
    def sheet(provider: str) -> PriceSheet:
        return sheet_for(provider)

    def _listed(self, provider: str, machine_type: str) -> float | None:
        sheet = self.sheet(provider)
        return sheet.hourly_usd.get(machine_type, sheet.unlisted_hourly_usd)

    def hourly_at(self, provider: str, region: str, machine_type: str, at: dt.datetime) -> float | None:
        """The compute price in force at ``at``."""
        price = self._listed(provider, machine_type)
        for override in self._history.get((provider, region, machine_type), ()):
            if override.effective_from > at:
                break
            price = override.hourly_usd if override.hourly_usd is not None else self._listed(provider, machine_type)
        return price

    def compute_pieces(self, provider: str, region: str, machine_type: str, start: dt.datetime,
                       end: dt.datetime) -> list[Piece]:
        """``[start, end)`` cut where the compute price changes."""
        cuts = [o.effective_from for o in self._history.get((provider, region, machine_type), ())
                if start < o.effective_from < end]
        bounds = [start, *cuts, end]
        return [Piece(a, b, self.hourly_at(provider, region, machine_type, a)) for a, b in zip(bounds, bounds[1:])
                if b > a]

    def overrides(self) -> list[Override]:
        """Every override in force now, one per key (the last set), returns to the sheet left out."""
        current = [items[-1] for items in self._history.values()]
        return sorted((o for o in current if o.hourly_usd is not None), key=lambda o: o.key)
