"""A command group as another engineer would add one (``test_a_command_group_is_one_line``)."""

from __future__ import annotations

import typer

from app.client.errors import CliError, ExitCode
from app.client.options import JsonOption
from app.client.output import Output

app = typer.Typer(rich_help_panel="Demo")


@app.command()
def hello(name: str, json_: JsonOption = False) -> None:
    """Greets, or fails like a failed instance."""
    if name == "doom":
        raise CliError("doom failed at step demo", ExitCode.FAILED, ["a detail line"])
    if json_:
        Output(True).json({"hello": name})
    else:
        Output().result(f"hello {name}")
