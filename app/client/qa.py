"""``onebox qa``: run a QA suite on demand (from a laptop or a CI job), follow it, keep its report.

``onebox qa run --suite network --provider aws --type c6i.large --count 2 --junit qa.xml --report qa/``
provisions the instances when none are given (``--instance``), waits for them, starts the run
(``POST /v1/qa-runs``), follows its event stream with live progress (each check's verdict as it is
measured), downloads the report (``GET /v1/qa-runs/{id}/report?format=zip``: the HTML page, every chart
as PNG, the run as JSON, JUnit XML) and tears the instances it made down again — unless ``--keep``, and
also when interrupted (Ctrl-C, or the CI job cancelled: SIGTERM), in which case the run is cancelled
first. Exit codes: 0 passed; 3 a check failed (or the run ended in error or was cancelled); the
client's usual codes otherwise (1 refused, 2 usage, 4 unreachable, 130 interrupted).

``ls``, ``show``, ``cancel`` and ``report`` look at runs started before.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import secrets
import signal
import time
import zipfile
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.text import Text

from app.client.errors import ApiError, CliError, ExitCode
from app.client.follow import wait_for
from app.client.http import ApiClient, StreamBroken, connect
from app.client.instances import default_ssh_user, instance_body, pick_placement
from app.client.options import JsonOption
from app.client.output import Output, ago, local_time, status_text
from app.client.resolve import resolve_instances
from app.client.sse import COMMENT, SseParser, messages

app = typer.Typer(rich_help_panel="QA", help="QA benchmark suites on your instances: run, follow, report.")

FINAL = ("passed", "failed", "error", "cancelled")
RUN_ID = re.compile(r"^q-[0-9a-hjkmnp-tv-z]{26}$")
VERDICT_STYLES = {"pass": "green", "fail": "bold red", "error": "yellow", "skip": "dim"}
STATUS_STYLES = {"passed": "green", "failed": "bold red", "error": "yellow", "cancelled": "dim"}
MAX_FAILURES = 5


class Interrupted(Exception):
    """SIGTERM (a CI job cancelled) or SIGINT: stop, and clean up what this command made."""


def parse_params(values: list[str]) -> dict[str, Any]:
    """``--param k=v`` → the run's params: numbers as numbers, ``a,b`` as a list (pure)."""
    params: dict[str, Any] = {}
    for value in values:
        key, sep, raw = value.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"'{value}' is not key=value", param_hint="--param")
        if "," in raw:
            params[key] = [v.strip() for v in raw.split(",") if v.strip()]
            continue
        try:
            params[key] = int(raw)
        except ValueError:
            try:
                params[key] = float(raw)
            except ValueError:
                params[key] = raw  # the server names it if it is wrong
    return params


def throwaway_public_key() -> str:
    """A fresh ed25519 public key for instances made only to be tested: a QA run logs in with onebox's own
    key, so nobody needs the private half (it is never written anywhere)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " onebox-qa"


def verdict_text(verdict: str) -> Text:
    return Text(verdict, style=VERDICT_STYLES.get(verdict, ""))


def run_status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, "yellow"))


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C while the command runs, so a cancelled CI job cleans up too."""
    def raise_interrupted(signum, frame):  # noqa: ARG001 - the signal handler's signature
        raise Interrupted()

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted() from None
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- following a run ---------------------------------------------------------------------------------

def follow_run(api: ApiClient, out: Output, run: dict[str, Any], *, quiet: bool = False) -> str:
    """Print the run's events as they come (check verdicts stand out) until it ends; its final status."""
    parser = SseParser()
    failures = 0
    label = f"{run['suite']} run {run['id']}"
    spinner = out.err.status(Text(f"{label}: {run['status']}"), spinner="dots")
    with spinner:
        while True:
            headers = {"Last-Event-ID": parser.last_id} if parser.last_id else {}
            try:
                with api.stream(f"/v1/qa-runs/{run['id']}/events/stream", headers=headers) as response:
                    failures = 0
                    for message in messages(response.iter_lines(), parser):
                        if message.event in (COMMENT, "reconnect"):
                            if message.event == "reconnect":
                                break
                            continue
                        try:
                            data = json.loads(message.data) if message.data else {}
                        except ValueError:
                            continue
                        if message.event == "status":
                            line = Text(f"{label}: ")
                            line.append_text(run_status_text(data.get("status", "?")))
                            spinner.update(line)
                        elif message.event == "qa" and not quiet:
                            out.err.print(event_text(data), soft_wrap=True)
                        elif message.event == "end":
                            return data.get("status") or "?"
            except StreamBroken as broken:
                failures += 1
                if failures >= MAX_FAILURES:
                    raise broken.error from None
                time.sleep(min(2 ** (failures - 1), 8))


