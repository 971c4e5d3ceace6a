"""``onebox catalog``: what each enabled provider offers, from ``GET /v1/catalog``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.text import Text

from app.client.errors import CliError
from app.client.http import connect
from app.client.options import JsonOption
from app.client.output import Output

app = typer.Typer()


def _price(value: float | None) -> str:
    return "" if value is None else f"${value:.4f}"


@app.command(rich_help_panel="Catalog")
def catalog(
    provider: Annotated[Optional[str], typer.Option(help="Only this provider.")] = None,
    json_: JsonOption = False,
) -> None:
    """Providers, regions, machine types (vCPUs, memory, GPUs, indicative price) and images."""
    out = Output(json_)
    with connect() as api:
        providers = api.get("/v1/catalog").get("providers", [])
    if provider:
        providers = [p for p in providers if p["name"] == provider]
        if not providers:
            raise CliError(f"provider '{provider}' is not enabled on this server")
    if json_:
        out.json({"providers": providers})
        return
    for index, entry in enumerate(providers):
        if index:
            out.result("")
        header = Text(entry["name"], style="bold")
        if not entry.get("available", True):
            error = entry.get("error") or {}
            header.append(f"  unavailable: {error.get('message') or error.get('code') or 'unknown error'}", style="red")
            out.result(header)
            continue
        images = ", ".join(entry.get("images") or [])
        out.result(header.append(f"  images: {images}" if images else "", style="dim"))
        rows = []
        for region in entry.get("regions", []):
            zones = ", ".join(z for z in region.get("zones", []) if z != region["name"])
            for machine in region.get("machine_types", []):
                gpus = f"{machine['gpu_count']}× {machine.get('gpu_type') or 'GPU'}" if machine.get("gpu_count") else ""
                rows.append([region["name"], zones, machine["name"], machine.get("vcpus"),
                             f"{machine.get('memory_gb', 0):g} GB", gpus, _price(machine.get("hourly_usd"))])
        out.table(["REGION", "ZONES", "TYPE", "VCPUS", "MEMORY", "GPUS", "$/HOUR"], rows, empty="no machine types",
                  optional=("ZONES", "GPUS", "$/HOUR"))
