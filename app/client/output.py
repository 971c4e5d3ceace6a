"""How the client prints: Rich tables and status colours for people, plain JSON for scripts.

Results go to stdout, everything else (progress, live status, warnings, errors) to stderr, so
``onebox create … --wait --json | jq`` gets exactly one JSON document. ``--json`` output is the API's
own JSON (lists as arrays, no paging wrapper), printed without colour or wrapping. Rich turns colour off
when the stream is not a terminal (or ``NO_COLOR`` is set); tables then use a wide fixed width so ids
are never folded. Text from the server always goes through ``Text`` objects, never markup, so a
message containing ``[brackets]`` prints as it is.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from app.client.durations import describe
from app.client.errors import CliError

STATUS_STYLES = {
    "running": "green", "available": "green",
    "failed": "bold red",
    "stopped": "blue", "deleted": "dim", "deleting": "magenta",
}
BUSY_STYLE = "yellow"  # pending, provisioning, configuring, creating, stopping, starting, rebooting, …


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not os.environ.get("COLUMNS") and not (hasattr(stream, "isatty") and stream.isatty()):
        width = 200  # not a terminal: never fold an id or an address into two lines
    return Console(stderr=stderr, highlight=False, width=width)


class Output:
    """One command's printer. ``json_mode``: results as JSON on stdout."""

    def __init__(self, json_mode: bool = False) -> None:
        self.json_mode = json_mode
        self.out = _console(stderr=False)
        self.err = _console(stderr=True)

    def json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def json_line(self, data: Any) -> None:
        """One JSON document per line (``events --follow --json``)."""
        sys.stdout.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "nothing to show",
              optional: Sequence[str] = ()) -> None:
        """A plain table. On a narrow terminal the ``optional`` columns are left out, in that order,
        until the rest fits: an id or an address is never cut."""
        cells = [[cell if isinstance(cell, Text) else Text("" if cell is None else str(cell)) for cell in row]
                 for row in rows]
        if not cells:
            self.err.print(Text(empty, style="dim"))
            return
        keep = list(range(len(columns)))
        widths = [max([len(columns[i]), *(c[i].cell_len for c in cells)]) for i in range(len(columns))]
        for name in optional:
            if sum(widths[i] for i in keep) + 2 * (len(keep) - 1) <= self.out.width:
                break
            if name in columns:
                keep.remove(columns.index(name))
        table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
        for i in keep:
            table.add_column(columns[i], no_wrap=True, overflow="ellipsis")
        for row in cells:
            table.add_row(*[row[i] for i in keep])
        self.out.print(table)

    def fields(self, pairs: Iterable[tuple[str, Any]]) -> None:
        """``key  value`` lines, keys aligned (``onebox show``)."""
        pairs = [(k, v) for k, v in pairs if v not in (None, "", [], {})]
        width = max((len(k) for k, _ in pairs), default=0)
        for key, value in pairs:
            line = Text(f"{key:<{width}}  ", style="bold")
            line.append(value if isinstance(value, Text) else Text(str(value)))
            self.out.print(line, soft_wrap=True)

    def note(self, message: str | Text) -> None:
        """A line for people about what happened (stderr, so stdout stays the result)."""
        self.err.print(message if isinstance(message, Text) else Text(message), soft_wrap=True)

    def result(self, message: str | Text) -> None:
        self.out.print(message if isinstance(message, Text) else Text(message), soft_wrap=True)

    def error(self, error: CliError) -> None:
        line = Text("error: ", style="bold red")
        line.append(error.message)
        self.err.print(line, soft_wrap=True)
        for detail in error.details:
            self.err.print(Text("  " + detail), soft_wrap=True)


def status_text(status: str | None) -> Text:
    status = status or "?"
    return Text(status, style=STATUS_STYLES.get(status, BUSY_STYLE))


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def ago(value: str | None, now: dt.datetime | None = None) -> str:
    moment = parse_time(value)
    if moment is None:
        return ""
    now = now or dt.datetime.now(dt.timezone.utc)
    return describe((now - moment).total_seconds()) + " ago"


def local_time(value: str | None, *, date: bool = False) -> str:
    moment = parse_time(value)
    if moment is None:
        return value or ""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S")


def address(instance: dict[str, Any]) -> str:
    ip = instance.get("public_ip")
    if not ip:
        return ""
    port = instance.get("ssh_port")
    return f"{ip}:{port}" if port and port != 22 else ip


def event_line(event: dict[str, Any]) -> Text:
    """``12:03:04  configure  step.succeeded  message`` with the type coloured."""
    kind = event.get("type") or ""
    style = "red" if "failed" in kind or kind == "error" else "cyan" if kind == "status" else "dim"
    line = Text()
    line.append(local_time(event.get("at")) + "  ", style="dim")
    line.append(f"{event.get('step') or '':<12}  ", style="bold")
    line.append(f"{kind:<18}", style=style)
    line.append("  " + str(event.get("message") or ""))
    return line