def event_text(event: dict[str, Any]) -> Text:
    kind = event.get("type") or ""
    line = Text(local_time(event.get("at")) + "  ", style="dim")
    line.append(f"{event.get('step') or '':<20}", style="bold")
    if kind.startswith("qa.") and kind[3:] in VERDICT_STYLES:
        line.append_text(verdict_text(kind[3:]))
        line.append("  " + str(event.get("message") or ""))
        return line
    line.append(f"{kind:<18}", style="red" if "failed" in kind else "dim")
    line.append("  " + str(event.get("message") or ""))
    return line


def save_report(api: ApiClient, run_id: str, report_dir: Path | None, junit: Path | None) -> list[Path]:
    """The report zip, unpacked into ``report_dir``; its JUnit XML also at ``junit``. The files written."""
    data = api.request("GET", f"/v1/qa-runs/{run_id}/report", params={"format": "zip"},
                       headers={"Accept": "application/zip"}).content
    written: list[Path] = []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        if any(Path(name).is_absolute() or ".." in Path(name).parts for name in names):
            raise CliError("the server sent a report with unexpected paths; nothing was written")
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            for name in names:
                target = report_dir / name
                target.write_bytes(archive.read(name))
                written.append(target)
        if junit is not None:
            junit.parent.mkdir(parents=True, exist_ok=True)
            junit.write_bytes(archive.read("junit.xml"))
            written.append(junit)
    return written


def summary_lines(run: dict[str, Any]) -> list[Text]:
    lines = []
    for r in run.get("results", []):
        line = Text("  ")
        line.append_text(verdict_text(r["verdict"]))
        where = f" [{r['target']}]" if r.get("target") else ""
        line.append(f"  {r['check']}{where}  {r['instance_id']}  ", style="bold")
        line.append(str(r.get("message") or ""))
        lines.append(line)
    return lines


# --- run -------------------------------------------------------------------------------------------

def _provision(api: ApiClient, out: Output, suite: str, count: int, provider: str | None, region: str | None,
               machine_type: str | None, image: str | None, ssh_user: str | None, made: list[dict]) -> list[dict]:
    provider, region, machine_type = pick_placement(api, provider, region, machine_type)
    tag = secrets.token_hex(3)
    key = throwaway_public_key()
    for n in range(1, count + 1):
        body = instance_body(f"qa-{suite}-{tag}-{n}", provider=provider, region=region, machine_type=machine_type,
                             image=image, ssh_user=ssh_user or default_ssh_user(), ssh_public_key=key,
                             labels=["purpose=qa"])
        created = api.post("/v1/instances", body, headers={"Idempotency-Key": f"qa-{tag}-{n}"})
        made.append(created)  # from here on it is ours to tear down, whatever happens
        out.note(f"{created['name']} ({created['id']}) accepted: {provider}/{region}/{machine_type}")
    ready = []
    for instance in made:
        wait_for(api, out, instance, until={"running"}, print_events=False)
        ready.append(api.get(f"/v1/instances/{instance['id']}"))
    return ready


def _teardown(api: ApiClient, out: Output, made: list[dict]) -> None:
    for instance in made:
        try:
            api.delete(f"/v1/instances/{instance['id']}")
            out.note(f"deleting {instance['name']} ({instance['id']})")
        except ApiError as exc:
            if exc.status != 409:  # already deleting or deleted: nothing to do
                out.error(CliError(f"could not delete {instance['id']}: {exc.message}"))
        except CliError as exc:
            out.error(CliError(f"could not delete {instance['id']} ({exc.message}); delete it with "
                               f"`onebox rm {instance['id']}`"))


