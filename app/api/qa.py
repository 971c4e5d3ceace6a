"""HTTP routes for QA runs, their reports, the results history, and (admins) baselines."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from app.api.deps import PROBLEM_RESPONSES, DeadlineRoute, ServicesDep
from app.audit import Audit
from app.auth.deps import AdminUser, CurrentUser
from app.events.stream import QA_RUN, EventStream, Position
from app.instances.models import Event
from app.pagination import CURSOR_PATTERN
from app.problems import field_problem
from app.qa.models import (
    QaBaselineAdmin,
    QaBaselineSet,
    QaCheckView,
    QaHistory,
    QaParamView,
    QaRunCreate,
    QaRunList,
    QaRunPublic,
    QaSuiteView,
    SuiteName,
)
from app.qa.service import QaService
from app.qa.suites import SUITES

router = APIRouter(route_class=DeadlineRoute, tags=["qa"], responses=PROBLEM_RESPONSES)

ProviderName = Literal["aws", "gcp", "azure", "local", "qemu"]
RunStatus = Literal["pending", "running", "passed", "failed", "error", "cancelled"]
RUN_LINKS = {
    "GetQaRun": {"operationId": "get_qa_run", "parameters": {"run_id": "$response.body#/id"}},
    "CancelQaRun": {"operationId": "cancel_qa_run", "parameters": {"run_id": "$response.body#/id"}},
    "QaRunReport": {"operationId": "qa_run_report", "parameters": {"run_id": "$response.body#/id"}},
}


async def qa_service(services: ServicesDep) -> QaService:
    return QaService(services)


Qa = Annotated[QaService, Depends(qa_service)]


async def _public(qa: QaService, docs: list[dict]) -> list[QaRunPublic]:
    cancelling = await qa.cancel_flags(docs)
    return [QaRunPublic.from_doc(d, d["_id"] in cancelling) for d in docs]


@router.get("/v1/qa-suites", response_model=list[QaSuiteView], operation_id="list_qa_suites")
async def list_suites(user: CurrentUser) -> list[QaSuiteView]:
    """The suites, their checks (unit, direction, default tolerance) and parameters (defaults, bounds)."""
    return [QaSuiteView(
        name=s.name, description=s.description, min_instances=s.min_instances, max_instances=s.max_instances,
        checks=[QaCheckView(name=c.name, title=c.title, kind=c.kind, unit=c.unit, better=c.better,
                            tolerance_percent=c.tolerance_percent, auto_baseline=c.auto_baseline) for c in s.checks],
        params=[QaParamView(name=p.name, default=p.default, minimum=p.minimum, maximum=p.maximum,
                            choices=list(p.choices), description=p.description) for p in s.params],
        charts=list(s.charts), main_check=s.main_check) for s in SUITES.values()]


@router.post("/v1/qa-runs", status_code=202, response_model=QaRunPublic, operation_id="create_qa_run",
             responses={202: {"description": "stored and queued", "links": RUN_LINKS},
                        409: {"description": "an instance is not running, not configured, or under another QA run"}})
async def create_qa_run(body: QaRunCreate, user: CurrentUser, qa: Qa, response: Response, audit: Audit) -> QaRunPublic:
    """Run a suite on your running instances. It is queued; a worker installs the tools and runs the checks.
    Watch `status`, the events, or the event stream; the report is ready once the run has ended."""
    doc = await qa.create(user, body.suite, body.instances, body.params)
    await audit.record("qa_run.create", "qa_run", doc["_id"], suite=body.suite, instances=",".join(body.instances))
    response.headers["Location"] = f"/v1/qa-runs/{doc['_id']}"
    return QaRunPublic.from_doc(doc)


@router.get("/v1/qa-runs", response_model=QaRunList, operation_id="list_qa_runs")
async def list_qa_runs(
    user: CurrentUser,
    qa: Qa,
    suite: SuiteName | None = None,
    status: RunStatus | None = None,
    instance_id: Annotated[str | None, Query(max_length=64, description="runs that tested this instance")] = None,
    owner: Annotated[str | None, Query(max_length=200, description="admins only: one user's runs")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="next_cursor of the previous page")] = None,
) -> QaRunList:
    """Your QA runs, newest first."""
    docs, next_cursor = await qa.list(user, suite=suite, status=status, instance_id=instance_id, limit=limit,
                                      cursor=cursor, owner=owner)
    return QaRunList(items=await _public(qa, docs), next_cursor=next_cursor)


@router.get("/v1/qa-runs/{run_id}", response_model=QaRunPublic, operation_id="get_qa_run")
async def get_qa_run(run_id: str, user: CurrentUser, qa: Qa) -> QaRunPublic:
    [public] = await _public(qa, [await qa.get(user, run_id)])
    return public


@router.delete("/v1/qa-runs/{run_id}", status_code=202, response_model=QaRunPublic, operation_id="cancel_qa_run",
               responses={409: {"description": "already ended, or already being cancelled"}})
async def cancel_qa_run(run_id: str, user: CurrentUser, qa: Qa, audit: Audit) -> QaRunPublic:
    """Cancel the run: the command in flight is stopped within a second or so, every process of the run is
    stopped and its files removed on each instance; the run ends `cancelled`."""
    doc = await qa.cancel(user, run_id)
    await audit.record("qa_run.cancel", "qa_run", run_id, owner=doc["owner"])
    return QaRunPublic.from_doc(doc, cancel_requested=True)


@router.get("/v1/qa-runs/{run_id}/events", response_model=list[Event], operation_id="qa_run_events")
async def qa_run_events(run_id: str, user: CurrentUser, qa: Qa) -> list[Event]:
    """What happened during the run, oldest first: steps, tasks, each check's verdict."""
    return [Event.model_validate(e) for e in await qa.events(user, run_id)]


