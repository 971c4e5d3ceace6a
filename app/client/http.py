"""The client's one HTTP client: every call to a onebox server goes through ``ApiClient``.

It knows the server's URL and token (from ``app.client.config``), sends the token only as
``Authorization: Bearer`` and never prints it: not in errors, not in ``--debug`` lines (method, URL,
status and time only), not in its ``repr``. It turns what can go wrong into ``CliError``s:

* an RFC 9457 problem → ``ApiError`` (exit 1) whose message is the problem's title and detail, with
  one detail line per entry of ``errors`` (``field: message``) and per extra member
  (``current_status: deleted``);
* no answer (refused, DNS, TLS, timeout) → exit 4, naming the URL that could not be reached.

Reads (and POSTs carrying an ``Idempotency-Key``, which the server deduplicates) are retried a few
times on network errors and on 503 (honouring ``Retry-After``, at most a few seconds), so a server
restarting under ``make run`` or a brief database outage does not fail a script.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator

import httpx

from app.client.config import DEBUG, load
from app.client.errors import ApiError, CliError, ExitCode

READ_TIMEOUT = 30.0
STREAM_READ_TIMEOUT = 60.0  # the server sends a keep-alive comment after 15 s of silence
ATTEMPTS = 3
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "instance", "code", "errors"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("onebox")
    except PackageNotFoundError:
        return "dev"


def debug_enabled() -> bool:
    """``onebox --debug …`` (the root command's option, which reads ``ONEBOX_DEBUG`` too)."""
    return DEBUG.get()


def unreachable(url: str, exc: Exception) -> CliError:
    if isinstance(exc, httpx.TimeoutException):
        reason = "no answer in time"
    else:
        reason = str(exc).strip() or type(exc).__name__
    return CliError(f"cannot reach the onebox server at {url}: {reason}", ExitCode.UNREACHABLE)


def problem_error(response: httpx.Response) -> ApiError:
    """An error response as one message plus one line per field error (RFC 9457, or anything else)."""
    status = response.status_code
    body: dict[str, Any] = {}
    if "json" in response.headers.get("content-type", ""):
        with contextlib.suppress(ValueError):
            parsed = response.json()
            body = parsed if isinstance(parsed, dict) else {}
    title = str(body.get("title") or response.reason_phrase or "error")
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    details = [f"{e.get('field', '?')}: {e.get('message', '')}" for e in errors]
    details += [f"{k}: {v}" for k, v in body.items()
                if k not in PROBLEM_MEMBERS and isinstance(v, (str, int, float, bool))]
    message = title
    if body.get("detail") and not errors:
        message += f": {body['detail']}"
    code = body.get("code")
    message += f" (HTTP {status}{', ' + code if code else ''})"
    if status == 401:
        details.append("the server refused the token: run `onebox login` again, or check ONEBOX_TOKEN")
    if "Retry-After" in response.headers and status in (429, 503):
        details.append(f"the server asks to retry after {response.headers['Retry-After']} s")
    return ApiError(message, status, body, details)


class ApiClient:
    """A session with one onebox server. Use as a context manager, or ``close()`` it."""

    def __init__(self, url: str, token: str | None, *, debug: bool = False, timeout: float = READ_TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.debug = debug
        headers = {"User-Agent": f"onebox-cli/{_version()}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, follow_redirects=False)

    def __repr__(self) -> str:
        return f"ApiClient({self.url!r})"

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _log(self, text: str) -> None:
        if self.debug:
            print(f"debug: {text}", file=sys.stderr, flush=True)

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None, retry: bool | None = None) -> httpx.Response:
        """Send; return a 2xx response or raise ``ApiError`` / ``CliError`` (exit 4)."""
        if retry is None:
            retry = method == "GET" or bool(headers and "Idempotency-Key" in headers)
        params = {k: v for k, v in (params or {}).items() if v is not None}
        attempts = ATTEMPTS if retry else 1
        for attempt in range(1, attempts + 1):
            started = time.monotonic()
            self._log(f"→ {method} {self._http.build_request(method, path, params=params).url}")
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TransportError as exc:
                self._log(f"✗ {type(exc).__name__}: {exc}")
                if attempt < attempts:
                    time.sleep(0.3 * attempt)
                    continue
                raise unreachable(self.url, exc) from None
            self._log(f"← {response.status_code} {response.reason_phrase} ({(time.monotonic() - started) * 1000:.0f} ms)")
            if response.status_code == 503 and attempt < attempts:
                time.sleep(min(_retry_after(response), 5.0))
                continue
            if response.is_error:
                self._log(f"  {response.text[:2000]}")
                raise problem_error(response)
            return response
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params).json()

    def post(self, path: str, json: Any = None, *, headers: dict[str, str] | None = None) -> Any:
        response = self.request("POST", path, json=json, headers=headers)
        return response.json() if response.content else None

    def delete(self, path: str) -> Any:
        response = self.request("DELETE", path)
        return response.json() if response.content else None

    def pages(self, path: str, *, page_size: int = 100, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a ``{items, next_cursor}`` listing, following the cursor to the end."""
        cursor = None
        while True:
            page = self.get(path, limit=page_size, cursor=cursor, **params)
            yield from page.get("items", [])
            cursor = page.get("next_cursor")
            if not cursor:
                return

    @contextlib.contextmanager
    def stream(self, path: str, *, headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """A streaming GET (Server-Sent Events); errors before the body as for ``request``.

        Transport errors while reading the body are the caller's to handle (it reconnects)."""
        self._log(f"→ GET {self.url}{path} (stream)")
        timeout = httpx.Timeout(READ_TIMEOUT, read=STREAM_READ_TIMEOUT)
        try:
            with self._http.stream("GET", path, headers={"Accept": "text/event-stream", **(headers or {})},
                                   timeout=timeout) as response:
                self._log(f"← {response.status_code} {response.reason_phrase} (stream)")
                if response.is_error:
                    response.read()
                    raise problem_error(response)
                yield response
        except httpx.TransportError as exc:
            self._log(f"✗ {type(exc).__name__}: {exc}")
            raise StreamBroken(unreachable(self.url, exc)) from None


class StreamBroken(Exception):
    """A stream's connection failed or dropped; ``error`` is what to report if reconnecting fails too."""

    def __init__(self, error: CliError) -> None:
        super().__init__(error.message)
        self.error = error


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.2, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0


def connect(*, token_required: bool = True) -> ApiClient:
    """The configured server (config file, ``ONEBOX_URL``/``ONEBOX_TOKEN``) as an ``ApiClient``."""
    config = load()
    if not config.url:
        raise CliError("no onebox server configured: run `onebox login --url URL` or set ONEBOX_URL", ExitCode.USAGE)
    if token_required and not config.token:
        raise CliError(f"no token for {config.url}: run `onebox login` or set ONEBOX_TOKEN", ExitCode.USAGE)
    return ApiClient(config.url, config.token, debug=debug_enabled())