@app.command()
def run(
    suite: Annotated[str, typer.Option(help="smoke, network, disk, cpu, memory or gpu.")],
    instance: Annotated[Optional[list[str]], typer.Option("--instance", "-i", metavar="ID|NAME",
                                                          help="Test these instances (repeat; network: client, then "
                                                               "server). None: new ones are made and torn down.")] = None,
    provider: Annotated[Optional[str], typer.Option(help="New instances: aws, gcp, azure or local.")] = None,
    region: Annotated[Optional[str], typer.Option(help="New instances: the region.")] = None,
    machine_type: Annotated[Optional[str], typer.Option("--type", "-t", help="New instances: the machine type.")] = None,
    image: Annotated[Optional[str], typer.Option(help="New instances: the image.")] = None,
    count: Annotated[Optional[int], typer.Option(min=1, max=8, help="New instances: how many (network: 2, "
                                                                   "others: 1).")] = None,
    ssh_user: Annotated[Optional[str], typer.Option(help="New instances: the login account (default: yours).")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="A suite parameter, key=value "
                                                                            "(`onebox qa suites`); repeat.")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the instances this command made.")] = False,
    junit: Annotated[Optional[Path], typer.Option(help="Write the results as JUnit XML here.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write the report here: report.html, the charts (PNG), "
                                                       "run.json, junit.xml.")] = None,
    json_: JsonOption = False,
) -> None:
    """Run a suite: make the instances if none are given, follow the run live, save its report, tear down."""
    out = Output(json_)
    params = parse_params(param or [])
    if instance and any(v is not None for v in (provider, region, machine_type, image, count)):
        raise typer.BadParameter("give --instance, or the new instances' options, not both", param_hint="--instance")
    made: list[dict] = []
    run_doc: dict[str, Any] | None = None
    with connect() as api, interruptible():
        try:
            if instance:
                targets = resolve_instances(api, instance)
            else:
                wanted = count or (2 if suite == "network" else 1)
                targets = _provision(api, out, suite, wanted, provider, region, machine_type, image, ssh_user, made)
            body = {"suite": suite, "instances": [t["id"] for t in targets], **({"params": params} if params else {})}
            run_doc = api.post("/v1/qa-runs", body)
            out.note(f"{suite} run {run_doc['id']} queued on {', '.join(t['name'] for t in targets)}")
            status = follow_run(api, out, run_doc, quiet=json_)
            run_doc = api.get(f"/v1/qa-runs/{run_doc['id']}")
            if report or junit:
                for path in save_report(api, run_doc["id"], report, junit):
                    out.note(f"wrote {path}")
        except (Interrupted, KeyboardInterrupt, CliError) as stopped:
            if run_doc is not None and run_doc.get("status") not in FINAL:
                with contextlib.suppress(CliError):
                    api.delete(f"/v1/qa-runs/{run_doc['id']}")
                    out.note(f"cancelled run {run_doc['id']}: its processes and files are removed on the instances")
            if not keep:
                _teardown(api, out, made)
            elif made:
                out.note("kept: " + ", ".join(i["id"] for i in made))
            interrupted = not isinstance(stopped, CliError) or stopped.code == ExitCode.INTERRUPTED
            if interrupted:
                raise CliError("interrupted: the run was cancelled" + ("" if keep or not made else
                                                                     " and the instances made for it deleted"),
                               ExitCode.INTERRUPTED) from None
            raise
        if not keep:
            _teardown(api, out, made)
        elif made:
            out.note("kept: " + ", ".join(i["id"] for i in made))
    _print_outcome(out, run_doc, json_)
    if status != "passed":
        error = run_doc.get("error") or {}
        reason = f": {error.get('code')}: {error.get('message')}" if error else ""
        raise CliError(f"{suite} run {run_doc['id']} {status}{reason}", ExitCode.FAILED)


def _print_outcome(out: Output, run_doc: dict[str, Any], json_: bool) -> None:
    if json_:
        out.json(run_doc)
        return
    for line in summary_lines(run_doc):
        out.result(line)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(run_doc.get("summary", {}).items()))
    line = Text(f"{run_doc['suite']} run {run_doc['id']} ")
    line.append_text(run_status_text(run_doc["status"]))
    line.append(f" ({counts or 'no result'})")
    out.result(line)