@router.get("/v1/qa-runs/{run_id}/events/stream", operation_id="qa_run_event_stream",
            response_class=StreamingResponse,
            responses={200: {"description": "Server-Sent Events: `status`, `qa` (one event), `end`, `reconnect`",
                             "content": {"text/event-stream": {}}}})
async def qa_run_event_stream(
    run_id: str,
    request: Request,
    user: CurrentUser,
    qa: Qa,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
) -> StreamingResponse:
    """The run's events and status as they happen, like an instance's stream; it ends with `event: end` once the
    run has ended."""
    await qa.get(user, run_id)
    try:
        start = Position.parse(last_event_id)
    except ValueError as exc:
        raise field_problem("Last-Event-ID", str(exc)) from None
    settings = services.settings
    stream = EventStream(services, run_id, start, request.is_disconnected, subject=QA_RUN)
    return StreamingResponse(
        stream.run(settings.events_stream_poll_seconds, settings.events_stream_keepalive_seconds,
                   settings.events_stream_max_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache, no-store", "X-Accel-Buffering": "no"},
    )


@router.get("/v1/qa-runs/{run_id}/report", operation_id="qa_run_report",
            responses={200: {"description": "HTML (default), one chart as PNG, or a zip of the page, every chart "
                                            "and the results as JSON",
                             "content": {"text/html": {}, "image/png": {}, "application/zip": {}}}})
async def qa_run_report(
    run_id: str,
    user: CurrentUser,
    qa: Qa,
    format: Literal["html", "png", "zip"] = "html",
    chart: Annotated[str | None, Query(max_length=40, description="with format=png: which chart (the run's "
                                                                  "`charts`; default: checks)")] = None,
) -> Response:
    """The run's report, drawn with matplotlib: a self-contained HTML page (charts embedded as PNG data URIs),
    one chart as PNG, or a zip of all of it. Available from the first result on; final once the run has ended."""
    from app.qa.report import ReportBuilder

    doc = await qa.get(user, run_id)
    builder = await ReportBuilder.load(qa, user, doc)
    if format == "png":
        name = chart or "checks"
        if name not in builder.chart_names():
            raise field_problem("chart", f"this run has no chart '{name}'; its charts: {', '.join(builder.chart_names())}")
        return Response(await builder.png(name), media_type="image/png",
                        headers={"Content-Disposition": f'inline; filename="{run_id}-{name}.png"'})
    if format == "zip":
        return Response(await builder.zip(), media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{run_id}-report.zip"'})
    if chart is not None:
        raise field_problem("chart", "only with format=png")
    return HTMLResponse(await builder.html(), headers={"Content-Security-Policy": REPORT_CSP})


# A report is a page of our own text and embedded images: nothing to fetch, nothing to run.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


@router.get("/v1/qa-history", response_model=QaHistory, operation_id="qa_history")
async def qa_history(
    user: CurrentUser,
    qa: Qa,
    suite: SuiteName,
    check: Annotated[str, Query(max_length=64)],
    provider: ProviderName | None = None,
    machine_type: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> QaHistory:
    """One check's values across your ended runs (admins: everyone's), newest first, with the baseline in
    force for each provider and machine type: what the comparison charts draw."""
    return QaHistory(**await qa.history(user, suite, check, provider=provider, machine_type=machine_type, limit=limit))


@router.get("/v1/qa-history/chart", operation_id="qa_history_chart",
            responses={200: {"description": "PNG", "content": {"image/png": {}}}})
async def qa_history_chart(
    user: CurrentUser,
    qa: Qa,
    suite: SuiteName,
    check: Annotated[str, Query(max_length=64)],
    by: Literal["time", "machine"] = "time",
    provider: ProviderName | None = None,
    machine_type: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    """The comparison as a chart: `by=time` draws each run's value over time with the baseline, one series per
    provider and machine type; `by=machine` compares providers and machine types (the median of their runs)."""
    from app.qa.report import history_png

    history = await qa.history(user, suite, check, provider=provider, machine_type=machine_type, limit=limit)
    return Response(await history_png(history, by), media_type="image/png")


# --- admins: baselines ----------------------------------------------------------------------------

@router.get("/v1/admin/qa-baselines", response_model=list[QaBaselineAdmin], operation_id="list_qa_baselines",
            tags=["admin"], responses={403: {"description": "not an admin"}})
async def list_baselines(admin: AdminUser, qa: Qa, suite: SuiteName | None = None) -> list[QaBaselineAdmin]:
    """The baselines admins set (derived ones are shown with each result and in `GET /v1/qa-history`)."""
    docs = await qa.repo.admin_baselines({"suite": suite} if suite else {})
    return [QaBaselineAdmin(**d) for d in docs]


BASELINE_PATH = "/v1/admin/qa-baselines/{suite}/{check}/{provider}/{machine_type}"


@router.put(BASELINE_PATH, response_model=QaBaselineAdmin, operation_id="set_qa_baseline", tags=["admin"],
            responses={403: {"description": "not an admin"}})
async def set_baseline(suite: SuiteName, check: str, provider: ProviderName, machine_type: str, body: QaBaselineSet,
                       admin: AdminUser, qa: Qa, audit: Audit) -> QaBaselineAdmin:
    """Set the baseline of one check on one provider and machine type: it wins over the derived one. A run fails
    the check when its value is worse than `value` by more than `tolerance_percent`."""
    doc = await qa.set_baseline(admin, suite, check, provider, machine_type, body.value, body.tolerance_percent)
    await audit.record("qa_baseline.set", "qa_baseline", f"{suite}/{check}/{provider}/{machine_type}",
                       value=str(body.value))
    return QaBaselineAdmin(**doc)


@router.delete(BASELINE_PATH, status_code=204, operation_id="delete_qa_baseline", tags=["admin"],
               responses={403: {"description": "not an admin"}})
async def delete_baseline(suite: SuiteName, check: str, provider: ProviderName, machine_type: str, admin: AdminUser,
                          qa: Qa, audit: Audit) -> Response:
    """Remove an admin's baseline: the derived one (if any) applies again."""
    await qa.delete_baseline(suite, check, provider, machine_type)
    await audit.record("qa_baseline.delete", "qa_baseline", f"{suite}/{check}/{provider}/{machine_type}")
    return Response(status_code=204)
