"""``onebox costs``: spend reports from ``GET /v1/costs`` (servers with cost reports).

A sub-app whose callback is the command (``invoke_without_command``), so it reads
``onebox costs --group-by provider`` today and can grow subcommands (``onebox costs budget``) later.
The report's rows are printed as a table of whatever scalar columns the server sends, totals as
``key  value`` lines, so the command keeps working as the report gains fields.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from app.client.errors import ApiError, CliError
from app.client.http import connect
from app.client.options import JsonOption
from app.client.output import Output

app = typer.Typer(rich_help_panel="Costs", invoke_without_command=True)
ROW_KEYS = ("items", "rows", "groups", "series")


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


def _cell(value: Any) -> str:
    if isinstance(value, float):  # money: cents, or more digits for the tiny sums of short runs
        return f"{value:,.2f}" if value == 0 or abs(value) >= 1 else f"{value:.4f}"
    return "" if value is None else str(value)


@app.callback()
def costs(
    ctx: typer.Context,
    group_by: Annotated[Optional[str], typer.Option(help="instance, provider, region, machine_type, user or team.")] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="Start date (YYYY-MM-DD or ISO 8601).")] = None,
    to: Annotated[Optional[str], typer.Option(help="End date (YYYY-MM-DD or ISO 8601).")] = None,
    granularity: Annotated[Optional[str], typer.Option(help="day or month.")] = None,
    owner: Annotated[Optional[str], typer.Option(help="Admins: one user's costs.")] = None,
    team: Annotated[Optional[str], typer.Option(help="Only this team's instances.")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="The report's rows as CSV, as the server writes them.")] = False,
    json_: JsonOption = False,
) -> None:
    """What your instances cost, grouped as asked."""
    if ctx.invoked_subcommand is not None:
        return
    out = Output(json_)
    params = {"group_by": group_by, "from": from_, "to": to, "granularity": granularity, "owner": owner,
              "team": team}
    with connect() as api:
        try:
            if csv:
                text = api.request("GET", "/v1/costs", params=params, headers={"Accept": "text/csv"}).text
                sys.stdout.write(text if text.endswith("\n") else text + "\n")
                return
            report = api.get("/v1/costs", **params)
        except ApiError as exc:
            if exc.status == 404 and not exc.problem.get("errors"):
                raise CliError(f"the server at {api.url} has no cost reports (GET /v1/costs answered 404)") from None
            raise
    if json_ or not isinstance(report, dict):
        out.json(report)
        return
    key = next((k for k in ROW_KEYS if isinstance(report.get(k), list)), None)
    rows = [r for r in report.get(key, []) if isinstance(r, dict)] if key else []
    columns: list[str] = []
    for row in rows:
        columns += [c for c, v in row.items() if _scalar(v) and c not in columns]
    out.table([c.upper() for c in columns], [[_cell(r.get(c)) for c in columns] for r in rows], empty="no costs")
    out.fields([(k.replace("_", " "), _cell(v)) for k, v in report.items() if k != key and _scalar(v)])
