"""``onebox login``, ``logout`` and ``whoami``: which server the client talks to, with which token.

``login`` checks that the server answers and accepts the token (``GET /v1/catalog``, authenticated and
served from the server's cache) before saving anything, so a typo never replaces a working
configuration. The token comes from ``--token``, ``--dev USER`` (``POST /v1/dev/token``: development
servers only), or is read without echo from the terminal (or from stdin in a pipe), which keeps it out
of shell history. It is never printed: ``whoami`` shows the user, role and expiry read from the token's
claims (unverified, for display only: the server verifies it).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
from typing import Annotated, Any, Optional

import typer

from app.client.config import ENV_TOKEN, config_path, load, normalize_url, read_file, save
from app.client.durations import describe
from app.client.errors import ApiError, CliError, ExitCode
from app.client.http import ApiClient, debug_enabled
from app.client.options import JsonOption
from app.client.output import Output

app = typer.Typer()


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (display only); {} when it is not one."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _read_token() -> str:
    if sys.stdin.isatty():
        token = typer.prompt("Token", hide_input=True)
    else:
        token = sys.stdin.readline()
    token = token.strip()
    if not token:
        raise CliError("no token given (--token, --dev USER, or type it when asked)", ExitCode.USAGE)
    return token


@app.command(rich_help_panel="Session")
def login(
    url: Annotated[Optional[str], typer.Option(help="The server, e.g. http://127.0.0.1:8000 (default: the saved one).")] = None,
    token: Annotated[Optional[str], typer.Option(help="A user token ('-': read it from stdin). Omit it to be asked.")] = None,
    dev: Annotated[Optional[str], typer.Option(metavar="USER", help="Development sign-in as USER (servers with "
                                                                   "ONEBOX_DEV_LOGIN=1 only).")] = None,
) -> None:
    """Save a server and a token in ~/.config/onebox/config.toml (mode 0600), once the server accepts it."""
    out = Output()
    if token and dev:
        raise typer.BadParameter("give --token or --dev, not both", param_hint="--dev")
    url = normalize_url(url) if url else load().url
    if not url:
        raise typer.BadParameter("which server? e.g. --url http://127.0.0.1:8000", param_hint="--url")
    if dev:
        with ApiClient(url, None, debug=debug_enabled()) as anonymous:
            try:
                token = anonymous.post("/v1/dev/token", {"user": dev})["token"]
            except ApiError as exc:
                if exc.status == 404:
                    raise CliError(f"development sign-in is off at {url} (it needs ONEBOX_DEV_LOGIN=1 and the "
                                   "embedded database); ask for a token") from None
                raise
    elif token is None or token == "-":
        token = _read_token() if token is None else sys.stdin.readline().strip()
    with ApiClient(url, token, debug=debug_enabled()) as api:
        api.get("/v1/catalog")  # the server answers and accepts the token
    path = save({"url": url, "token": token})
    user = token_claims(token).get("sub", "?")
    out.result(f"logged in to {url} as {user}; saved in {path} (mode 0600)")


@app.command(rich_help_panel="Session")
def logout() -> None:
    """Forget the saved token (the server URL stays)."""
    path = config_path()
    stored = read_file(path)
    if "token" not in stored:
        Output().note(f"no token saved in {path}")
        return
    save({k: v for k, v in stored.items() if k != "token"}, path)
    Output().result(f"token removed from {path}")


@app.command(rich_help_panel="Session")
def whoami(json_: JsonOption = False) -> None:
    """The server and user the client acts as, and whether the server accepts the token."""
    out = Output(json_)
    config = load()
    if not config.url or not config.token:
        raise CliError("not logged in: run `onebox login --url URL` (or set ONEBOX_URL and ONEBOX_TOKEN)",
                       ExitCode.USAGE)
    with ApiClient(config.url, config.token, debug=debug_enabled()) as api:
        api.get("/v1/catalog")
    claims = token_claims(config.token)
    expires = dt.datetime.fromtimestamp(claims["exp"], dt.timezone.utc) if isinstance(claims.get("exp"), int) else None
    info = {"url": config.url, "url_from": config.url_source, "user": claims.get("sub"),
            "role": claims.get("role", "user"), "token_from": config.token_source,
            "expires_at": expires.isoformat().replace("+00:00", "Z") if expires else None}
    if json_:
        out.json(info)
        return
    left = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds() if expires else None
    out.fields([("server", config.url), ("user", f"{info['user']} ({info['role']})"),
                ("token", f"from {'$' + ENV_TOKEN if config.token_source == ENV_TOKEN else config.token_source}"
                          + (f", expires in {describe(left)}" if left is not None else ""))])
