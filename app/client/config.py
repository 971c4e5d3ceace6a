"""Where the client finds its server and token: ``~/.config/onebox/config.toml``, then the environment.

The file (``$XDG_CONFIG_HOME/onebox/config.toml`` when that is set) holds two keys, ``url`` and
``token``, and is written by ``onebox login`` only: created with mode 0600 in a 0700 directory and
replaced atomically, so a half-written file never exists and no other account can read the token.
``ONEBOX_URL`` and ``ONEBOX_TOKEN`` override it (CI jobs need no file at all). The token is kept out
of every ``repr`` so that no debug print or traceback shows it.
"""

from __future__ import annotations

import contextvars
import os
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from app.client.errors import CliError, ExitCode

# `onebox --debug` (set by the root command for each run): print each HTTP request, never the token.
DEBUG: contextvars.ContextVar[bool] = contextvars.ContextVar("onebox_debug", default=False)
ENV_URL = "ONEBOX_URL"
ENV_TOKEN = "ONEBOX_TOKEN"


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "onebox" / "config.toml"


@dataclass(frozen=True)
class ClientConfig:
    url: str | None
    token: str | None = field(repr=False)
    url_source: str = "unset"  # "ONEBOX_URL", the config file's path, or "unset"
    token_source: str = "unset"


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; anything else is a usage error."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CliError(f"'{url}' is not a server URL; expected http(s)://host[:port]", ExitCode.USAGE)
    if parts.query or parts.fragment:
        raise CliError(f"'{url}': a server URL has no query or fragment", ExitCode.USAGE)
    return url.rstrip("/")


def read_file(path: Path | None = None) -> dict[str, str]:
    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", ExitCode.USAGE) from None
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path} is not valid TOML ({exc}); run `onebox login` again", ExitCode.USAGE) from None
    if path.stat().st_mode & 0o077:
        print(f"warning: {path} can be read by other accounts; `chmod 600 {path}`", file=sys.stderr)
    return {k: v for k, v in data.items() if k in ("url", "token") and isinstance(v, str)}


def load() -> ClientConfig:
    path = config_path()
    stored = read_file(path)
    url, url_source = os.environ.get(ENV_URL) or None, ENV_URL
    if url is None:
        url, url_source = stored.get("url"), str(path) if "url" in stored else "unset"
    token, token_source = os.environ.get(ENV_TOKEN) or None, ENV_TOKEN
    if token is None:
        token, token_source = stored.get("token"), str(path) if "token" in stored else "unset"
    return ClientConfig(normalize_url(url) if url else None, token, url_source, token_source)


def _toml_string(value: str) -> str:
    escapes = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = []
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def save(values: dict[str, str], path: Path | None = None) -> Path:
    """Write ``values`` (url, token) as the whole file: mode 0600, atomically."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    text = "# written by `onebox login`; holds a bearer token: keep it private\n"
    text += "".join(f"{key} = {_toml_string(value)}\n" for key, value in values.items())
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode is filtered by the umask, and an old tmp file keeps its own
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
