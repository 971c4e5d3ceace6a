"""The ``onebox`` command: the server's commands (serve, worker, token, db) and the client's.

One Typer app. The server's commands are defined here and import the server only when they run.
The client's commands (login, create, ls, …; see ``app.client``) talk to a server over HTTP and are
loaded from ``app.client.main`` only when one of them is asked for (or help and completion list
them), so ``onebox serve`` never loads the client, and the client never loads the server.

Shell completion (bash, zsh, fish) comes from Typer: ``onebox --install-completion``, or
``onebox --show-completion`` to print the script.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from app.client.durations import HINT as DURATION_HINT, parse_duration

SERVER_PANEL = "Server"
SERVER_COMMANDS = ("serve", "worker", "token", "db")


class OneboxGroup(TyperGroup):
    """The root command: its own (server) commands, then the client's, loaded on first use."""

    @staticmethod
    def _client() -> TyperGroup:
        from app.client.main import client_group

        return client_group()

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self._client().list_commands(ctx), *super().list_commands(ctx)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return super().get_command(ctx, cmd_name) or self._client().get_command(ctx, cmd_name)


cli = typer.Typer(
    cls=OneboxGroup,
    name="onebox",
    help="One VM on AWS, GCP, Azure or this machine, through one REST API.\n\n"
         "Client commands talk to the server in ONEBOX_URL or the one saved by `onebox login`.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,  # locals can hold a token
)


@cli.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", envvar="ONEBOX_DEBUG",
                                        help="Client: print each HTTP request (never the token). "
                                             "Server: log at DEBUG.")] = False,
) -> None:
    """One VM on AWS, GCP, Azure or this machine, through one REST API."""
    ctx.obj = {"debug": debug}
    if ctx.invoked_subcommand not in SERVER_COMMANDS:
        from app.client.config import DEBUG

        DEBUG.set(debug)


# --- the server's commands ---------------------------------------------------------------------------

def _server_logging(ctx: typer.Context) -> None:
    from app.logs import setup_logging

    debug = (ctx.find_root().obj or {}).get("debug")
    setup_logging("DEBUG" if debug else os.environ.get("ONEBOX_LOG_LEVEL", "INFO"))


def _configuration_errors(run: Any) -> Any:
    """Configuration errors (ValueError from the settings, an embedded database that cannot start): say what
    to fix, no traceback, exit 2."""
    from app.embedded_db import EmbeddedDatabaseError

    try:
        return run()
    except (ValueError, EmbeddedDatabaseError) as exc:
        print(f"onebox: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None


def _embedded(settings):
    from app.embedded_db import EmbeddedDatabase

    return EmbeddedDatabase(settings.embedded_db_home, settings.embedded_db_address, settings.data_dir / "db",
                            cache_mb=settings.embedded_db_cache_mb, heap_mb=settings.embedded_db_heap_mb)


@cli.command(rich_help_panel=SERVER_PANEL)
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(envvar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="PORT", help="Port to listen on.")] = 8000,
    no_worker: Annotated[bool, typer.Option("--no-worker", help="API only; run `onebox worker` separately.")] = False,
) -> None:
    """Run the API with an in-process worker (and the embedded database)."""
    _server_logging(ctx)

    def run() -> None:
        import uvicorn

        from app.main import create_app
        from app.settings import get_settings

        settings = get_settings()
        if settings.jwt_algorithm == "HS256":
            settings.hs256_secret()  # refuse a weak secret before anything starts
        if "ONEBOX_PUBLIC_URL" not in os.environ:  # agents on local instances reach us where we listen
            public_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            settings = settings.model_copy(update={"public_url": f"http://{public_host}:{port}"})
        db = _embedded(settings).start() if settings.embedded_db else None
        try:
            app = create_app(settings, run_worker=not no_worker)
            uvicorn.run(app, host=host, port=port, log_config=None, access_log=True)
        finally:
            if db:
                db.stop()

    _configuration_errors(run)


@cli.command(rich_help_panel=SERVER_PANEL)
def worker(ctx: typer.Context) -> None:
    """Run a worker alone."""
    _server_logging(ctx)

    def run() -> None:
        from app.services import Services
        from app.settings import get_settings
        from app.worker.runner import Worker

        settings = get_settings()

        async def main() -> None:
            services = Services.build(settings)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            try:
                await Worker(services).run(stop)
            finally:
                await services.close()

        asyncio.run(main())
        _exit_without_abandoned_calls()

    _configuration_errors(run)


def _exit_without_abandoned_calls() -> None:
    """A worker stopped mid-step may leave a cloud SDK call running in a thread whose job it has
    already handed back; don't wait minutes for it to return."""
    import logging
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def _ttl(text: str) -> dt.timedelta:
    try:
        return parse_duration(text)
    except ValueError:
        raise typer.BadParameter(DURATION_HINT) from None


@cli.command(rich_help_panel=SERVER_PANEL)
def token(
    ctx: typer.Context,
    user: Annotated[str, typer.Option(help="The token's subject.")],
    admin: Annotated[bool, typer.Option("--admin", help="An admin token.")] = False,
    ttl: Annotated[dt.timedelta, typer.Option(parser=_ttl, metavar="DURATION",
                                              help="e.g. 30m, 1h, 7d.")] = "1h",  # type: ignore[assignment]
) -> None:
    """Print a user token valid for this configuration."""
    _server_logging(ctx)

    def run() -> None:
        from app.auth.tokens import ROLE_ADMIN, ROLE_USER, TokenService
        from app.settings import get_settings

        print(TokenService(get_settings()).mint(user, role=ROLE_ADMIN if admin else ROLE_USER, ttl=ttl))

    _configuration_errors(run)


@cli.command(rich_help_panel=SERVER_PANEL)
def db(ctx: typer.Context) -> None:
    """Run the embedded database alone (for `onebox worker` setups)."""
    _server_logging(ctx)

    def run() -> None:
        from app.settings import get_settings

        database = _embedded(get_settings()).start()
        print(f"the embedded database at {database.url()} (data in {database.data_file}); Ctrl-C stops it",
              flush=True)
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            database.stop()

    _configuration_errors(run)


def main(argv: list[str] | None = None) -> Any:
    """The ``onebox`` console script; exits with the command's code."""
    return cli(args=argv, prog_name="onebox")


if __name__ == "__main__":
    main()
