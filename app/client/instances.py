"""Client commands for instances: create, ls, show, events, ssh, stop, start, reboot, rm.

Each command is a thin layer over one or two API calls: it resolves names to ids
(``app.client.resolve``), calls the server through ``app.client.http``, prints with
``app.client.output`` and, with ``--wait``, follows the event stream (``app.client.follow``).
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.text import Text

from app.client.durations import parse_duration, whole_minutes
from app.client.errors import ApiError, CliError, ExitCode
from app.client.follow import Follower, last_event_time, wait_for
from app.client.http import ApiClient, connect
from app.client.options import JsonOption, WaitOption
from app.client.output import Output, address, ago, event_line, local_time, status_text
from app.client.resolve import complete_instance_names, resolve_instance, resolve_instances, resolve_snapshot

app = typer.Typer()

SSH_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
DEFAULT_KEYS = ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub")
Ref = Annotated[str, typer.Argument(metavar="ID|NAME", help="An instance's id or name.",
                                    autocompletion=complete_instance_names)]
Refs = Annotated[list[str], typer.Argument(metavar="ID|NAME...", help="Instance ids or names.",
                                           autocompletion=complete_instance_names)]


# --- create ---------------------------------------------------------------------------------------

def _duration_seconds(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return int(parse_duration(value).total_seconds())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def _minutes(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return whole_minutes(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


def parse_labels(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"'{value}' is not key=value", param_hint="--label")
        labels[key] = val
    return labels


def read_public_key(path: Path | None) -> str:
    """The user's public key: the file given (or its ``.pub``), else the first of ~/.ssh/id_*.pub."""
    if path is None:
        candidates = [Path.home() / ".ssh" / name for name in DEFAULT_KEYS]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise typer.BadParameter("no ~/.ssh/id_ed25519.pub (or id_ecdsa.pub, id_rsa.pub); give a public key file",
                                     param_hint="--ssh-key")
    elif not path.name.endswith(".pub") and Path(f"{path}.pub").is_file():
        path = Path(f"{path}.pub")  # a private key's path was given: use its public half
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="--ssh-key") from None
    if "PRIVATE KEY" in text:
        raise typer.BadParameter(f"{path} is a private key; give the .pub file (it never leaves this machine)",
                                 param_hint="--ssh-key")
    return text


