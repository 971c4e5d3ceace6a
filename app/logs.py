"""The one logging setup: JSON lines that carry who asked and what is being worked on.

Every line says, besides its message, the request that caused it (``request_id``: taken from
``X-Request-ID`` or made up by the API, and stored with the job the request queued), the
instance it concerns, the job and step a worker is running and the worker's id. They travel
in context variables: the API's request middleware (``app.observability.middleware``) binds the
request id, a worker binds its id once and each job's ids while it runs (``app.worker.runner``,
``app.lifecycle.engine``), and tasks started from there inherit them. So one ``grep`` for an
instance or request id follows it across the API processes and the workers.

A filter scrubs bearer tokens and JWTs from every line, tracebacks included.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import re
import uuid
from typing import Iterator

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # anything shaped like a JWT
]

# The context every line carries when it is known, in the order the text format prints it.
CONTEXT_FIELDS = ("request_id", "instance_id", "job", "step", "worker_id")
_context: dict[str, contextvars.ContextVar[str | None]] = {
    name: contextvars.ContextVar(f"onebox_log_{name}", default=None) for name in CONTEXT_FIELDS
}
# What a client may send as X-Request-ID: enough for UUIDs, trace ids and proxies' formats, never
# spaces, quotes or control characters (the id is echoed in a header and written to every line).
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:/@+=-]{1,128}$")


def scrub(text: str) -> str:
    text = _SECRET_PATTERNS[0].sub(r"\1[redacted]", text)
    return _SECRET_PATTERNS[1].sub("[redacted-jwt]", text)


def context_value(name: str) -> str | None:
    """The value of one context field in the current task (None when unbound)."""
    return _context[name].get()


def request_id() -> str | None:
    return _context["request_id"].get()


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(value: str | None) -> str:
    """The client's ``X-Request-ID`` when it is well-formed, otherwise a fresh one."""
    if value and REQUEST_ID_PATTERN.match(value):
        return value
    return new_request_id()


@contextlib.contextmanager
def log_context(**values: str | None) -> Iterator[None]:
    """Bind context fields for the code inside (and the tasks it starts); unbound again after."""
    unknown = set(values) - set(CONTEXT_FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields {sorted(unknown)}")
    tokens = [(_context[name], _context[name].set(value)) for name, value in values.items()]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind(**values: str | None) -> None:
    """Bind context fields for the rest of the current task (a worker's id, for its lifetime)."""
    for name, value in values.items():
        _context[name].set(value)


def _fields(record: logging.LogRecord) -> dict[str, str]:
    """The context of one line: what the call passed in ``extra`` wins over the task's context."""
    found = {}
    for name in CONTEXT_FIELDS:
        value = getattr(record, name, None) or _context[name].get()
        if value:
            found[name] = str(value)
    return found


class ScrubSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, the context fields that are
    known, and ``exc`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        at = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        entry = {"ts": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"), "level": record.levelname,
                 "logger": record.name, "msg": record.getMessage(), **_fields(record)}
        if record.exc_info:
            entry["exc"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc"] = scrub(record.exc_text)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextLines(logging.Formatter):
    """For people at a terminal (``ONEBOX_LOG_FORMAT=text``): the message, then the known context."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            first, newline, rest = line.partition("\n")  # after the message, before any traceback
            line = first + " " + " ".join(f"{k}={v}" for k, v in fields.items()) + newline + rest
        return scrub(line) if record.exc_info else line


def setup_logging(level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines() if fmt == "json" else TextLines())
    handler.addFilter(ScrubSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("pymongo").setLevel(logging.WARNING)
