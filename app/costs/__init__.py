"""Spend control: what every instance and snapshot has cost, budgets checked before a create or a
start is queued, actions at thresholds, and reports.

Costs are never counted: ``ledger`` derives them from each record's recorded state ``transitions``
and the price sheets (``providers/prices.py``) with the admins' dated overrides (``prices``), so a
restarted onebox — or any API process — computes the same figures. ``budgets`` holds the monthly
budgets and the reservations that make the check before provisioning exact under concurrency;
``watch`` is the workers' periodic check of thresholds (events, audit records, the signed
``webhook``, and the stop or delete at 100 %); ``reports`` groups the ledger for ``GET /v1/costs``;
``metrics`` exports spend and budget use to Prometheus.
"""