def read_text_file(path: Path, option: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", param_hint=option) from None


def default_ssh_user() -> str:
    """The local account name when it is a valid, non-root ``ssh_user``; the caller must say otherwise."""
    name = getpass.getuser().lower()
    if SSH_USER.match(name) and name != "root":
        return name
    raise typer.BadParameter(f"the local account '{name}' cannot be an ssh_user here; give one", param_hint="--ssh-user")


def pick_placement(api: ApiClient, provider: str | None, region: str | None, machine_type: str | None
                   ) -> tuple[str, str, str]:
    """Fill in what is unambiguous from the catalog (one provider, one region, one type); else ask."""
    if provider and region and machine_type:
        return provider, region, machine_type
    catalog = api.get("/v1/catalog")
    providers = [p for p in catalog.get("providers", []) if p.get("available", True)]
    if provider is None:
        if len(providers) != 1:
            names = ", ".join(p["name"] for p in providers) or "none"
            raise typer.BadParameter(f"choose one of: {names}", param_hint="--provider")
        provider = providers[0]["name"]
    entry = next((p for p in providers if p["name"] == provider), None)
    regions = entry.get("regions", []) if entry else []
    if region is None:
        if len(regions) != 1:
            raise typer.BadParameter(f"choose one of: {', '.join(r['name'] for r in regions) or 'none'}",
                                     param_hint="--region")
        region = regions[0]["name"]
    if machine_type is None:
        types = next((r.get("machine_types", []) for r in regions if r["name"] == region), [])
        if len(types) != 1:
            shown = ", ".join(t["name"] for t in types[:15]) + (", …" if len(types) > 15 else "")
            raise typer.BadParameter(f"choose one of: {shown or 'none (see `onebox catalog`)'}", param_hint="--type")
        machine_type = types[0]["name"]
    return provider, region, machine_type


def instance_body(name: str, *, provider: str, region: str, machine_type: str, ssh_user: str, ssh_public_key: str,
                  zone: str | None = None, image: str | None = None, snapshot_id: str | None = None,
                  disk: int | None = None, bootstrap_script: str | None = None, labels: list[str] = (),
                  ttl: str | None = None, idle: str | None = None) -> dict[str, Any]:
    """The ``POST /v1/instances`` body for ``create``'s options (pure). Unset options are left out:
    ``ttl_seconds``/``idle_minutes`` are sent only when asked for, so a server without them refuses
    them by name rather than a client sending them by default."""
    body: dict[str, Any] = {
        "name": name, "provider": provider, "region": region, "zone": zone, "machine_type": machine_type,
        "image": image, "snapshot_id": snapshot_id, "disk_gb": disk, "ssh_user": ssh_user,
        "ssh_public_key": ssh_public_key, "bootstrap_script": bootstrap_script,
        "labels": parse_labels(list(labels)) or None,
        "ttl_seconds": _duration_seconds(ttl, "--ttl"), "idle_minutes": _minutes(idle, "--idle"),
    }
    return {k: v for k, v in body.items() if v is not None}


@app.command(rich_help_panel="Instances")
def create(
    name: Annotated[str, typer.Argument(help="Lowercase letters, digits and '-', starting with a letter.")],
    provider: Annotated[Optional[str], typer.Option(help="aws, gcp, azure or local; the only one enabled if omitted.")] = None,
    region: Annotated[Optional[str], typer.Option(help="The only one if omitted.")] = None,
    machine_type: Annotated[Optional[str], typer.Option("--type", "-t", help="A machine type (`onebox catalog`).")] = None,
    zone: Annotated[Optional[str], typer.Option(help="A zone of the region.")] = None,
    image: Annotated[Optional[str], typer.Option(help="ubuntu-24.04, debian-12, … or a native image id.")] = None,
    snapshot: Annotated[Optional[str], typer.Option(help="Start from a snapshot (id or name) instead of an image.")] = None,
    disk: Annotated[Optional[int], typer.Option("--disk", help="Root disk size in GB (default 20).")] = None,
    ssh_user: Annotated[Optional[str], typer.Option(help="The login account made on the VM (default: yours).")] = None,
    ssh_key: Annotated[Optional[Path], typer.Option(help="Public key file (default ~/.ssh/id_ed25519.pub).")] = None,
    bootstrap: Annotated[Optional[Path], typer.Option(help="A script run once on the VM after configuration.")] = None,
    label: Annotated[Optional[list[str]], typer.Option("--label", "-l", help="key=value; repeat for more.")] = None,
    ttl: Annotated[Optional[str], typer.Option(help="Lifetime, e.g. 8h; then stopped or deleted by policy.")] = None,
    idle: Annotated[Optional[str], typer.Option(help="Stop after this long idle, e.g. 30m.")] = None,
    idempotency_key: Annotated[Optional[str], typer.Option(help="Repeat a create safely (default: a fresh one).")] = None,
    wait: WaitOption = False,
    json_: JsonOption = False,
) -> None:
    """Ask for an instance; with --wait, follow it live until it is running."""
    out = Output(json_)
    if image and snapshot:
        raise typer.BadParameter("give --image or --snapshot, not both", param_hint="--snapshot")
    options = dict(zone=zone, image=image, disk=disk, ssh_user=ssh_user or default_ssh_user(),
                   ssh_public_key=read_public_key(ssh_key), labels=label or [], ttl=ttl, idle=idle,
                   bootstrap_script=read_text_file(bootstrap, "--bootstrap") if bootstrap else None)
    instance_body(name, provider="?", region="?", machine_type="?", **options)  # bad options: before any call
    with connect() as api:
        provider, region, machine_type = pick_placement(api, provider, region, machine_type)
        snapshot_id = resolve_snapshot(api, snapshot)["id"] if snapshot else None
        body = instance_body(name, provider=provider, region=region, machine_type=machine_type,
                             snapshot_id=snapshot_id, **options)
        key = idempotency_key or str(uuid.uuid4())
        instance = api.post("/v1/instances", body, headers={"Idempotency-Key": key})
        label_ = f"{instance['name']} ({instance['id']})"
        if not wait:
            if json_:
                out.json(instance)
            else:
                out.result(Text.assemble(f"{label_} ", status_text(instance["status"])))
                out.note(f"follow it: onebox events {instance['id']} --follow")
            return
        out.note(f"{label_} accepted; following its events")
        wait_for(api, out, instance, until={"running"})
        instance = api.get(f"/v1/instances/{instance['id']}")
        if json_:
            out.json(instance)
        else:
            out.result(Text.assemble(f"{label_} ", status_text(instance["status"]),
                                     f" at {address(instance)}: onebox ssh {instance['name']}"))


# --- reading --------------------------------------------------------------------------------------

def _health(instance: dict[str, Any]) -> str:
    health = instance.get("health") or {}
    state = health.get("state")
    if not state or state == "unknown":
        return ""
    cpu = health.get("cpu_percent")
    return f"{state} {cpu:.0f}% cpu" if isinstance(cpu, (int, float)) else state


@app.command("ls", rich_help_panel="Instances")
def list_instances(
    status: Annotated[Optional[str], typer.Option(help="Only this status (e.g. running, failed, deleted).")] = None,
    provider: Annotated[Optional[str], typer.Option(help="Only this provider.")] = None,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Deleted instances too.")] = False,
    owner: Annotated[Optional[str], typer.Option(help="Admins: one user's instances.")] = None,
    json_: JsonOption = False,
) -> None:
    """Your instances, newest first (deleted ones with --all)."""
    out = Output(json_)
    with connect() as api:
        params = {"status": status, "provider": provider, "owner": owner}
        items = list(api.pages("/v1/instances", **params))
        if all_ and status is None:
            items += list(api.pages("/v1/instances", **{**params, "status": "deleted"}))
            items.sort(key=lambda i: i["id"], reverse=True)  # ids sort by creation time
    if json_:
        out.json(items)
        return
    owners = len({i.get("owner") for i in items}) > 1 or owner is not None
    columns = ["NAME", "ID", "STATUS", *(["OWNER"] if owners else []), "PROVIDER", "REGION", "TYPE", "ADDRESS",
               "HEALTH", "CREATED"]
    rows = [[i["name"], i["id"], status_text(i["status"]), *([i.get("owner")] if owners else []), i["provider"],
             i.get("zone") or i["region"], i["machine_type"], address(i), _health(i), ago(i.get("created_at"))]
            for i in items]
    out.table(columns, rows, empty="no instances (create one: onebox create NAME)",
              optional=("HEALTH", "TYPE", "REGION", "CREATED", "PROVIDER", "OWNER"))


SHOWN = ("name", "id", "status", "error", "owner", "provider", "region", "zone", "machine_type", "image",
         "snapshot_id", "disk_gb", "public_ip", "private_ip", "ssh_port", "ssh_user", "cloud_id", "labels",
         "health", "created_at", "updated_at")


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@app.command(rich_help_panel="Instances")
def show(ref: Ref, json_: JsonOption = False) -> None:
    """One instance in full: status, error, address, SSH, health, labels."""
    out = Output(json_)
    with connect() as api:
        instance = resolve_instance(api, ref, include_deleted=True)
    if json_:
        out.json(instance)
        return
    error = instance.get("error") or {}
    health = instance.get("health") or {}
    gauges = [f"{name} {health[key]:.0f}%" for name, key in
              (("cpu", "cpu_percent"), ("memory", "memory_percent"), ("disk", "disk_percent"))
              if isinstance(health.get(key), (int, float))]
    pairs: list[tuple[str, Any]] = [
        ("name", instance["name"]), ("id", instance["id"]), ("status", status_text(instance["status"])),
        ("error", f"{error.get('code')} at step {error.get('step')}: {error.get('message')}" if error else None),
        ("owner", instance.get("owner")),
        ("where", " / ".join(x for x in (instance.get("provider"), instance.get("region"), instance.get("zone")) if x)),
        ("type", instance.get("machine_type")), ("image", instance.get("image")),
        ("snapshot", instance.get("snapshot_id")), ("disk", f"{instance['disk_gb']} GB" if instance.get("disk_gb") else None),
        ("address", address(instance)), ("private ip", instance.get("private_ip")),
        ("ssh", f"onebox ssh {instance['name']}" if instance.get("status") == "running" and instance.get("public_ip") else None),
        ("ssh user", instance.get("ssh_user")), ("cloud id", instance.get("cloud_id")),
        ("labels", ", ".join(f"{k}={v}" for k, v in sorted((instance.get("labels") or {}).items()))),
        ("health", " ".join([health.get("state", ""), *gauges,
                             f"(seen {ago(health['last_seen_at'])})" if health.get("last_seen_at") else ""]).strip()
         if health.get("state") not in (None, "unknown") else None),
        ("created", f"{local_time(instance.get('created_at'), date=True)} ({ago(instance.get('created_at'))})"),
        ("updated", local_time(instance.get("updated_at"), date=True)),
    ]
    # Fields this client does not know yet (a newer server's TTL, cost, …) are shown as they come.
    pairs += [(key.replace("_", " "), _value(value)) for key, value in instance.items() if key not in SHOWN]
    out.fields(pairs)


@app.command(rich_help_panel="Instances")
def events(
    ref: Ref,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new events until the instance "
                                                                "is deleted (exit 3 if it ends failed).")] = False,
    json_: Annotated[bool, typer.Option("--json", help="JSON: an array, or one event per line with --follow.")] = False,
) -> None:
    """What happened to an instance, oldest first."""
    out = Output(json_)
    with connect() as api:
        instance = resolve_instance(api, ref, include_deleted=True)
        if not follow:
            items = api.get(f"/v1/instances/{instance['id']}/events")
            if json_:
                out.json(items)
            else:
                for event in items:
                    out.out.print(event_line(event), soft_wrap=True)
            return
        printer = out.json_line if json_ else (lambda e: out.out.print(event_line(e), soft_wrap=True))
        try:
            Follower(api, instance["id"], until={"deleted"}, fail_on=set(), until_end=True,
                     label=instance["name"], on_event=printer).run()
        except KeyboardInterrupt:
            raise typer.Exit(ExitCode.INTERRUPTED) from None


