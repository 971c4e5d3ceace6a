"""The ``onebox`` command: serve, worker, token, db."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import signal
import sys

from app.logs import setup_logging
from app.settings import get_settings


def _parse_ttl(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise argparse.ArgumentTypeError("use a number and s, m, h or d, e.g. 1h or 30m")
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[match.group(2)]
    return dt.timedelta(**{unit: int(match.group(1))})


def _embedded(settings):
    from app.embedded_db import EmbeddedDatabase

    return EmbeddedDatabase(settings.ferretdb_binary, settings.embedded_db_address, settings.data_dir / "ferretdb")


def _share_metrics(settings) -> None:
    """Count into the host's shared Prometheus directory (before any metric exists)."""
    from app.observability.multiprocess import enable

    enable(settings.prometheus_path)


def cmd_serve(args) -> int:
    import uvicorn

    settings = get_settings()
    _share_metrics(settings)
    from app.main import create_app

    if settings.jwt_algorithm == "HS256":
        settings.hs256_secret()  # refuse a weak secret before anything starts
    if "ONEBOX_PUBLIC_URL" not in os.environ:  # agents on local instances reach us where we listen
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        settings = settings.model_copy(update={"public_url": f"http://{host}:{args.port}"})
    db = _embedded(settings).start() if settings.embedded_db else None
    try:
        app = create_app(settings, run_worker=not args.no_worker)
        uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=True)
    finally:
        if db:
            db.stop()
    return 0


def cmd_worker(args) -> int:
    settings = get_settings()
    _share_metrics(settings)
    from app.services import Services
    from app.worker.runner import Worker


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
    return 0


def _exit_without_abandoned_calls() -> None:
    """A worker stopped mid-step may leave a cloud SDK call running in a thread whose job it has
    already handed back; don't wait minutes for it to return."""
    import logging
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def cmd_token(args) -> int:
    from app.auth.tokens import ROLE_ADMIN, ROLE_USER, TokenService

    token = TokenService(get_settings()).mint(args.user, role=ROLE_ADMIN if args.admin else ROLE_USER, ttl=args.ttl)
    print(token)
    return 0


def cmd_db(args) -> int:
    settings = get_settings()
    db = _embedded(settings).start()
    print(f"FerretDB at {db.url()} (data in {db.data_dir}); Ctrl-C stops it", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        db.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="onebox", description="One VM on any cloud, through one REST API.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API with an in-process worker (and the embedded database)")
    serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    serve.add_argument("--no-worker", action="store_true", help="API only; run `onebox worker` separately")
    serve.set_defaults(func=cmd_serve)
    sub.add_parser("worker", help="run a worker alone").set_defaults(func=cmd_worker)
    token = sub.add_parser("token", help="print a user token valid for this configuration")
    token.add_argument("--user", required=True)
    token.add_argument("--admin", action="store_true")
    token.add_argument("--ttl", type=_parse_ttl, default=dt.timedelta(hours=1), help="e.g. 30m, 1h, 7d (default 1h)")
    token.set_defaults(func=cmd_token)
    sub.add_parser("db", help="run the embedded database alone (for `onebox worker` setups)").set_defaults(func=cmd_db)
    args = parser.parse_args(argv)
    try:
        settings = get_settings()
        setup_logging(settings.log_level, settings.log_format)
        return args.func(args)
    except ValueError as exc:  # configuration errors: say what to fix, no traceback
        print(f"onebox: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
