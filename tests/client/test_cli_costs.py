"""``onebox costs`` against the real cost reports: the table, --json and --csv (the server's own CSV)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from app.clock import utcnow
from app.ids import new_id


def test_costs_table_json_and_csv(live_server, cli):
    now = utcnow()
    start = now - dt.timedelta(hours=10)
    steps = [(start, "pending"), (start + dt.timedelta(hours=1), "provisioning"),
             (start + dt.timedelta(hours=2), "running"), (start + dt.timedelta(hours=7), "deleting"),
             (start + dt.timedelta(hours=7.5), "deleted")]
    transitions, previous = [], None
    for at, status in steps:
        transitions.append({"from": previous, "to": status, "at": at})
        previous = status
    live_server.call(live_server.services.db.instances.insert_one({
        "_id": new_id("i", at=start.timestamp()), "owner": "coster", "name": "spent", "provider": "aws",
        "region": "us-east-1", "machine_type": "t3.medium", "disk_gb": 73, "status": "deleted",
        "created_at": start, "updated_at": steps[-1][0], "transitions": transitions, "job": None}))
    # t3.medium 6 h computing ($0.0416/h + $0.005/h IP), disk 6.5 h at $0.008/h
    expected = 6 * (0.0416 + 0.005) + 6.5 * 0.008
    assert cli.invoke("login", "--url", live_server.url, "--token", live_server.mint("coster")).exit_code == 0
    window = ["--from", (start - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "--to", now.strftime("%Y-%m-%dT%H:%M:%SZ"), "--granularity", "month"]

    as_json = cli.invoke("costs", "--group-by", "provider", *window, "--json")
    assert as_json.exit_code == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert abs(report["total_usd"] - expected) < 1e-5
    table = cli.invoke("costs", "--group-by", "provider", *window)
    assert table.exit_code == 0 and "aws" in table.stdout and "TOTAL_USD" in table.stdout
    as_csv = cli.invoke("costs", "--group-by", "instance", *window, "--csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["label"], round(float(r["total_usd"]), 6)) for r in rows] == [("spent", round(expected, 6))]