# --- ssh ------------------------------------------------------------------------------------------

def ssh_command(instance: dict[str, Any], *, identity: Path | None, user: str | None, options: list[str],
                remote: list[str]) -> list[str]:
    """The ``ssh`` argv for an instance. The known-hosts entry is kept under the instance's id
    (``HostKeyAlias``), so a new instance on a reused address never trips over an old host key."""
    if user is None:
        # A local instance logs in the account running onebox, which is on this machine (the address is
        # a loopback one): this account, as the dashboard assumes too. Elsewhere, the instance's ssh_user.
        user = getpass.getuser() if instance.get("provider") == "local" else instance["ssh_user"]
    argv = ["ssh"]
    for option in options:  # the user's first: ssh keeps the first value it reads for each option
        argv += ["-o", option]
    if identity is not None:
        argv += ["-i", str(identity)]
    argv += ["-o", f"HostKeyAlias={instance['id']}", "-p", str(instance.get("ssh_port") or 22),
             f"{user}@{instance['public_ip']}"]
    return argv + remote


@app.command(rich_help_panel="Instances")
def ssh(
    ref: Ref,
    command: Annotated[Optional[list[str]], typer.Argument(metavar="[-- COMMAND...]", help="Run this instead of a shell.")] = None,
    identity: Annotated[Optional[Path], typer.Option("--identity", "-i", help="Private key file for ssh.")] = None,
    user: Annotated[Optional[str], typer.Option("--user", help="Log in as this account instead.")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="An ssh -o option; repeat for more.")] = None,
    print_command: Annotated[bool, typer.Option("--print", help="Print the ssh command instead of running it.")] = False,
) -> None:
    """Log in to an instance with the system's ssh (or run COMMAND there); exits with ssh's code."""
    with connect() as api:
        instance = resolve_instance(api, ref)
    if instance.get("status") != "running" or not instance.get("public_ip"):
        raise CliError(f"{instance['name']} is {instance['status']}; ssh needs it running", ExitCode.REFUSED)
    argv = ssh_command(instance, identity=identity, user=user, options=option or [], remote=command or [])
    if print_command:
        Output().result(shlex.join(argv))
        return
    binary = shutil.which("ssh")
    if binary is None:
        raise CliError("no ssh on this machine's PATH (install openssh-client)", ExitCode.REFUSED)
    os.execv(binary, argv)  # ssh's exit code becomes ours


