"""Name-or-id arguments: every command that takes an instance (or snapshot) accepts either.

An argument shaped like an id (``i-`` or ``s-`` and 26 base32 characters) is read directly. Anything
else is a name: the owner's list is read (all pages; names are not unique on the server) and matched
exactly. No match is exit 1 (like the API's 404); several matches are exit 2 — a usage error, since
the user has to say which — listing each candidate's id, status and creation time so one can be
copied. Deleted records are looked at only where a command asks for them (``show``, ``events``), and
only when no live record has the name.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import httpx

from app.client.config import load
from app.client.errors import CliError, ExitCode
from app.client.http import ApiClient
from app.client.output import local_time

INSTANCE_ID = re.compile(r"^i-[0-9a-hjkmnp-tv-z]{26}$")
SNAPSHOT_ID = re.compile(r"^s-[0-9a-hjkmnp-tv-z]{26}$")


def pick(items: Iterable[dict[str, Any]], name: str, kind: str) -> dict[str, Any] | None:
    """The one item named ``name``, None when there is none; ``CliError`` (exit 2) when several."""
    matches = [item for item in items if item.get("name") == name]
    if len(matches) > 1:
        lines = [f"{m['id']}  {m.get('status', '')}  created {local_time(m.get('created_at'), date=True)}"
                 for m in sorted(matches, key=lambda m: m["id"])]
        raise CliError(f"{len(matches)} {kind}s are named '{name}'; give an id instead:", ExitCode.USAGE, lines)
    return matches[0] if matches else None


def complete_instance_names(incomplete: str) -> list[str]:
    """Shell completion of an instance argument: your instances' names (first page), or nothing when
    the server cannot say within a moment — completion never prints an error or makes the shell wait."""
    try:
        config = load()
        if not config.url or not config.token:
            return []
        with ApiClient(config.url, config.token, timeout=2.0) as api:
            items = api.request("GET", "/v1/instances", params={"limit": 100}, retry=False).json()["items"]
    except (CliError, httpx.HTTPError, ValueError, KeyError, TypeError):
        return []
    return sorted({i["name"] for i in items if i.get("name", "").startswith(incomplete)})


def resolve_instance(api: ApiClient, ref: str, *, include_deleted: bool = False) -> dict[str, Any]:
    if INSTANCE_ID.match(ref):
        return api.get(f"/v1/instances/{ref}")
    found = pick(api.pages("/v1/instances"), ref, "instance")
    if found is None and include_deleted:
        found = pick(api.pages("/v1/instances", status="deleted"), ref, "instance")
    if found is None:
        raise CliError(f"no instance named '{ref}' (see `onebox ls`)", ExitCode.REFUSED)
    return found


def resolve_instances(api: ApiClient, refs: list[str]) -> list[dict[str, Any]]:
    """Several at once: all are resolved before anything is asked of the server (nothing half-done)."""
    names = [ref for ref in refs if not INSTANCE_ID.match(ref)]
    listing = list(api.pages("/v1/instances")) if names else []
    out = []
    for ref in refs:
        if INSTANCE_ID.match(ref):
            out.append(api.get(f"/v1/instances/{ref}"))
            continue
        found = pick(listing, ref, "instance")
        if found is None:
            raise CliError(f"no instance named '{ref}' (see `onebox ls`)", ExitCode.REFUSED)
        out.append(found)
    return out


def resolve_snapshot(api: ApiClient, ref: str) -> dict[str, Any]:
    if SNAPSHOT_ID.match(ref):
        return api.get(f"/v1/snapshots/{ref}")
    found = pick(api.pages("/v1/snapshots"), ref, "snapshot")
    if found is None:
        raise CliError(f"no snapshot named '{ref}' (see `onebox snapshots`)", ExitCode.REFUSED)
    return found
