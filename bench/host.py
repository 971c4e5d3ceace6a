"""onebox processes for the benchmarks, with the zero-latency fake cloud plugged in.

``python -m bench.host serve --port P [--no-worker]`` is ``onebox serve`` and
``python -m bench.host worker`` is ``onebox worker``, configured the same way
(from ``ONEBOX_*``), except that the registry's ``local`` provider is the
zero-latency fake cloud (bench/fakecloud.py). ``--lag-log FILE`` runs an event-loop lag monitor in the
process: a task that sleeps 10 ms over and over and writes how late each wake-up
came (wall time, seconds late) to FILE — any blocking call on the loop shows
up there. ``BENCH_NO_GROUP_COMMIT=1`` writes each agent post on its own,
without group commit (``app.metrics.writer``), for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from app.logs import setup_logging
from app.settings import get_settings
from bench.fakecloud import NAME, FakeCloud

TICK = 0.010


async def monitor_lag(path: Path, stop: asyncio.Event) -> None:
    with open(path, "a", buffering=1) as out:  # line by line: the driver reads it while we run
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            await asyncio.sleep(TICK)
            late = loop.time() - started - TICK
            out.write(f"{time.time():.4f} {late:.5f}\n")


def watch_slow_callbacks() -> None:
    """BENCH_SLOW_CALLBACK_MS=N: asyncio's debug mode logs every step of a task that held the loop N ms."""
    threshold = os.environ.get("BENCH_SLOW_CALLBACK_MS")
    if threshold:
        loop = asyncio.get_running_loop()
        loop.set_debug(True)
        loop.slow_callback_duration = float(threshold) / 1000


class OneWritePerPost:
    """Ingestion without group commit: each post's operations written on their own."""

    def __init__(self, collection) -> None:
        self.collection = collection

    async def write(self, ops: list[tuple[object, bool]]) -> int:
        from pymongo.errors import BulkWriteError

        from app.db import DUPLICATE_KEY
        from app.metrics.writer import BatchWriteFailed

        try:
            await self.collection.bulk_write([op for op, _ in ops], ordered=False)
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors):
                raise BatchWriteFailed("a sample could not be stored") from None
            return sum(1 for e in errors if ops[e["index"]][1])
        return 0


def services():
    from app.services import Services

    settings = get_settings()
    svc = Services.build(settings, providers={NAME: FakeCloud()})
    if os.environ.get("BENCH_NO_GROUP_COMMIT"):
        svc.metrics_writer = OneWritePerPost(svc.db.metrics)
    return svc


async def serve(args) -> None:
    import uvicorn

    from app.main import create_app

    watch_slow_callbacks()
    svc = services()
    app = create_app(svc.settings, svc, run_worker=not args.no_worker)
    stop = asyncio.Event()
    lag = asyncio.create_task(monitor_lag(Path(args.lag_log), stop)) if args.lag_log else None
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_config=None,
                                           access_log=False, lifespan="on"))
    try:
        await server.serve()
    finally:
        stop.set()
        if lag:
            await lag
        await svc.close()


async def worker(args) -> None:
    from app.worker.runner import Worker

    watch_slow_callbacks()
    svc = services()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    lag = asyncio.create_task(monitor_lag(Path(args.lag_log), stop)) if args.lag_log else None
    try:
        await Worker(svc).run(stop)
    finally:
        stop.set()
        if lag:
            with contextlib.suppress(asyncio.CancelledError):
                await lag
        await svc.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.host")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--no-worker", action="store_true")
    s.add_argument("--lag-log")
    w = sub.add_parser("worker")
    w.add_argument("--lag-log")
    args = parser.parse_args()
    setup_logging(os.environ.get("ONEBOX_LOG_LEVEL", "WARNING"))
    asyncio.run(serve(args) if args.command == "serve" else worker(args))


if __name__ == "__main__":
    main()