# --- changing state -------------------------------------------------------------------------------

def _label(instance: dict[str, Any]) -> str:
    return f"{instance['name']} ({instance['id']})"


def _state_change(action: str, refs: list[str], *, wait: bool, json_: bool, until: set[str]) -> None:
    """POST /v1/instances/{id}/{action} for each; a 409 (wrong state) is reported and the others go on."""
    out = Output(json_)
    with connect() as api:
        instances = resolve_instances(api, refs)
        accepted: list[tuple[dict[str, Any], Any]] = []
        refused = 0
        for instance in instances:
            since = last_event_time(api, instance["id"]) if wait else None  # this change's events come after
            try:
                response = api.request("POST", f"/v1/instances/{instance['id']}/{action}")
            except ApiError as exc:
                # The instance was just read, so a bare 404/405 means the route itself is missing.
                if exc.status in (404, 405) and "instance" not in str(exc.problem.get("title", "")).lower():
                    raise CliError(f"the server at {api.url} cannot {action} instances "
                                   f"(POST /v1/instances/{{id}}/{action} answered {exc.status})") from None
                if exc.status != 409:
                    raise
                refused += 1
                current = exc.problem.get("current_status")
                out.error(CliError(f"cannot {action} {_label(instance)}: it is {current or 'in another state'}"))
                continue
            accepted.append((response.json() if response.content else instance, since))
            if not json_:
                out.note(f"{action} {_label(instance)}: accepted")
        results = []
        for instance, since in accepted:
            if wait:
                wait_for(api, out, instance, until=until, origin=instance["status"], since=since)
                instance = api.get(f"/v1/instances/{instance['id']}")
                if not json_:
                    out.result(Text.assemble(f"{_label(instance)} ", status_text(instance["status"])))
            results.append(instance)
    if json_:
        out.json(results)
    if refused:
        raise typer.Exit(ExitCode.REFUSED)