# --- looking at runs ---------------------------------------------------------------------------------

RunRef = Annotated[str, typer.Argument(metavar="RUN_ID", help="A QA run's id (q-…).")]


def _check_id(run_id: str) -> str:
    if not RUN_ID.match(run_id):
        raise typer.BadParameter(f"'{run_id}' is not a QA run id (q-…; see `onebox qa ls`)", param_hint="RUN_ID")
    return run_id


@app.command("ls")
def list_runs(
    suite: Annotated[Optional[str], typer.Option(help="Only this suite.")] = None,
    status: Annotated[Optional[str], typer.Option(help="Only this status.")] = None,
    json_: JsonOption = False,
) -> None:
    """Your QA runs, newest first."""
    out = Output(json_)
    with connect() as api:
        items = list(api.pages("/v1/qa-runs", suite=suite, status=status))
    if json_:
        out.json(items)
        return
    rows = [[r["id"], r["suite"], run_status_text(r["status"]),
             ", ".join(f"{n} {v}" for v, n in sorted(r.get("summary", {}).items())),
             ", ".join(t["name"] for t in r.get("targets", [])), ago(r.get("created_at"))] for r in items]
    out.table(["ID", "SUITE", "STATUS", "CHECKS", "INSTANCES", "CREATED"], rows,
              empty="no QA runs (start one: onebox qa run --suite smoke --instance NAME)", optional=("CREATED",))


@app.command()
def show(run_id: RunRef, json_: JsonOption = False) -> None:
    """One run: its status, instances and every check's result."""
    out = Output(json_)
    with connect() as api:
        doc = api.get(f"/v1/qa-runs/{_check_id(run_id)}")
    if json_:
        out.json(doc)
        return
    error = doc.get("error") or {}
    out.fields([("run", doc["id"]), ("suite", doc["suite"]), ("status", run_status_text(doc["status"])),
                ("error", f"{error.get('code')} at step {error.get('step')}: {error.get('message')}" if error else None),
                ("instances", ", ".join(f"{t['name']} ({t['provider']}/{t['machine_type']})" for t in doc["targets"])),
                ("params", ", ".join(f"{k}={v}" for k, v in doc.get("params", {}).items())),
                ("created", local_time(doc.get("created_at"), date=True))])
    for line in summary_lines(doc):
        out.result(line)


@app.command()
def cancel(run_id: RunRef) -> None:
    """Cancel a run: its processes are stopped and its files removed on the instances."""
    out = Output()
    with connect() as api:
        doc = api.delete(f"/v1/qa-runs/{_check_id(run_id)}")
    out.result(Text.assemble(f"{doc['suite']} run {doc['id']} ", status_text("cancelling")))


@app.command("report")
def get_report(
    run_id: RunRef,
    report: Annotated[Path, typer.Option("--dir", help="Where to write report.html, the charts, run.json, "
                                                       "junit.xml.")] = Path("."),
    junit: Annotated[Optional[Path], typer.Option(help="Also write the JUnit XML here.")] = None,
) -> None:
    """Download a run's report."""
    out = Output()
    with connect() as api:
        for path in save_report(api, _check_id(run_id), report, junit):
            out.note(f"wrote {path}")


@app.command()
def suites(json_: JsonOption = False) -> None:
    """The suites, their checks and parameters."""
    out = Output(json_)
    with connect() as api:
        found = api.get("/v1/qa-suites")
    if json_:
        out.json(found)
        return
    for s in found:
        out.result(Text(f"{s['name']}: {s['description']}", style="bold"))
        for c in s["checks"]:
            unit = f" ({c['unit']}, {c['better']} is better)" if c["kind"] == "measure" else " (pass/fail)"
            out.result(f"  check {c['name']}{unit}")
        for p in s["params"]:
            out.result(f"  --param {p['name']}={p['default'] if not isinstance(p['default'], list) else ','.join(p['default'])}"
                       f"  {p['description']}")
