"""Client commands for snapshots: ``snapshot`` (take one) and ``snapshots`` (list them).

Snapshots have no event stream, so ``snapshot --wait`` polls ``GET /v1/snapshots/{id}`` once a
second behind a status line, until ``available`` (or ``failed``: exit 3).
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from app.client.errors import CliError, ExitCode
from app.client.http import ApiClient, connect
from app.client.options import JsonOption
from app.client.output import Output, ago, status_text
from app.client.resolve import complete_instance_names, resolve_instance

app = typer.Typer()
POLL_SECONDS = 1.0


def wait_snapshot(api: ApiClient, out: Output, snapshot: dict[str, Any]) -> dict[str, Any]:
    label = f"{snapshot['name']} ({snapshot['id']})"
    try:
        with out.err.status(Text(f"{label}: {snapshot['status']}"), spinner="dots") as spinner:
            while snapshot["status"] not in ("available", "failed", "deleted"):
                time.sleep(POLL_SECONDS)
                snapshot = api.get(f"/v1/snapshots/{snapshot['id']}")
                spinner.update(Text.assemble(f"{label}: ", status_text(snapshot["status"])))
    except KeyboardInterrupt:
        raise CliError(f"stopped watching {label}; it carries on: `onebox snapshots`", ExitCode.INTERRUPTED) from None
    if snapshot["status"] != "available":
        error = snapshot.get("error") or {}
        detail = f" at step {error.get('step')}: {error.get('code')}: {error.get('message')}" if error else ""
        raise CliError(f"snapshot {label} {snapshot['status']}{detail}", ExitCode.FAILED)
    return snapshot


@app.command(rich_help_panel="Snapshots")
def snapshot(
    ref: Annotated[str, typer.Argument(metavar="ID|NAME", help="The running instance to snapshot.",
                                       autocompletion=complete_instance_names)],
    name: Annotated[str, typer.Argument(help="The snapshot's name.")],
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait until it is available; exit 3 if it fails.")] = False,
    json_: JsonOption = False,
) -> None:
    """Snapshot an instance's root disk; new instances can start from it (create --snapshot)."""
    out = Output(json_)
    with connect() as api:
        instance = resolve_instance(api, ref)
        snap = api.post(f"/v1/instances/{instance['id']}/snapshots", {"name": name})
        if wait:
            snap = wait_snapshot(api, out, snap)
    if json_:
        out.json(snap)
    else:
        out.result(Text.assemble(f"snapshot {snap['name']} ({snap['id']}) of {instance['name']} ",
                                 status_text(snap["status"])))


@app.command(rich_help_panel="Snapshots")
def snapshots(
    instance: Annotated[Optional[str], typer.Option(metavar="ID|NAME", help="Only this instance's.")] = None,
    status: Annotated[Optional[str], typer.Option(help="Only this status (creating, available, failed, deleted).")] = None,
    json_: JsonOption = False,
) -> None:
    """Your snapshots, newest first."""
    out = Output(json_)
    with connect() as api:
        instance_id = resolve_instance(api, instance, include_deleted=True)["id"] if instance else None
        items = list(api.pages("/v1/snapshots", instance_id=instance_id, status=status))
        # Name the instances the snapshots come from (one read per instance not already known).
        names: dict[str, str] = {}
        if not json_:
            for item in items:
                iid = item["instance_id"]
                if iid not in names:
                    try:
                        names[iid] = api.get(f"/v1/instances/{iid}")["name"]
                    except CliError:
                        names[iid] = ""
    if json_:
        out.json(items)
        return
    rows = [[s["name"], s["id"], status_text(s["status"]), names.get(s["instance_id"]) or s["instance_id"],
             s["provider"], s["region"], ago(s.get("created_at"))] for s in items]
    out.table(["NAME", "ID", "STATUS", "INSTANCE", "PROVIDER", "REGION", "CREATED"], rows,
              empty="no snapshots (take one: onebox snapshot INSTANCE NAME)",
              optional=("REGION", "PROVIDER", "CREATED", "INSTANCE"))