@app.command(rich_help_panel="Instances")
def stop(refs: Refs, wait: WaitOption = False, json_: JsonOption = False) -> None:
    """Stop instances (the disk is kept); --wait until stopped."""
    _state_change("stop", refs, wait=wait, json_=json_, until={"stopped"})


@app.command(rich_help_panel="Instances")
def start(refs: Refs, wait: WaitOption = False, json_: JsonOption = False) -> None:
    """Start stopped instances; --wait until running."""
    _state_change("start", refs, wait=wait, json_=json_, until={"running"})


@app.command(rich_help_panel="Instances")
def reboot(refs: Refs, wait: WaitOption = False, json_: JsonOption = False) -> None:
    """Reboot running instances; --wait until running again."""
    _state_change("reboot", refs, wait=wait, json_=json_, until={"running"})


@app.command(rich_help_panel="Instances")
def rm(refs: Refs, wait: WaitOption = False, json_: JsonOption = False) -> None:
    """Delete instances in their cloud (the record is kept); --wait until deleted.

    One already deleting or deleted is not an error: rm makes sure it is gone."""
    out = Output(json_)
    with connect() as api:
        instances = resolve_instances(api, refs)
        results, times = [], []
        for instance in instances:
            since = last_event_time(api, instance["id"]) if wait else None
            try:
                instance = api.delete(f"/v1/instances/{instance['id']}")
                if not json_:
                    out.note(f"delete {_label(instance)}: accepted")
            except ApiError as exc:
                if exc.status != 409:
                    raise
                if not json_:
                    out.note(f"{_label(instance)} is already {exc.problem.get('current_status', 'being deleted')}")
            results.append(instance)
            times.append(since)
        for index, instance in enumerate(results):
            if wait:
                wait_for(api, out, instance, until={"deleted"}, fail_on=set(), until_end=True, since=times[index])
                results[index] = instance = api.get(f"/v1/instances/{instance['id']}")
                if not json_:
                    out.result(Text.assemble(f"{_label(instance)} ", status_text(instance["status"])))
    if json_:
        out.json(results)
