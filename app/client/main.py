"""The client's command tree, assembled from the modules listed here; ``app.cli`` loads it on first use.

Registering commands is one line: a module whose ``app`` (a ``typer.Typer``) holds them goes into
``COMMANDS`` (its commands become ``onebox <command>``) or into ``GROUPS`` under a name (``onebox <name>
<command>``; a sub-app with an ``invoke_without_command`` callback is itself a command with options, like
``onebox costs --group-by provider``). A module listed but absent is skipped, so a group can be listed
before it lands.

Every client command runs inside ``guard``: a ``CliError`` becomes ``error: …`` on stderr (and its
detail lines) and its exit code, so commands only raise.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import typer
from typer.core import TyperGroup

from app.client.errors import CliError
from app.client.output import Output

COMMANDS = [
    "app.client.session",
    "app.client.instances",
    "app.client.snapshots",
    "app.client.catalog",
]
GROUPS = {
    "costs": "app.client.costs",
    "qa": "app.client.qa",
}


def guard(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except CliError as error:
            Output().error(error)
            raise typer.Exit(int(error.code)) from None

    return run


def _guard_all(command: Any) -> None:
    if command.callback is not None:
        command.callback = guard(command.callback)
    for sub in getattr(command, "commands", {}).values():
        _guard_all(sub)


def _module(name: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            return None
        raise


@functools.cache
def client_group() -> TyperGroup:
    """Every client command, as one Click group whose commands ``app.cli`` serves at the top level."""
    client = typer.Typer()
    for name in COMMANDS:
        module = _module(name)
        if module is not None:
            client.registered_commands += module.app.registered_commands
    for group, name in GROUPS.items():
        module = _module(name)
        if module is not None:
            client.add_typer(module.app, name=group, rich_help_panel=module.app.info.rich_help_panel)
    group = typer.main.get_group(client)
    _guard_all(group)
    return group
