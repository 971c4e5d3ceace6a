"""Every Prometheus metric onebox exports, in one place (documented in the README, "Monitoring").

Counters and histograms are written where things happen — the HTTP middleware, the step runner,
the reaper, the database command listener — by whichever process does them, and added up over
all processes by ``GET /metrics`` (``app.observability.multiprocess``). What is state rather than
an event (instances by status, the build) is read at scrape time instead
(``app.observability.service``), so no process has to keep it.

Time-to-ready and time-to-delete are not timed by the worker that happens to finish a job (a job
can move between workers after a crash): they are derived from the record's own ``transitions``,
the history every change of status appends to (``app.lifecycle.states.recorded``), at the moment
the transition is written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from prometheus_client import Counter, Histogram

from app.clock import as_utc

NAMESPACE = "onebox"
# Provisioning takes seconds (local) to many minutes (a GPU VM plus configuration).
LIFETIME_BUCKETS = (1, 2, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

HTTP_REQUESTS = Counter("http_requests", "HTTP requests answered, by route template, method and status.",
                        ["route", "method", "status"], namespace=NAMESPACE)
HTTP_DURATION = Histogram("http_request_duration_seconds", "From a request's arrival to the end of its response "
                          "(event streams: the whole stream).", ["route", "method", "status"],
                          namespace=NAMESPACE, buckets=REQUEST_BUCKETS)

JOB_STEPS = Counter("job_steps", "Job steps run, by job kind, step and outcome (succeeded, retrying, failed, "
                    "waiting, handed_over, cancelled).", ["kind", "step", "outcome"], namespace=NAMESPACE)
JOB_STEP_DURATION = Histogram("job_step_duration_seconds", "How long one run of a step took, by job kind, step "
                              "and outcome.", ["kind", "step", "outcome"], namespace=NAMESPACE, buckets=STEP_BUCKETS)
JOBS_FINISHED = Counter("jobs_finished", "Jobs that ended, by kind and outcome (succeeded, failed, cancelled).",
                        ["kind", "outcome"], namespace=NAMESPACE)

TIME_TO_READY = Histogram("time_to_ready_seconds", "From an instance's request to its first `running`, per "
                          "provider (queueing, creation, boot and configuration).", ["provider"],
                          namespace=NAMESPACE, buckets=LIFETIME_BUCKETS)
TIME_TO_DELETE = Histogram("time_to_delete_seconds", "From an instance entering `deleting` to `deleted` (every "
                           "cloud resource confirmed gone), per provider.", ["provider"],
                           namespace=NAMESPACE, buckets=LIFETIME_BUCKETS)

FAILOVER_ATTEMPTS = Counter("failover_attempts", "Placements that failed and moved a create on to the next zone "
                            "or region, by provider and the cloud's error code.", ["provider", "code"],
                            namespace=NAMESPACE)

ORPHANS_FOUND = Counter("orphans_found", "Cloud resources the reaper found that no live record accounts for "
                        "(counted at every pass until removed), by provider and kind.", ["provider", "kind"],
                        namespace=NAMESPACE)
ORPHANS_REMOVED = Counter("orphans_removed", "Leaked cloud resources the reaper deleted, by provider and kind.",
                          ["provider", "kind"], namespace=NAMESPACE)
INSTANCES_LOST = Counter("instances_lost", "Running instances whose VM vanished from the cloud, by provider.",
                         ["provider"], namespace=NAMESPACE)
REAPER_PASSES = Counter("reaper_passes", "Reaper passes run (one process at a time), by outcome (ok, or "
                        "unreachable when a provider could not be listed).", ["outcome"], namespace=NAMESPACE)

POLICY_ACTIONS = Counter("policy_actions", "Actions the scheduler filed by itself (a stop or delete request), by "
                         "provider, the rule that fired (ttl, idle, stopped_too_long) and the action.",
                         ["provider", "rule", "action"], namespace=NAMESPACE)

AGENT_POSTS = Counter("agent_posts", "Agent metric posts, by outcome: accepted (2xx), refused (4xx: bad or revoked "
                      "token, invalid body, too large) or failed (5xx: not stored, the agent sends again).",
                      ["outcome"], namespace=NAMESPACE)
AGENT_SAMPLES = Counter("agent_samples_stored", "Agent samples stored (duplicates of a re-sent batch excluded).",
                        namespace=NAMESPACE)

DB_COMMANDS = Histogram("db_command_duration_seconds", "Database commands, by command name and outcome (ok, "
                        "error), from pymongo's command monitoring.", ["command", "outcome"],
                        namespace=NAMESPACE, buckets=DB_BUCKETS)


def _at(entry: dict[str, Any]) -> dt.datetime:
    return as_utc(entry["at"])


def seconds_to_ready(transitions: Iterable[dict[str, Any]]) -> float | None:
    """Request → first ``running``, once the history holds exactly one ``running`` (later ones are
    restarts, not a new request); None otherwise."""
    history = list(transitions)
    running = [t for t in history if t["to"] == "running"]
    if not history or len(running) != 1:
        return None
    return (_at(running[0]) - _at(history[0])).total_seconds()


def seconds_to_delete(transitions: Iterable[dict[str, Any]]) -> float | None:
    """Entering ``deleting`` → ``deleted``, from the last of each; None unless both are there."""
    history = list(transitions)
    deleting = [t for t in history if t["to"] == "deleting"]
    deleted = [t for t in history if t["to"] == "deleted"]
    if not deleting or not deleted:
        return None
    return (_at(deleted[-1]) - _at(deleting[-1])).total_seconds()


def observe_instance_transition(doc: dict[str, Any], target: str) -> None:
    """After an instance's status change to ``target`` was written (``doc`` is the record after it)."""
    provider = doc.get("provider") or "unknown"
    if target == "running":
        took = seconds_to_ready(doc.get("transitions") or [])
        if took is not None:
            TIME_TO_READY.labels(provider).observe(max(took, 0.0))
    elif target == "deleted":
        took = seconds_to_delete(doc.get("transitions") or [])
        if took is not None:
            TIME_TO_DELETE.labels(provider).observe(max(took, 0.0))


def step_ran(kind: str, step: str, outcome: str, seconds: float) -> None:
    JOB_STEPS.labels(kind, step, outcome).inc()
    JOB_STEP_DURATION.labels(kind, step, outcome).observe(max(seconds, 0.0))
