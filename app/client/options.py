"""Options shared by client commands, so ``--json`` and ``--wait`` read the same everywhere."""

from __future__ import annotations

import email.utils
import datetime as dt
from typing import Annotated

import httpx
import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (the API's own shapes) instead of text.")]
WaitOption = Annotated[bool, typer.Option("--wait", "-w", help="Follow the event stream until it is done; "
                                                               "exit 3 if it fails.")]


def server_time(response: httpx.Response) -> dt.datetime:
    """When the server answered (its ``Date`` header): events are compared with the server's clock."""
    try:
        return email.utils.parsedate_to_datetime(response.headers["date"])
    except (KeyError, TypeError, ValueError):
        return dt.datetime.now(dt.timezone.utc)
