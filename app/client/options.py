"""Options shared by client commands, so ``--json`` and ``--wait`` read the same everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (the API's own shapes) instead of text.")]
WaitOption = Annotated[bool, typer.Option("--wait", "-w", help="Follow the event stream until it is done; "
                                                               "exit 3 if it fails.")]
