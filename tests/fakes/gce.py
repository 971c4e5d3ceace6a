"""A local, strict stand-in for the Compute Engine v1 REST API.

It speaks the real wire protocol (``/compute/v1/projects/{project}/...``, JSON
bodies, Operation resources, the real error body shape) so the real
``google.cloud.compute_v1`` clients talk to it unchanged; point them at it with
``ClientOptions(api_endpoint="http://127.0.0.1:<port>")`` and
``AnonymousCredentials()``.

Start it by hand::

    python -m tests.fakes.gce --port 8089 [--project onebox-test] [--op-seconds 1] [--step-seconds 1]

or in-process (tests)::

    server = GceFakeServer(GceFake(project="onebox-test")).start()
    server.url            # "http://127.0.0.1:<free port>"
    server.fake.inject_http_error(503, count=2)
    server.stop()

What it implements (everything else that the discovery document knows answers
501): instances insert/get/list/delete/aggregatedList/stop/start/reset; disks
get/list/aggregatedList/delete/createSnapshot; snapshots get/list/delete;
images get/getFromFamily/list; firewalls insert/get/list/delete; networks
get/list; machineTypes get/list; zones get/list; regions get/list;
zoneOperations get/wait; globalOperations get/wait.

Behaviour:

* Operations answer ``RUNNING`` first and ``DONE`` after ``op_polls`` later
  polls (default 1), or after ``op_seconds`` of wall time when set. A poll is
  a get/wait of the operation *or* a get of the resource it works on (the real
  service progresses whether or not anyone watches the operation, e.g. when
  the worker that inserted died and its successor only reads the instance).
  Every response is itself validated against the discovery schema
  (``check_responses``), so the fake cannot drift from what clients parse.
  Instances go PROVISIONING (insert running) -> STAGING (insert done) ->
  RUNNING (next read, or ``step_seconds``), and get natIP (203.0.113.0/24) and
  networkIP (10.128.0.0/20) on RUNNING. Delete: STOPPING until the delete
  operation is DONE, then 404. Stop: STOPPING until its operation is DONE,
  then TERMINATED with the ephemeral natIP released (networkIP kept). Start:
  PROVISIONING until DONE, then STAGING, then RUNNING with a new natIP. Reset:
  stays RUNNING, same addresses, a new ``lastStartTimestamp``. Stop, start and
  reset are refused (400 ``resourceNotReady``) while another operation works
  on the instance (its insert, delete, stop, start or reset), and reset on a
  VM that is not RUNNING; stopping a TERMINATED or starting a RUNNING VM is
  an operation that changes nothing. Snapshots: CREATING -> UPLOADING (operation
  done) -> READY (next read); DELETING -> 404.
* Strict: bodies and query strings are validated against the discovery
  document (``gce_schema``); names, labels, metadata, tags, references to
  images/snapshots/networks/machine types/disk types/zones are checked like the
  real API (400 invalid / 400 required / 404 notFound / 409 alreadyExists);
  ``requestId`` must be a UUID and a repeated insert/delete with the same one
  answers the first operation.
* Regional CPUS quota (``cpu_quota``, default 64): an insert beyond it ends in
  an operation error ``QUOTA_EXCEEDED``.

Control API (JSON, outside ``/compute``; Python methods of ``GceFake`` in brackets):

* ``POST /_fake/reset`` [``reset()``]: back to the seeded content, no faults.
* ``GET /_fake/state`` [``state()``]: every instance, disk, snapshot, firewall,
  operation, pending fault and the call log.
* ``GET|POST|DELETE /_fake/faults`` [``faults()``, ``inject_*``, ``clear_faults()``]. POST bodies:
  - ``{"type": "http", "status": 503, "count": 2, "method": "POST", "path": "/instances$", "retry_after": null}``:
    the next ``count`` Compute calls matching method/path (regex, searched in
    the URL path) answer that status (429 rateLimitExceeded, 503 backendError, …);
  - ``{"type": "operation_error", "code": "ZONE_RESOURCE_POOL_EXHAUSTED", "operation_type": "insert", "count": 1}``:
    the next matching operation ends DONE with that error (known codes carry
    their real message and httpErrorStatusCode; ``http_status`` and ``message``
    override);
  - ``{"type": "slow_operation", "polls": 5, "operation_type": "insert", "count": 1}``:
    the next matching operation stays RUNNING for that many polls;
  - ``{"type": "hold", "seconds": 3, "count": 1, "method": "GET", "path": "/instances/"}``:
    the next ``count`` matching calls are carried out, but their answer is held
    back that long (a client with a shorter read timeout sees a timeout and the
    call has still happened, as with a real slow or lost response).

  ``http`` and ``hold`` faults also take ``contains``: a string that must occur
  in the request (its path, query or body, or the target of the operation a
  get/wait asks about), so that a fault can hit one instance among many.
  ``skip`` lets that many matching calls through first; ``count`` -1 means
  until removed (``DELETE /_fake/faults/<id>``, ``remove_fault``).
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import fnmatch
import ipaddress
import itertools
import json
import random
import re
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from tests.fakes.gce_schema import (
    ApiError,
    Route,
    Validator,
    already_exists,
    global_query_params,
    invalid,
    not_found,
    not_ready,
    required,
    routes,
)

API = "https://www.googleapis.com/compute/v1/"
_URL_PREFIX = re.compile(r"^https?://[^/]+/compute/v1/")
NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?\Z")
LABEL_KEY_RE = re.compile(r"[a-z][a-z0-9_-]{0,62}\Z")
LABEL_VALUE_RE = re.compile(r"[a-z0-9_-]{0,63}\Z")
METADATA_KEY_RE = re.compile(r"[a-zA-Z0-9_-]{1,128}\Z")

DEFAULT_ZONES: dict[str, tuple[str, ...]] = {
    "us-central1": ("us-central1-a", "us-central1-b"),
    "europe-west1": ("europe-west1-b",),
}
# name: (guestCpus, memoryMb, isSharedCpu, description)
DEFAULT_MACHINE_TYPES: dict[str, tuple[int, int, bool, str]] = {
    "e2-micro": (2, 1024, True, "Efficient Instance, 2 vCPU (1/8 shared physical core) and 1 GB RAM"),
    "e2-small": (2, 2048, True, "Efficient Instance, 2 vCPU (1/4 shared physical core) and 2 GB RAM"),
    "e2-medium": (2, 4096, True, "Efficient Instance, 2 vCPU (1/2 shared physical core) and 4 GB RAM"),
    "n2-standard-2": (2, 8192, False, "2 vCPUs 8 GB RAM"),
    "g2-standard-4": (4, 16384, False, "4 vCPUs, 16 GB RAM, 1 NVIDIA L4"),
}
# accelerator-optimized machine types: name -> (acceleratorType, count), as the real API lists them
MACHINE_TYPE_ACCELERATORS: dict[str, tuple[str, int]] = {"g2-standard-4": ("nvidia-l4", 1)}
# (project, name, family, diskSizeGb, deprecated)
DEFAULT_IMAGES: tuple[tuple[str, str, str, int, bool], ...] = (
    ("ubuntu-os-cloud", "ubuntu-2204-jammy-v20240319", "ubuntu-2204-lts", 10, True),
    ("ubuntu-os-cloud", "ubuntu-2204-jammy-v20241004", "ubuntu-2204-lts", 10, False),
    ("ubuntu-os-cloud", "ubuntu-2404-noble-amd64-v20241004", "ubuntu-2404-lts-amd64", 10, False),
    ("debian-cloud", "debian-12-bookworm-v20241009", "debian-12", 10, False),
)
DISK_TYPES = ("pd-standard", "pd-balanced", "pd-ssd")

# Operation error codes the real API uses, with their HTTP status and message template.
OPERATION_ERRORS: dict[str, tuple[int, str]] = {
    "ZONE_RESOURCE_POOL_EXHAUSTED": (
        503,
        "The zone '{zone_path}' does not have enough resources available to fulfill the request.  "
        "Try a different zone, or try again later.",
    ),
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS": (
        503,
        "The zone '{zone_path}' does not have enough resources available to fulfill the request.  "
        "'(resource type:compute)'.",
    ),
    "QUOTA_EXCEEDED": (403, "Quota 'CPUS' exceeded.  Limit: {limit} in region {region}."),
    "RESOURCE_NOT_FOUND": (404, "The resource '{target}' was not found"),
    "RESOURCE_ALREADY_EXISTS": (409, "The resource '{target}' already exists"),
    "INTERNAL_ERROR": (500, "Internal error. Please try again or contact Google Support."),
    "RATE_LIMIT_EXCEEDED": (429, "Rate Limit Exceeded"),
}

_HTTP_FAULT_BODIES: dict[int, tuple[str, str, str]] = {
    # status: (reason, domain, message)
    429: ("rateLimitExceeded", "usageLimits", "Rate Limit Exceeded"),
    403: ("rateLimitExceeded", "usageLimits", "Rate Limit Exceeded"),
    500: ("backendError", "global", "Internal error. Please try again or contact Google Support."),
    502: ("backendError", "global", "Bad Gateway"),
    503: ("backendError", "global", "The service is currently unavailable."),
    504: ("backendError", "global", "Deadline exceeded"),
}


def _now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="milliseconds")


def _partial(link: str) -> str:
    """'https://…/compute/v1/projects/p/…' -> 'projects/p/…'."""
    return _URL_PREFIX.sub("", link)


def _region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def _fingerprint() -> str:
    return base64.b64encode(random.getrandbits(64).to_bytes(8, "big")).decode()


def _check_name(field_name: str, name: Any) -> None:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise invalid(field_name, name, f"Must be a match of regex '{NAME_RE.pattern[:-2]}'")


def _check_labels(field_name: str, labels: dict[str, str] | None) -> None:
    labels = labels or {}
    if len(labels) > 64:
        raise invalid(field_name, "", "Too many labels: at most 64 labels are allowed per resource.")
    for key, value in labels.items():
        if not LABEL_KEY_RE.match(key):
            raise invalid(
                field_name,
                "",
                f"Label key '{key}' violates format constraints. The key must start with a lowercase character, "
                "can only contain lowercase letters, numeric characters, underscores and dashes. "
                "The key can be at most 63 characters long.",
            )
        if not LABEL_VALUE_RE.match(value):
            raise invalid(
                field_name,
                "",
                f"Label value '{value}' violates format constraints. The value can only contain lowercase letters, "
                "numeric characters, underscores and dashes. The value can be at most 63 characters long.",
            )


# --------------------------------------------------------------------------------------
# list filters


_FILTER_TOKEN = re.compile(
    r'\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<q>"(?:[^"\\]|\\.)*")|(?P<op>!=|<=|>=|=|:|<|>)|(?P<w>[^\s()"=!:<>]+))'
)


class _FilterError(Exception):
    pass


def _parse_filter(text: str) -> Callable[[dict], bool]:
    """The subset of the Compute list filter language onebox and tests use.

    ``field = value``, ``!=``, ``:`` (has), ``<``/``>``, ``field eq regex``,
    ``field ne regex``; expressions in parentheses, joined by juxtaposition or
    ``AND`` (binding tighter than ``OR``); ``NOT`` prefix; ``*`` wildcards in
    ``=``. Fields are dotted paths into the resource (``labels.managed-by``).
    """
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _FILTER_TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise _FilterError(text)
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "q":
            value = json.loads(value)
        tokens.append((kind, value))
    it = 0

    def peek() -> tuple[str, str] | None:
        return tokens[it] if it < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal it
        if it >= len(tokens):
            raise _FilterError(text)
        it += 1
        return tokens[it - 1]

    def expr() -> Callable[[dict], bool]:
        parts = [and_expr()]
        while peek() == ("w", "OR"):
            take()
            parts.append(and_expr())
        return (lambda r: any(p(r) for p in parts)) if len(parts) > 1 else parts[0]

    def and_expr() -> Callable[[dict], bool]:
        parts = [term()]
        while True:
            nxt = peek()
            if nxt is None or nxt[0] == "rp" or nxt == ("w", "OR"):
                break
            if nxt == ("w", "AND"):
                take()
            parts.append(term())
        return (lambda r: all(p(r) for p in parts)) if len(parts) > 1 else parts[0]

    def term() -> Callable[[dict], bool]:
        nxt = take()
        if nxt == ("w", "NOT"):
            inner = term()
            return lambda r: not inner(r)
        if nxt[0] == "lp":
            inner = expr()
            if take()[0] != "rp":
                raise _FilterError(text)
            return inner
        if nxt[0] != "w":
            raise _FilterError(text)
        path = nxt[1].split(".")
        op_kind, op = take()
        if op_kind == "w" and op in ("eq", "ne"):
            pass
        elif op_kind != "op":
            raise _FilterError(text)
        val_kind, value = take()
        if val_kind not in ("w", "q"):
            raise _FilterError(text)
        return _comparison(path, op, value)

    result = expr()
    if it != len(tokens):
        raise _FilterError(text)
    ops = {value for kind, value in tokens if kind == "op"}
    if ops and any(t == ("w", "eq") or t == ("w", "ne") for t in tokens):
        raise _FilterError(text)  # regular-expression and AIP-160 expressions cannot be mixed
    return result


def _resolve(resource: Any, path: list[str]) -> Any:
    cur = resource
    for part in path:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _comparison(path: list[str], op: str, value: str) -> Callable[[dict], bool]:
    def test(resource: dict) -> bool:
        got = _resolve(resource, path)
        values = got if isinstance(got, list) else [got]
        if op in ("=", "!="):
            hit = any(
                v is not None and (fnmatch.fnmatchcase(_as_text(v), value) if "*" in value else _as_text(v) == value)
                for v in values
            )
            return hit if op == "=" else not hit
        if op == ":":
            if value == "*":
                return got is not None
            return any(v is not None and value in _as_text(v) for v in values)
        if op in ("eq", "ne"):
            try:
                hit = any(v is not None and re.fullmatch(value, _as_text(v)) for v in values)
            except re.error:
                raise _FilterError(value) from None
            return hit if op == "eq" else not hit
        if got is None:
            return False
        try:
            left, right = float(_as_text(got)), float(value)
        except ValueError:
            left, right = _as_text(got), value  # type: ignore[assignment]
        return {"<": left < right, ">": left > right, "<=": left <= right, ">=": left >= right}[op]

    return test


# --------------------------------------------------------------------------------------
# state


@dataclass
class _Op:
    key: tuple[str, str, str]  # (project, scope "zones/z" | "global", name)
    resource: dict
    polls_left: int
    deadline: float | None
    error_code: str | None = None
    error_message: str | None = None
    error_status: int | None = None
    on_done: Callable[[bool], None] | None = None


@dataclass
class _Fault:
    id: int
    type: str  # http | operation_error | slow_operation
    count: int
    method: str | None = None
    path: str | None = None
    status: int | None = None
    retry_after: float | None = None
    operation_type: str | None = None
    target: str | None = None
    code: str | None = None
    message: str | None = None
    http_status: int | None = None
    polls: int | None = None
    contains: str | None = None  # http/hold: must occur in the request (path, query, body, operation target)
    seconds: float | None = None  # hold: how long the answer is held back
    skip: int = 0  # http/hold: let that many matching calls through first


# A private header: how long _Handler holds the answer back (a "hold" fault); never sent.
HOLD_HEADER = "X-Gce-Fake-Hold"


class GceFake:
    """Compute Engine state and request handling; thread-safe; no networking of its own."""

    def __init__(
        self,
        project: str = "onebox-test",
        *,
        zones: dict[str, tuple[str, ...]] | None = None,
        op_polls: int = 1,
        op_seconds: float | None = None,
        step_seconds: float | None = None,
        page_size: int = 500,
        cpu_quota: int = 64,
        check_responses: bool = True,
    ) -> None:
        self.project = project
        self.zone_layout = dict(zones or DEFAULT_ZONES)
        self.op_polls = max(1, op_polls)
        self.op_seconds = op_seconds
        self.step_seconds = step_seconds
        self.page_size = page_size
        self.cpu_quota = cpu_quota
        self.check_responses = check_responses
        self._validator = Validator()
        self._lock = threading.RLock()
        self._routes = routes()
        self._ids = itertools.count(random.randrange(10**17, 9 * 10**17))
        self.reset()

    # ------------------------------------------------------------------ seeding / control
    def reset(self) -> None:
        """Forget everything but the seeded content; drop faults and the call log."""
        with self._lock:
            self.instances: dict[tuple[str, str, str], dict] = {}
            self.disks: dict[tuple[str, str, str], dict] = {}
            self.snapshots: dict[tuple[str, str], dict] = {}
            self.firewalls: dict[tuple[str, str], dict] = {}
            self.operations: dict[tuple[str, str, str], _Op] = {}
            self.request_ids: dict[tuple[str, str], tuple[str, str, str]] = {}
            self.calls: collections.deque[dict] = collections.deque(maxlen=20000)
            self._faults: list[_Fault] = []
            self._fired: dict[int, int] = {}  # fault id -> times it fired (kept after the fault is used up)
            self._fault_ids = itertools.count(1)
            self._nat_ips = itertools.cycle(str(ip) for ip in list(ipaddress.ip_network("203.0.113.0/24").hosts())[9:])
            self._internal_ips = itertools.cycle(
                str(ip) for ip in list(ipaddress.ip_network("10.128.0.0/20").hosts())[1:]
            )
            self._meta: dict[tuple, dict[str, Any]] = {}  # internal bookkeeping per resource key
            self._seed()

    def _seed(self) -> None:
        now = "2024-01-01T00:00:00.000-08:00"
        self.zones: dict[str, dict] = {}
        self.regions: dict[str, dict] = {}
        self.machine_types: dict[tuple[str, str], dict] = {}
        p = self.project
        for region, zones in self.zone_layout.items():
            self.regions[region] = {
                "kind": "compute#region",
                "id": str(next(self._ids)),
                "creationTimestamp": now,
                "name": region,
                "description": region,
                "status": "UP",
                "zones": [f"{API}projects/{p}/zones/{z}" for z in zones],
                "selfLink": f"{API}projects/{p}/regions/{region}",
                "supportsPzs": False,
            }
            for zone in zones:
                self.zones[zone] = {
                    "kind": "compute#zone",
                    "id": str(next(self._ids)),
                    "creationTimestamp": now,
                    "name": zone,
                    "description": zone,
                    "status": "UP",
                    "region": f"{API}projects/{p}/regions/{region}",
                    "selfLink": f"{API}projects/{p}/zones/{zone}",
                    "availableCpuPlatforms": ["Intel Cascade Lake", "AMD Milan"],
                    "supportsPzs": False,
                }
                for name, (cpus, mem, shared, desc) in DEFAULT_MACHINE_TYPES.items():
                    self.machine_types[(zone, name)] = {
                        "kind": "compute#machineType",
                        "id": str(next(self._ids)),
                        "creationTimestamp": now,
                        "name": name,
                        "description": desc,
                        "guestCpus": cpus,
                        "memoryMb": mem,
                        "imageSpaceGb": 0,
                        "maximumPersistentDisks": 128,
                        "maximumPersistentDisksSizeGb": "263168",
                        "zone": zone,
                        "selfLink": f"{API}projects/{p}/zones/{zone}/machineTypes/{name}",
                        "isSharedCpu": shared,
                        "architecture": "X86_64",
                    }
                    if name in MACHINE_TYPE_ACCELERATORS:
                        kind, count = MACHINE_TYPE_ACCELERATORS[name]
                        self.machine_types[(zone, name)]["accelerators"] = [
                            {"guestAcceleratorType": kind, "guestAcceleratorCount": count}]
        self.networks: dict[tuple[str, str], dict] = {
            (p, "default"): {
                "kind": "compute#network",
                "id": str(next(self._ids)),
                "creationTimestamp": now,
                "name": "default",
                "description": "Default network for the project",
                "selfLink": f"{API}projects/{p}/global/networks/default",
                "autoCreateSubnetworks": True,
                "subnetworks": [f"{API}projects/{p}/regions/{r}/subnetworks/default" for r in self.zone_layout],
                "routingConfig": {"routingMode": "REGIONAL"},
                "networkFirewallPolicyEnforcementOrder": "AFTER_CLASSIC_FIREWALL",
            }
        }
        self.images: dict[tuple[str, str], dict] = {}
        for index, (project, name, family, size, _deprecated) in enumerate(DEFAULT_IMAGES):
            image = {
                "kind": "compute#image",
                "id": str(next(self._ids)),
                "creationTimestamp": f"2024-0{1 + index}-01T00:00:00.000-08:00",
                "name": name,
                "description": f"{family}, {name}",
                "sourceType": "RAW",
                "status": "READY",
                "archiveSizeBytes": "1000000000",
                "diskSizeGb": str(size),
                "family": family,
                "selfLink": f"{API}projects/{project}/global/images/{name}",
                "labelFingerprint": "42WmSpB8rSM=",
                "guestOsFeatures": [{"type": "VIRTIO_SCSI_MULTIQUEUE"}, {"type": "UEFI_COMPATIBLE"}],
                "storageLocations": ["us", "eu", "asia"],
                "architecture": "X86_64",
            }
            self.images[(project, name)] = image
        for project, name, family, _, deprecated in DEFAULT_IMAGES:
            if deprecated:
                replacement = self._family_image(project, family, include_deprecated=False)
                self.images[(project, name)]["deprecated"] = {
                    "state": "DEPRECATED",
                    "replacement": replacement["selfLink"] if replacement else "",
                }

    # -- faults
    def inject_http_error(
        self,
        status: int,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
        contains: str | None = None,
        skip: int = 0,
    ) -> int:
        """The next ``count`` Compute calls matching method/path (regex)/contains answer ``status``."""
        return self._add_fault(
            _Fault(
                0,
                "http",
                count,
                method=method.upper() if method else None,
                path=path,
                status=status,
                retry_after=retry_after,
                contains=contains,
                skip=skip,
            )
        )

    def inject_hold(
        self,
        seconds: float,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        contains: str | None = None,
        skip: int = 0,
    ) -> int:
        """The next ``count`` matching calls are carried out but answered only after ``seconds``."""
        return self._add_fault(
            _Fault(0, "hold", count, method=method.upper() if method else None, path=path, contains=contains,
                   seconds=seconds, skip=skip)
        )

    def inject_operation_error(
        self,
        code: str,
        count: int = 1,
        *,
        operation_type: str | None = "insert",
        target: str | None = None,
        message: str | None = None,
        http_status: int | None = None,
    ) -> int:
        """The next ``count`` operations of that type (and target regex) end DONE with ``code``."""
        return self._add_fault(
            _Fault(
                0,
                "operation_error",
                count,
                operation_type=operation_type,
                target=target,
                code=code,
                message=message,
                http_status=http_status,
            )
        )

    def inject_slow_operation(
        self, polls: int, count: int = 1, *, operation_type: str | None = None, target: str | None = None
    ) -> int:
        """The next ``count`` matching operations stay RUNNING for ``polls`` get/wait calls."""
        return self._add_fault(
            _Fault(0, "slow_operation", count, operation_type=operation_type, target=target, polls=polls)
        )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def remove_fault(self, fault_id: int) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def fired(self, fault_id: int) -> int:
        """How many calls or operations that fault changed so far."""
        with self._lock:
            return self._fired.get(fault_id, 0)

    def faults(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def _add_fault(self, fault: _Fault) -> int:
        with self._lock:
            fault.id = next(self._fault_ids)
            self._faults.append(fault)
            return fault.id

    def add_fault(self, spec: dict) -> int:
        """A fault described as in ``POST /_fake/faults``."""
        spec = dict(spec)
        kind = spec.pop("type", None)
        count = int(spec.pop("count", 1))
        if kind == "http":
            return self.inject_http_error(int(spec.pop("status")), count, **spec)
        if kind == "operation_error":
            return self.inject_operation_error(spec.pop("code"), count, **spec)
        if kind == "slow_operation":
            return self.inject_slow_operation(int(spec.pop("polls")), count, **spec)
        if kind == "hold":
            return self.inject_hold(float(spec.pop("seconds")), count, **spec)
        raise ValueError(f"unknown fault type {kind!r}")

    def _take_http_fault(self, method: str, path: str, request: str = "", type_: str = "http") -> _Fault | None:
        """The first fault of ``type_`` matching the call (``request``: everything it mentions), used up once."""
        for fault in self._faults:
            if fault.type != type_:
                continue
            if fault.method and fault.method != method:
                continue
            if fault.path and not re.search(fault.path, path):
                continue
            if fault.contains and fault.contains not in request:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            self._fired[fault.id] = self._fired.get(fault.id, 0) + 1
            if fault.count > 0:  # -1: until removed
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
            return fault
        return None

    def _request_text(self, path: str, query: str, body: bytes) -> str:
        """What a call mentions, for ``contains``: path, query, body and an operation's target."""
        text = f"{unquote(path)}?{unquote(query)}\n{body.decode('utf-8', 'replace')}"
        m = re.search(r"/(zones/[^/]+|global)/operations/([^/?]+)", path)
        if m:
            for (_, scope, name), op in self.operations.items():
                if scope == m.group(1) and name == m.group(2):
                    text += "\n" + str(op.resource.get("targetLink", ""))
        return text

    def _take_op_faults(self, operation_type: str, target: str) -> list[_Fault]:
        taken: list[_Fault] = []
        for fault in list(self._faults):
            if fault.type not in ("operation_error", "slow_operation"):
                continue
            if any(t.type == fault.type for t in taken):
                continue
            if fault.operation_type and fault.operation_type != operation_type:
                continue
            if fault.target and not re.search(fault.target, target):
                continue
            self._fired[fault.id] = self._fired.get(fault.id, 0) + 1
            fault.count -= 1
            if fault.count <= 0:
                self._faults.remove(fault)
            taken.append(fault)
        return taken

    # -- inspection
    def state(self) -> dict:
        """Everything the fake holds, as the API would render it (for assertions)."""
        with self._lock:
            return {
                "project": self.project,
                "instances": [copy.deepcopy(i) for i in self.instances.values()],
                "disks": [copy.deepcopy(d) for d in self.disks.values()],
                "snapshots": [copy.deepcopy(s) for s in self.snapshots.values()],
                "firewalls": [copy.deepcopy(f) for f in self.firewalls.values()],
                "operations": [copy.deepcopy(o.resource) for o in self.operations.values()],
                "faults": [asdict(f) for f in self._faults],
                "calls": list(self.calls),
            }

    def managed(self) -> dict[str, list[dict]]:
        """Instances, disks and snapshots labelled managed-by=onebox."""
        with self._lock:
            pick = lambda rs: [copy.deepcopy(r) for r in rs if (r.get("labels") or {}).get("managed-by") == "onebox"]  # noqa: E731
            return {
                "instances": pick(self.instances.values()),
                "disks": pick(self.disks.values()),
                "snapshots": pick(self.snapshots.values()),
            }

    def count_calls(self, method_id: str, status: int | None = None) -> int:
        with self._lock:
            return sum(
                1 for c in self.calls if c["method_id"] == method_id and (status is None or c["status"] == status)
            )

    # ------------------------------------------------------------------ request entry point
    def handle(self, http_method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, str], Any]:
        """One HTTP request -> (status, extra headers, JSON payload)."""
        url = urlsplit(raw_path)
        path = url.path
        http_method = http_method.upper()
        if path.startswith("/_fake/"):
            return self._control(http_method, path, body)
        with self._lock:
            self._tick()
            method_id = None
            hold = None
            try:
                query = parse_qs(url.query, keep_blank_values=True)
                route_error = None
                try:
                    route, params = self._route(http_method, path)
                    method_id = route.method_id
                except ApiError as exc:
                    route_error = exc
                request = self._request_text(path, url.query, body) if self._faults else ""
                fault = self._take_http_fault(http_method, path, request)
                if fault:
                    raise self._fault_error(fault)
                hold = self._take_http_fault(http_method, path, request, "hold")
                if route_error:
                    raise route_error
                handler = getattr(self, "_" + method_id.removeprefix("compute.").replace(".", "_"), None)
                if handler is None:
                    raise ApiError(501, "notImplemented", f"Method {method_id} is not implemented by the GCE fake.")
                self._check_path_params(route, params)
                q = self._check_query(route, query)
                payload = None
                if route.request_ref:
                    payload = self._parse_body(route, body)
                result = handler(params, q, payload) if route.request_ref else handler(params, q)
                if self.check_responses and route.response_ref:
                    self._validator.response(route.response_ref, result)
                status, headers = 200, {}
            except ApiError as exc:
                status, headers, result = exc.status, dict(exc.headers), exc.body()
            if hold is not None:  # whatever the answer (a 404 too), it comes late
                headers[HOLD_HEADER] = f"{hold.seconds or 0:g}"
            self.calls.append(
                {"method": http_method, "path": path, "query": url.query, "status": status, "method_id": method_id}
            )
            return status, headers, result

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], Any]:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return 400, {}, {"error": "body is not JSON"}
        if path == "/_fake/reset" and method == "POST":
            self.reset()
            return 200, {}, {"ok": True}
        if path == "/_fake/state" and method == "GET":
            return 200, {}, self.state()
        if path == "/_fake/faults":
            if method == "GET":
                return 200, {}, {"faults": self.faults()}
            if method == "DELETE":
                self.clear_faults()
                return 200, {}, {"ok": True}
            if method == "POST":
                try:
                    return 200, {}, {"id": self.add_fault(data)}
                except (KeyError, TypeError, ValueError) as exc:
                    return 400, {}, {"error": f"bad fault: {exc}"}
        if path.startswith("/_fake/faults/") and method == "DELETE":
            self.remove_fault(int(path.rsplit("/", 1)[1]))
            return 200, {}, {"ok": True}
        return 404, {}, {"error": f"no control endpoint {method} {path}"}

    def _fault_error(self, fault: _Fault) -> ApiError:
        status = fault.status or 503
        reason, domain, message = _HTTP_FAULT_BODIES.get(status, ("backendError", "global", HTTPStatus(status).phrase))
        headers = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        return ApiError(status, reason, message, domain=domain, headers=headers)

    def _route(self, http_method: str, path: str) -> tuple[Route, dict[str, str]]:
        if not path.startswith("/compute/v1/"):
            raise ApiError(404, "notFound", f"The requested URL {path} was not found on this server.")
        rel = path[len("/compute/v1/") :]
        wrong_verb = False
        for route in self._routes:
            m = route.regex.match(rel)
            if not m:
                continue
            if route.http_method != http_method:
                wrong_verb = True
                continue
            return route, {k: unquote(v) for k, v in m.groupdict().items()}
        if wrong_verb:
            raise ApiError(405, "methodNotAllowed", f"Method {http_method} is not allowed for {path}.")
        raise ApiError(404, "notFound", f"The requested URL {path} was not found on this server.")

    def _check_path_params(self, route: Route, params: dict[str, str]) -> None:
        for name, value in params.items():
            pattern = route.path_params.get(name, {}).get("pattern")
            if pattern and not re.fullmatch(pattern, value):
                raise invalid(name, value, f"Must be a match of regex '{pattern}'")
        project = params.get("project")
        image_projects = {p for p, _ in self.images}
        if project is not None and project != self.project:
            if not (route.method_id.startswith("compute.images.") and project in image_projects):
                raise not_found(f"projects/{project}")
        zone = params.get("zone")
        if zone is not None and zone not in self.zones:
            raise invalid("zone", zone, "Unknown zone.")
        region = params.get("region")
        if region is not None and region not in self.regions:
            raise invalid("region", region, "Unknown region.")

    def _check_query(self, route: Route, query: dict[str, list[str]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        known_global = global_query_params()
        for key, values in query.items():
            spec = route.query_params.get(key) or known_global.get(key)
            if spec is None:
                raise ApiError(
                    400,
                    "invalid",
                    f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter. '
                    f"Field '{key}' could not be found in request message.",
                    with_status=True,
                )
            if len(values) > 1 and not spec.get("repeated"):
                raise invalid(key, values, "Parameter may only be given once.")
            value: Any = values[0]
            typ = spec.get("type")
            if typ == "boolean":
                if value not in ("true", "false"):
                    raise invalid(key, value, "Must be 'true' or 'false'.")
                value = value == "true"
            elif typ == "integer":
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise invalid(key, value, "Must be an integer.")
                value = int(value)
                if spec.get("minimum") is not None and value < int(spec["minimum"]):
                    raise invalid(key, value, f"Must be at least {spec['minimum']}.")
            elif spec.get("enum") and value not in spec["enum"]:
                raise invalid(key, value, f"Must be one of [{', '.join(spec['enum'])}].")
            out[key] = value
        if "requestId" in out:
            try:
                rid = uuid.UUID(out["requestId"])
            except ValueError:
                raise invalid("requestId", out["requestId"], "The request ID must be a valid UUID.") from None
            if rid.int == 0:
                raise invalid("requestId", out["requestId"], "The zero UUID is not supported.")
        return out

    def _parse_body(self, route: Route, body: bytes) -> dict:
        if not body:
            body = b"{}"
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError(
                400, "parseError", "Invalid JSON payload received. Unexpected token.", with_status=True
            ) from None
        return self._validator.request(route.request_ref, data)

    # ------------------------------------------------------------------ time / progress
    def _tick(self) -> None:
        now = time.monotonic()
        for op in list(self.operations.values()):
            if op.resource["status"] != "DONE" and op.deadline is not None and now >= op.deadline:
                self._finish(op)
        if self.step_seconds is not None:
            for key, inst in list(self.instances.items()):
                meta = self._meta.get(key, {})
                if inst["status"] == "STAGING" and now - meta.get("staged_at", now) >= self.step_seconds:
                    self._set_running(key)
            for key, snap in list(self.snapshots.items()):
                meta = self._meta.get(("snapshot",) + key, {})
                if snap["status"] == "UPLOADING" and now - meta.get("uploading_at", now) >= self.step_seconds:
                    snap["status"] = "READY"

    def _new_op(
        self,
        project: str,
        scope: str,
        operation_type: str,
        target_link: str,
        target_id: str | None,
        on_done: Callable[[bool], None] | None,
        *,
        request_id: str | None = None,
        error: tuple[str, str, int] | None = None,
    ) -> dict:
        name = (
            f"operation-{int(time.time() * 1000)}-{uuid.uuid4().hex[:13]}-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:8]}"
        )
        now = _now_iso()
        resource: dict[str, Any] = {
            "kind": "compute#operation",
            "id": str(next(self._ids)),
            "name": name,
            "operationType": operation_type,
            "targetLink": target_link,
            "status": "RUNNING",
            "user": "onebox-fake@example.iam.gserviceaccount.com",
            "progress": 0,
            "insertTime": now,
            "startTime": now,
            "selfLink": f"{API}projects/{project}/{scope}/operations/{name}",
        }
        if target_id:
            resource["targetId"] = target_id
        if scope.startswith("zones/"):
            resource["zone"] = f"{API}projects/{project}/{scope}"
        polls = self.op_polls
        deadline = time.monotonic() + self.op_seconds if self.op_seconds is not None else None
        op = _Op((project, scope, name), resource, polls, deadline, on_done=on_done)
        if error:
            op.error_code, op.error_message, op.error_status = error
        for fault in self._take_op_faults(operation_type, target_link):
            if fault.type == "slow_operation":
                op.polls_left = (fault.polls or 0) + 1
                op.deadline = None
            else:
                op.error_code = fault.code
                status, template = OPERATION_ERRORS.get(fault.code or "", (fault.http_status or 400, "{code}"))
                op.error_status = fault.http_status or status
                op.error_message = fault.message or self._op_error_message(template, fault.code or "", resource, scope)
        self.operations[op.key] = op
        if request_id:
            self.request_ids[(project, request_id)] = op.key
        return copy.deepcopy(resource)

    def _op_error_message(self, template: str, code: str, op: dict, scope: str) -> str:
        zone = scope.split("/", 1)[1] if scope.startswith("zones/") else ""
        return template.format(
            code=code,
            zone_path=f"projects/{self.project}/zones/{zone}",
            region=_region_of(zone) if zone else "global",
            limit=f"{float(self.cpu_quota)}",
            target=_partial(op["targetLink"]),
        )

    def _poll(self, op: _Op) -> None:
        if op.resource["status"] == "DONE":
            return
        op.polls_left -= 1
        if op.polls_left <= 0:
            self._finish(op)

    def _finish(self, op: _Op) -> None:
        res = op.resource
        res["status"] = "DONE"
        res["progress"] = 100
        res["endTime"] = _now_iso()
        ok = op.error_code is None
        if not ok:
            res["error"] = {"errors": [{"code": op.error_code, "message": op.error_message}]}
            res["httpErrorStatusCode"] = op.error_status
            res["httpErrorMessage"] = HTTPStatus(op.error_status).phrase.upper() if op.error_status else "ERROR"
        if op.on_done:
            op.on_done(ok)

    def _replay(self, project: str, query: dict[str, Any]) -> dict | None:
        rid = query.get("requestId")
        if rid and (project, rid) in self.request_ids:
            key = self.request_ids[(project, rid)]
            if key in self.operations:
                return copy.deepcopy(self.operations[key].resource)
        return None

    # ------------------------------------------------------------------ reference parsing
    def _ref(self, field_name: str, value: str, pattern: str, what: str) -> dict[str, str]:
        m = re.fullmatch(pattern, _partial(value))
        if not m:
            raise invalid(field_name, value, f"The URL is malformed or does not refer to a {what}.")
        return {k: v for k, v in m.groupdict().items() if v is not None}

    def _resolve_machine_type(self, field_name: str, value: str, zone: str) -> dict:
        ref = self._ref(
            field_name,
            value,
            r"(?:projects/(?P<project>[^/]+)/)?zones/(?P<zone>[^/]+)/machineTypes/(?P<name>[^/]+)",
            "machine type",
        )
        if ref.get("project", self.project) != self.project:
            raise invalid(field_name, value, "Machine type must be in the same project as the instance.")
        if ref["zone"] != zone:
            raise invalid(
                field_name, value, f"Machine type zone '{ref['zone']}' does not match instance zone '{zone}'."
            )
        mt = self.machine_types.get((zone, ref["name"]))
        if mt is None:
            raise invalid(field_name, value, f"Machine type with name '{ref['name']}' does not exist in zone '{zone}'.")
        return mt

    def _resolve_image(self, field_name: str, value: str) -> dict:
        ref = self._ref(
            field_name,
            value,
            r"(?:projects/(?P<project>[^/]+)/)?global/images/(?:family/(?P<family>[^/]+)|(?P<name>[^/]+))",
            "image",
        )
        project = ref.get("project", self.project)
        if "family" in ref:
            image = self._family_image(project, ref["family"])
            if image is None:
                raise not_found(f"projects/{project}/global/images/family/{ref['family']}")
            return image
        image = self.images.get((project, ref["name"]))
        if image is None:
            raise not_found(f"projects/{project}/global/images/{ref['name']}")
        if (image.get("deprecated") or {}).get("state") in ("OBSOLETE", "DELETED"):
            raise invalid(field_name, value, "The image is obsolete and cannot be used.")
        return image

    def _family_image(self, project: str, family: str, include_deprecated: bool = False) -> dict | None:
        """The newest image of the family that is not deprecated (what getFromFamily answers)."""
        deprecated = {(p, n) for p, n, _, _, d in DEFAULT_IMAGES if d}
        candidates = [
            i
            for (p, n), i in self.images.items()
            if p == project
            and i.get("family") == family
            and (include_deprecated or ((p, n) not in deprecated and not (i.get("deprecated") or {}).get("state")))
        ]
        return max(candidates, key=lambda i: i["creationTimestamp"]) if candidates else None

    def _resolve_snapshot(self, field_name: str, value: str) -> dict:
        ref = self._ref(
            field_name, value, r"(?:projects/(?P<project>[^/]+)/)?global/snapshots/(?P<name>[^/]+)", "snapshot"
        )
        project = ref.get("project", self.project)
        snap = self.snapshots.get((project, ref["name"]))
        if snap is None:
            raise not_found(f"projects/{project}/global/snapshots/{ref['name']}")
        if snap["status"] != "READY":
            raise not_ready(f"projects/{project}/global/snapshots/{ref['name']}")
        return snap

    def _resolve_network(self, field_name: str, value: str) -> dict:
        ref = self._ref(
            field_name, value, r"(?:projects/(?P<project>[^/]+)/)?global/networks/(?P<name>[^/]+)", "network"
        )
        net = self.networks.get((ref.get("project", self.project), ref["name"]))
        if net is None:
            raise invalid(field_name, value, "The referenced network resource cannot be found.")
        return net

    def _resolve_disk_type(self, field_name: str, value: str, zone: str) -> str:
        ref = self._ref(
            field_name,
            value,
            r"(?:projects/(?P<project>[^/]+)/)?(?:zones/(?P<zone>[^/]+)/diskTypes/)?(?P<name>[^/]+)",
            "disk type",
        )
        if ref.get("zone", zone) != zone or ref["name"] not in DISK_TYPES:
            raise invalid(field_name, value, "The referenced disk type resource cannot be found.")
        return f"{API}projects/{self.project}/zones/{zone}/diskTypes/{ref['name']}"

    # ------------------------------------------------------------------ listing helpers
    def _filtered(self, items: list[dict], query: dict[str, Any]) -> list[dict]:
        text = query.get("filter")
        if text:
            try:
                predicate = _parse_filter(text)
                items = [i for i in items if predicate(i)]
            except _FilterError:
                raise invalid("filter", text, "Invalid list filter expression.") from None
        order = query.get("orderBy")
        if order:
            m = re.fullmatch(r"(name|creationTimestamp)(\s+desc)?", order.strip())
            if not m:
                raise invalid("orderBy", order, "Sorting by this field is not supported.")
            items = sorted(items, key=lambda i: i.get(m.group(1), ""), reverse=bool(m.group(2)))
        return items

    def _page(self, items: list[Any], query: dict[str, Any]) -> tuple[list[Any], str | None]:
        size = min(int(query.get("maxResults") or 500), 500, self.page_size)
        offset = 0
        token = query.get("pageToken")
        if token:
            try:
                offset = int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("o:"))
            except (ValueError, UnicodeDecodeError):
                raise invalid("pageToken", token, "Invalid page token.") from None
        page = items[offset : offset + size]
        nxt = offset + size
        return page, (base64.urlsafe_b64encode(f"o:{nxt}".encode()).decode() if nxt < len(items) else None)

    def _list(self, kind: str, self_link: str, items: list[dict], query: dict[str, Any]) -> dict:
        page, token = self._page(self._filtered(items, query), query)
        out: dict[str, Any] = {"kind": kind, "id": _partial(self_link), "items": page, "selfLink": self_link}
        if token:
            out["nextPageToken"] = token
        return out

    def _aggregated(
        self, kind: str, key: str, project: str, by_zone: dict[str, list[dict]], query: dict[str, Any]
    ) -> dict:
        flat = [(zone, item) for zone in sorted(self.zones) for item in self._filtered(by_zone.get(zone, []), query)]
        page, token = self._page(flat, query)
        items: dict[str, dict] = {}
        for zone in sorted(self.zones):
            mine = [item for z, item in page if z == zone]
            scope = f"zones/{zone}"
            if mine:
                items[scope] = {key: mine}
            else:
                items[scope] = {
                    "warning": {
                        "code": "NO_RESULTS_ON_PAGE",
                        "message": f"There are no results for scope '{scope}' on this page.",
                        "data": [{"key": "scope", "value": scope}],
                    }
                }
        out: dict[str, Any] = {
            "kind": kind,
            "id": f"projects/{project}/aggregated/{key}",
            "items": items,
            "selfLink": f"{API}projects/{project}/aggregated/{key}",
        }
        if token:
            out["nextPageToken"] = token
        return out

    # ------------------------------------------------------------------ zones / regions / machine types / networks
    def _zones_get(self, p: dict, q: dict) -> dict:
        return copy.deepcopy(self.zones[p["zone"]])

    def _zones_list(self, p: dict, q: dict) -> dict:
        return self._list(
            "compute#zoneList",
            f"{API}projects/{p['project']}/zones",
            [copy.deepcopy(z) for z in self.zones.values()],
            q,
        )

    def _regions_get(self, p: dict, q: dict) -> dict:
        return self._region_view(p["region"])

    def _regions_list(self, p: dict, q: dict) -> dict:
        return self._list(
            "compute#regionList",
            f"{API}projects/{p['project']}/regions",
            [self._region_view(r) for r in self.regions],
            q,
        )

    def _region_view(self, region: str) -> dict:
        view = copy.deepcopy(self.regions[region])
        view["quotas"] = [{"metric": "CPUS", "limit": float(self.cpu_quota), "usage": float(self._cpus_used(region))}]
        return view

    def _cpus_used(self, region: str) -> int:
        used = 0
        for (_, zone, _), inst in self.instances.items():
            if _region_of(zone) == region:
                used += self._meta.get(("instance",) + (self.project, zone, inst["name"]), {}).get("cpus", 0)
        return used

    def _machineTypes_get(self, p: dict, q: dict) -> dict:
        mt = self.machine_types.get((p["zone"], p["machineType"]))
        if mt is None:
            raise not_found(f"projects/{p['project']}/zones/{p['zone']}/machineTypes/{p['machineType']}")
        return copy.deepcopy(mt)

    def _machineTypes_list(self, p: dict, q: dict) -> dict:
        items = [copy.deepcopy(mt) for (z, _), mt in self.machine_types.items() if z == p["zone"]]
        return self._list(
            "compute#machineTypeList", f"{API}projects/{p['project']}/zones/{p['zone']}/machineTypes", items, q
        )

    def _networks_get(self, p: dict, q: dict) -> dict:
        net = self.networks.get((p["project"], p["network"]))
        if net is None:
            raise not_found(f"projects/{p['project']}/global/networks/{p['network']}")
        return copy.deepcopy(net)

    def _networks_list(self, p: dict, q: dict) -> dict:
        items = [copy.deepcopy(n) for (pp, _), n in self.networks.items() if pp == p["project"]]
        return self._list("compute#networkList", f"{API}projects/{p['project']}/global/networks", items, q)

    # ------------------------------------------------------------------ images
    def _images_get(self, p: dict, q: dict) -> dict:
        image = self.images.get((p["project"], p["image"]))
        if image is None:
            raise not_found(f"projects/{p['project']}/global/images/{p['image']}")
        return copy.deepcopy(image)

    def _images_getFromFamily(self, p: dict, q: dict) -> dict:
        image = self._family_image(p["project"], p["family"])
        if image is None:
            raise not_found(f"projects/{p['project']}/global/images/family/{p['family']}")
        return copy.deepcopy(image)

    def _images_list(self, p: dict, q: dict) -> dict:
        items = [copy.deepcopy(i) for (pp, _), i in self.images.items() if pp == p["project"]]
        return self._list("compute#imageList", f"{API}projects/{p['project']}/global/images", items, q)

    # ------------------------------------------------------------------ operations
    def _zoneOperations_get(self, p: dict, q: dict, *, poll: bool = True) -> dict:
        op = self.operations.get((p["project"], f"zones/{p['zone']}", p["operation"]))
        if op is None:
            raise not_found(f"projects/{p['project']}/zones/{p['zone']}/operations/{p['operation']}")
        if poll:
            self._poll(op)
        return copy.deepcopy(op.resource)

    def _zoneOperations_wait(self, p: dict, q: dict) -> dict:
        return self._zoneOperations_get(p, q)

    def _globalOperations_get(self, p: dict, q: dict) -> dict:
        op = self.operations.get((p["project"], "global", p["operation"]))
        if op is None:
            raise not_found(f"projects/{p['project']}/global/operations/{p['operation']}")
        self._poll(op)
        return copy.deepcopy(op.resource)

    def _globalOperations_wait(self, p: dict, q: dict) -> dict:
        return self._globalOperations_get(p, q)

    # ------------------------------------------------------------------ instances
    def _instance(self, p: dict) -> tuple[tuple[str, str, str], dict]:
        key = (p["project"], p["zone"], p["instance"])
        inst = self.instances.get(key)
        if inst is None:
            raise not_found(f"projects/{p['project']}/zones/{p['zone']}/instances/{p['instance']}")
        return key, inst

    def _advance_pending(self, meta_key: tuple) -> None:
        """A read of a resource counts as a poll of the operation working on it.

        The real service makes progress whether or not anyone polls the
        operation (a worker may die right after the insert and its successor
        only reads the instance), so reads move things along too.
        """
        op_key = self._meta.get(meta_key, {}).get("pending_op")
        op = self.operations.get(op_key) if op_key else None
        if op is not None:
            self._poll(op)

    def _instances_get(self, p: dict, q: dict) -> dict:
        key, inst = self._instance(p)
        view = copy.deepcopy(inst)
        if inst["status"] == "STAGING":  # the next read sees it running
            self._set_running(key)
        else:
            self._advance_pending(key)  # PROVISIONING -> STAGING, STOPPING -> gone, for the next read
        return view

    def _set_running(self, key: tuple[str, str, str]) -> None:
        """RUNNING: the internal IP is the instance's for life; an ephemeral external IP is taken now."""
        inst = self.instances[key]
        inst["status"] = "RUNNING"
        inst["lastStartTimestamp"] = _now_iso()
        nic = inst["networkInterfaces"][0]
        nic.setdefault("networkIP", next(self._internal_ips))
        for ac in nic.get("accessConfigs", []):
            ac["natIP"] = next(self._nat_ips)

    def _instances_list(self, p: dict, q: dict) -> dict:
        items = [copy.deepcopy(i) for (pp, z, _), i in self.instances.items() if pp == p["project"] and z == p["zone"]]
        return self._list("compute#instanceList", f"{API}projects/{p['project']}/zones/{p['zone']}/instances", items, q)

    def _instances_aggregatedList(self, p: dict, q: dict) -> dict:
        by_zone: dict[str, list[dict]] = collections.defaultdict(list)
        for (pp, zone, _), inst in sorted(self.instances.items()):
            if pp == p["project"]:
                by_zone[zone].append(copy.deepcopy(inst))
        return self._aggregated("compute#instanceAggregatedList", "instances", p["project"], by_zone, q)

    def _instances_insert(self, p: dict, q: dict, body: dict) -> dict:
        project, zone = p["project"], p["zone"]
        replay = self._replay(project, q)
        if replay:
            return replay
        for unsupported in ("sourceInstanceTemplate", "sourceMachineImage"):
            if unsupported in q:
                raise ApiError(501, "notImplemented", f"{unsupported} is not implemented by the GCE fake.")
        name = body.get("name")
        if not name:
            raise required("resource.name")
        _check_name("resource.name", name)
        if not body.get("machineType"):
            raise required("resource.machineType")
        mt = self._resolve_machine_type("resource.machineType", body["machineType"], zone)
        _check_labels("resource.labels", body.get("labels"))
        self._check_metadata(body.get("metadata"))
        tags = (body.get("tags") or {}).get("items", [])
        if len(tags) > 64 or len(set(tags)) != len(tags):
            raise invalid("resource.tags.items", tags, "At most 64 distinct tags are allowed.")
        for i, tag in enumerate(tags):
            _check_name(f"resource.tags.items[{i}]", tag)

        disks = body.get("disks") or []
        if not disks:
            raise invalid("resource.disks", "", "At least one disk, the boot disk, must be specified.")
        if len(disks) > 1:
            raise ApiError(501, "notImplemented", "The GCE fake supports exactly one (boot) disk per instance.")
        disk = disks[0]
        if not disk.get("boot"):
            raise invalid("resource.disks[0].boot", disk.get("boot", False), "The first disk must be the boot disk.")
        if disk.get("type", "PERSISTENT") != "PERSISTENT":
            raise ApiError(501, "notImplemented", "The GCE fake supports persistent boot disks only.")
        if "source" in disk:
            raise ApiError(501, "notImplemented", "Attaching an existing disk is not implemented by the GCE fake.")
        init = disk.get("initializeParams")
        if not init:
            raise invalid("resource.disks[0]", "", "A boot disk needs either a source or initializeParams.")
        base = "resource.disks[0].initializeParams"
        has_image, has_snap = bool(init.get("sourceImage")), bool(init.get("sourceSnapshot"))
        if has_image and has_snap:
            raise invalid(
                f"{base}.sourceSnapshot",
                init["sourceSnapshot"],
                "Source image and source snapshot are mutually exclusive.",
            )
        if not (has_image or has_snap):
            raise required(f"{base}.sourceImage")
        source = (
            self._resolve_image(f"{base}.sourceImage", init["sourceImage"])
            if has_image
            else self._resolve_snapshot(f"{base}.sourceSnapshot", init["sourceSnapshot"])
        )
        source_size = int(source["diskSizeGb"])
        size = int(init.get("diskSizeGb") or source_size)
        if size < source_size:
            what = "image" if has_image else "snapshot"
            raise invalid(
                f"{base}.diskSizeGb",
                size,
                f"Requested disk size cannot be smaller than the {what} size ({source_size} GB)",
            )
        if size > 65536:
            raise invalid(f"{base}.diskSizeGb", size, "Disk size cannot exceed 65536 GB.")
        disk_name = init.get("diskName") or name
        _check_name(f"{base}.diskName", disk_name)
        disk_type = self._resolve_disk_type(f"{base}.diskType", init.get("diskType") or "pd-standard", zone)
        _check_labels(f"{base}.labels", init.get("labels"))

        nics = body.get("networkInterfaces") or []
        if not nics:
            raise invalid("resource.networkInterfaces", "", "At least one network interface must be specified.")
        if len(nics) > 1:
            raise ApiError(501, "notImplemented", "The GCE fake supports one network interface per instance.")
        nic = nics[0]
        if nic.get("subnetwork") and not re.search(r"regions/[^/]+/subnetworks/default$", nic["subnetwork"]):
            raise invalid(
                "resource.networkInterfaces[0].subnetwork",
                nic["subnetwork"],
                "The referenced subnetwork resource cannot be found.",
            )
        network = self._resolve_network(
            "resource.networkInterfaces[0].network", nic.get("network") or "global/networks/default"
        )
        access = nic.get("accessConfigs") or []
        if len(access) > 1:
            raise invalid("resource.networkInterfaces[0].accessConfigs", "", "At most one access config is allowed.")
        for ac in access:
            if ac.get("type", "ONE_TO_ONE_NAT") != "ONE_TO_ONE_NAT":
                raise invalid(
                    "resource.networkInterfaces[0].accessConfigs[0].type",
                    ac["type"],
                    "IPv4 access configs must be ONE_TO_ONE_NAT.",
                )
            if ac.get("natIP"):
                raise ApiError(501, "notImplemented", "Static external IPs are not implemented by the GCE fake.")

        inst_path = f"projects/{project}/zones/{zone}/instances/{name}"
        disk_path = f"projects/{project}/zones/{zone}/disks/{disk_name}"
        if (project, zone, name) in self.instances:
            raise already_exists(inst_path)
        if (project, zone, disk_name) in self.disks:
            raise already_exists(disk_path)

        now = _now_iso()
        inst_id, disk_id = str(next(self._ids)), str(next(self._ids))
        region = _region_of(zone)
        src_key = "sourceImage" if has_image else "sourceSnapshot"
        disk_res: dict[str, Any] = {
            "kind": "compute#disk",
            "id": disk_id,
            "creationTimestamp": now,
            "name": disk_name,
            "sizeGb": str(size),
            "zone": f"{API}projects/{project}/zones/{zone}",
            "status": "CREATING",
            "selfLink": f"{API}{disk_path}",
            src_key: source["selfLink"],
            f"{src_key}Id": source["id"],
            "type": disk_type,
            "labelFingerprint": _fingerprint(),
            "users": [f"{API}{inst_path}"],
            "lastAttachTimestamp": now,
            "physicalBlockSizeBytes": "4096",
            "architecture": "X86_64",
        }
        if init.get("labels"):
            disk_res["labels"] = dict(init["labels"])
        if init.get("description"):
            disk_res["description"] = init["description"]
        ac_views = [
            {
                "kind": "compute#accessConfig",
                "type": "ONE_TO_ONE_NAT",
                "name": ac.get("name") or "External NAT",
                "networkTier": ac.get("networkTier") or "PREMIUM",
            }
            for ac in access
        ]
        inst_res: dict[str, Any] = {
            "kind": "compute#instance",
            "id": inst_id,
            "creationTimestamp": now,
            "name": name,
            "tags": {"items": list(tags), "fingerprint": _fingerprint()} if tags else {"fingerprint": _fingerprint()},
            "machineType": mt["selfLink"],
            "status": "PROVISIONING",
            "zone": f"{API}projects/{project}/zones/{zone}",
            "canIpForward": bool(body.get("canIpForward", False)),
            "networkInterfaces": [
                {
                    "kind": "compute#networkInterface",
                    "network": network["selfLink"],
                    "subnetwork": f"{API}projects/{project}/regions/{region}/subnetworks/default",
                    "name": "nic0",
                    "accessConfigs": ac_views,
                    "fingerprint": _fingerprint(),
                    "stackType": "IPV4_ONLY",
                }
            ],
            "disks": [
                {
                    "kind": "compute#attachedDisk",
                    "type": "PERSISTENT",
                    "mode": "READ_WRITE",
                    "source": f"{API}{disk_path}",
                    "deviceName": disk.get("deviceName") or "persistent-disk-0",
                    "index": 0,
                    "boot": True,
                    "autoDelete": bool(disk.get("autoDelete", False)),
                    "interface": "SCSI",
                    "diskSizeGb": str(size),
                    "architecture": "X86_64",
                }
            ],
            "metadata": {
                "kind": "compute#metadata",
                "fingerprint": _fingerprint(),
                "items": list((body.get("metadata") or {}).get("items", [])),
            },
            "selfLink": f"{API}{inst_path}",
            "scheduling": {
                "onHostMaintenance": "MIGRATE",
                "automaticRestart": True,
                "preemptible": False,
                "provisioningModel": "STANDARD",
            },
            "cpuPlatform": "Unknown CPU Platform",
            "labelFingerprint": _fingerprint(),
            "startRestricted": False,
            "deletionProtection": bool(body.get("deletionProtection", False)),
            "fingerprint": _fingerprint(),
        }
        if body.get("description"):
            inst_res["description"] = body["description"]
        if body.get("labels"):
            inst_res["labels"] = dict(body["labels"])
        inst_key, disk_key = (project, zone, name), (project, zone, disk_name)
        self.instances[inst_key] = inst_res
        self.disks[disk_key] = disk_res
        self._meta[("instance",) + inst_key] = {"cpus": mt["guestCpus"]}

        error = None
        if self._cpus_used(region) > self.cpu_quota:
            error = (
                "QUOTA_EXCEEDED",
                f"Quota 'CPUS' exceeded.  Limit: {float(self.cpu_quota)} in region {region}.",
                403,
            )

        def done(ok: bool) -> None:
            current = self.instances.get(inst_key)
            if current is not inst_res or inst_res["status"] == "STOPPING":
                return  # deleted (or being deleted) meanwhile
            if ok:
                inst_res["status"] = "STAGING"
                disk_res["status"] = "READY"
                self._meta.setdefault(inst_key, {})["staged_at"] = time.monotonic()
            else:
                self._drop_instance(inst_key)

        view = self._new_op(
            project,
            f"zones/{zone}",
            "insert",
            inst_res["selfLink"],
            inst_id,
            done,
            request_id=q.get("requestId"),
            error=error,
        )
        self._meta.setdefault(inst_key, {})["pending_op"] = (project, f"zones/{zone}", view["name"])
        return view

    def _check_metadata(self, metadata: dict | None) -> None:
        items = (metadata or {}).get("items") or []
        seen: set[str] = set()
        total = 0
        for i, item in enumerate(items):
            key = item.get("key")
            if not key:
                raise required(f"resource.metadata.items[{i}].key")
            if not METADATA_KEY_RE.match(key):
                raise invalid(
                    f"resource.metadata.items[{i}].key",
                    key,
                    "Metadata keys may contain only letters, digits, '-' and '_' (at most 128).",
                )
            if key in seen:
                raise invalid("resource.metadata", "", f"Duplicate metadata key '{key}'.")
            seen.add(key)
            value = item.get("value") or ""
            if len(value.encode()) > 256 * 1024:
                raise invalid(f"resource.metadata.items[{i}].value", "", "Metadata values may be at most 256 KB.")
            total += len(key) + len(value.encode())
        if total > 512 * 1024:
            raise invalid("resource.metadata", "", "Metadata may be at most 512 KB in total.")

    def _drop_instance(self, key: tuple[str, str, str]) -> None:
        inst = self.instances.pop(key, None)
        self._meta.pop(key, None)
        self._meta.pop(("instance",) + key, None)
        if inst is None:
            return
        project, zone, _ = key
        for att in inst.get("disks", []):
            disk_key = (project, zone, att["source"].rsplit("/", 1)[1])
            disk = self.disks.get(disk_key)
            if disk is None:
                continue
            disk["users"] = [u for u in disk.get("users", []) if u != inst["selfLink"]]
            if not disk["users"]:
                disk.pop("users")
            if att.get("autoDelete"):
                self.disks.pop(disk_key, None)

    def _instances_delete(self, p: dict, q: dict) -> dict:
        replay = self._replay(p["project"], q)
        if replay:
            return replay
        key, inst = self._instance(p)
        meta = self._meta.setdefault(key, {})
        pending = meta.get("pending_op")
        if (
            inst["status"] == "STOPPING"
            and pending in self.operations
            and self.operations[pending].resource["status"] != "DONE"
            and self.operations[pending].resource["operationType"] == "delete"
        ):
            op = self.operations[pending]
            if q.get("requestId"):
                self.request_ids[(p["project"], q["requestId"])] = op.key
            return copy.deepcopy(op.resource)
        if inst.get("deletionProtection"):
            raise ApiError(
                400, "resourceIsProtected", f"The resource '{_partial(inst['selfLink'])}' is protected from deletion."
            )
        inst["status"] = "STOPPING"

        def done(ok: bool) -> None:
            if ok and self.instances.get(key) is inst:
                self._drop_instance(key)

        view = self._new_op(
            p["project"],
            f"zones/{p['zone']}",
            "delete",
            inst["selfLink"],
            inst["id"],
            done,
            request_id=q.get("requestId"),
        )
        meta["pending_op"] = (p["project"], f"zones/{p['zone']}", view["name"])
        return view

    # ------------------------------------------------------------------ stop, start, reset
    def _power_op(self, p: dict, q: dict, operation_type: str, allowed: set[str], during: str | None,
                  after: Callable[[tuple[str, str, str], dict], None]) -> dict:
        """One stop/start/reset: refused while another operation works on the instance (as GCE does);
        in a state where it has nothing to do, a no-op operation that ends DONE at once."""
        replay = self._replay(p["project"], q)
        if replay:
            return replay
        key, inst = self._instance(p)
        meta = self._meta.setdefault(key, {})
        pending = self.operations.get(meta.get("pending_op")) if meta.get("pending_op") else None
        if pending is not None and pending.resource["status"] != "DONE":
            raise not_ready(_partial(inst["selfLink"]))  # being created, deleted, stopped or started
        if inst["status"] not in allowed:
            raise not_ready(_partial(inst["selfLink"]))
        acts = during is not None and inst["status"] != {"stop": "TERMINATED", "start": "RUNNING"}.get(operation_type)
        if acts:
            inst["status"] = during

        def done(ok: bool) -> None:
            if self.instances.get(key) is not inst or meta.get("pending_op") != mine or (ok and not acts):
                return  # deleted (or being deleted) meanwhile, or nothing to do
            if ok:
                after(key, inst)
            elif during is not None:
                inst["status"] = {"STOPPING": "RUNNING", "PROVISIONING": "TERMINATED"}.get(during, inst["status"])

        view = self._new_op(
            p["project"], f"zones/{p['zone']}", operation_type, inst["selfLink"], inst["id"], done,
            request_id=q.get("requestId"),
        )
        mine = meta["pending_op"] = (p["project"], f"zones/{p['zone']}", view["name"])
        return view

    def _stopped(self, key: tuple[str, str, str], inst: dict) -> None:
        inst["status"] = "TERMINATED"
        inst["lastStopTimestamp"] = _now_iso()
        for ac in inst["networkInterfaces"][0].get("accessConfigs", []):
            ac.pop("natIP", None)  # an ephemeral external IP is released on stop

    def _started(self, key: tuple[str, str, str], inst: dict) -> None:
        inst["status"] = "STAGING"
        self._meta.setdefault(key, {})["staged_at"] = time.monotonic()

    def _reset_done(self, key: tuple[str, str, str], inst: dict) -> None:
        inst["lastStartTimestamp"] = _now_iso()  # a hard reset: same VM, same addresses, a new boot

    def _instances_stop(self, p: dict, q: dict) -> dict:
        """RUNNING -> STOPPING (operation running) -> TERMINATED; stopping a TERMINATED VM does nothing."""
        return self._power_op(p, q, "stop", {"RUNNING", "STAGING", "TERMINATED", "SUSPENDED"}, "STOPPING",
                              self._stopped)

    def _instances_start(self, p: dict, q: dict) -> dict:
        """TERMINATED -> PROVISIONING (operation running) -> STAGING -> RUNNING (next read) with a new
        external IP; starting a RUNNING VM does nothing."""
        return self._power_op(p, q, "start", {"TERMINATED", "RUNNING"}, "PROVISIONING", self._started)

    def _instances_reset(self, p: dict, q: dict) -> dict:
        """A hard reset of a RUNNING VM: it stays RUNNING and keeps its addresses; refused otherwise."""
        def reset(key: tuple[str, str, str], inst: dict) -> None:
            self._reset_done(key, inst)

        return self._power_op(p, q, "reset", {"RUNNING"}, "RUNNING", reset)

    # ------------------------------------------------------------------ disks
    def _disk(self, p: dict) -> tuple[tuple[str, str, str], dict]:
        key = (p["project"], p["zone"], p["disk"])
        disk = self.disks.get(key)
        if disk is None:
            raise not_found(f"projects/{p['project']}/zones/{p['zone']}/disks/{p['disk']}")
        return key, disk

    def _disks_get(self, p: dict, q: dict) -> dict:
        key, disk = self._disk(p)
        view = copy.deepcopy(disk)
        self._advance_pending(("disk",) + key)  # for the next read
        return view

    def _disks_list(self, p: dict, q: dict) -> dict:
        items = [copy.deepcopy(d) for (pp, z, _), d in self.disks.items() if pp == p["project"] and z == p["zone"]]
        return self._list("compute#diskList", f"{API}projects/{p['project']}/zones/{p['zone']}/disks", items, q)

    def _disks_aggregatedList(self, p: dict, q: dict) -> dict:
        by_zone: dict[str, list[dict]] = collections.defaultdict(list)
        for (pp, zone, _), disk in sorted(self.disks.items()):
            if pp == p["project"]:
                by_zone[zone].append(copy.deepcopy(disk))
        return self._aggregated("compute#diskAggregatedList", "disks", p["project"], by_zone, q)

    def _disks_delete(self, p: dict, q: dict) -> dict:
        replay = self._replay(p["project"], q)
        if replay:
            return replay
        key, disk = self._disk(p)
        if disk.get("users"):
            raise ApiError(
                400,
                "resourceInUseByAnotherResource",
                f"The disk resource '{_partial(disk['selfLink'])}' is already being used by '{_partial(disk['users'][0])}'",
            )
        disk["status"] = "DELETING"

        def done(ok: bool) -> None:
            if ok and self.disks.get(key) is disk:
                self.disks.pop(key)

        view = self._new_op(
            p["project"],
            f"zones/{p['zone']}",
            "delete",
            disk["selfLink"],
            disk["id"],
            done,
            request_id=q.get("requestId"),
        )
        self._meta[("disk",) + key] = {"pending_op": (p["project"], f"zones/{p['zone']}", view["name"])}
        return view

    def _disks_createSnapshot(self, p: dict, q: dict, body: dict) -> dict:
        project = p["project"]
        replay = self._replay(project, q)
        if replay:
            return replay
        _, disk = self._disk(p)
        name = body.get("name")
        if not name:
            raise required("resource.name")
        _check_name("resource.name", name)
        _check_labels("resource.labels", body.get("labels"))
        if disk["status"] != "READY":
            raise not_ready(_partial(disk["selfLink"]))
        snap_path = f"projects/{project}/global/snapshots/{name}"
        if (project, name) in self.snapshots:
            raise already_exists(snap_path)
        now = _now_iso()
        snap: dict[str, Any] = {
            "kind": "compute#snapshot",
            "id": str(next(self._ids)),
            "creationTimestamp": now,
            "name": name,
            "status": "CREATING",
            "sourceDisk": disk["selfLink"],
            "sourceDiskId": disk["id"],
            "diskSizeGb": disk["sizeGb"],
            "storageBytes": "0",
            "storageBytesStatus": "UPDATING",
            "selfLink": f"{API}{snap_path}",
            "labelFingerprint": _fingerprint(),
            "storageLocations": list(
                body.get("storageLocations") or [_region_of(disk["zone"].rsplit("/", 1)[1]).split("-")[0]]
            ),
            "snapshotType": body.get("snapshotType") or "STANDARD",
            "architecture": "X86_64",
        }
        if body.get("description"):
            snap["description"] = body["description"]
        if body.get("labels"):
            snap["labels"] = dict(body["labels"])
        key = (project, name)
        self.snapshots[key] = snap

        def done(ok: bool) -> None:
            if self.snapshots.get(key) is not snap:
                return
            if ok:
                snap["status"] = "UPLOADING"
                snap["storageBytes"] = str(int(disk["sizeGb"]) * 2**28)
                snap["storageBytesStatus"] = "UP_TO_DATE"
                self._meta.setdefault(("snapshot",) + key, {})["uploading_at"] = time.monotonic()
            else:
                self.snapshots.pop(key)

        view = self._new_op(
            project,
            f"zones/{p['zone']}",
            "createSnapshot",
            disk["selfLink"],
            disk["id"],
            done,
            request_id=q.get("requestId"),
        )
        self._meta[("snapshot",) + key] = {"pending_op": (project, f"zones/{p['zone']}", view["name"])}
        return view

    # ------------------------------------------------------------------ snapshots
    def _snapshot(self, p: dict) -> tuple[tuple[str, str], dict]:
        key = (p["project"], p["snapshot"])
        snap = self.snapshots.get(key)
        if snap is None:
            raise not_found(f"projects/{p['project']}/global/snapshots/{p['snapshot']}")
        return key, snap

    def _snapshots_get(self, p: dict, q: dict) -> dict:
        key, snap = self._snapshot(p)
        view = copy.deepcopy(snap)
        if snap["status"] == "UPLOADING":
            snap["status"] = "READY"
        else:
            self._advance_pending(("snapshot",) + key)  # for the next read
        return view

    def _snapshots_list(self, p: dict, q: dict) -> dict:
        items = [copy.deepcopy(s) for (pp, _), s in sorted(self.snapshots.items()) if pp == p["project"]]
        return self._list("compute#snapshotList", f"{API}projects/{p['project']}/global/snapshots", items, q)

    def _snapshots_delete(self, p: dict, q: dict) -> dict:
        replay = self._replay(p["project"], q)
        if replay:
            return replay
        key, snap = self._snapshot(p)
        if snap["status"] in ("CREATING", "UPLOADING"):
            raise not_ready(_partial(snap["selfLink"]))
        snap["status"] = "DELETING"

        def done(ok: bool) -> None:
            if ok and self.snapshots.get(key) is snap:
                self.snapshots.pop(key)
                self._meta.pop(("snapshot",) + key, None)

        view = self._new_op(
            p["project"], "global", "delete", snap["selfLink"], snap["id"], done, request_id=q.get("requestId")
        )
        self._meta.setdefault(("snapshot",) + key, {})["pending_op"] = (p["project"], "global", view["name"])
        return view

    # ------------------------------------------------------------------ firewalls
    def _firewalls_get(self, p: dict, q: dict) -> dict:
        fw = self.firewalls.get((p["project"], p["firewall"]))
        if fw is None:
            raise not_found(f"projects/{p['project']}/global/firewalls/{p['firewall']}")
        return copy.deepcopy(fw)

    def _firewalls_list(self, p: dict, q: dict) -> dict:
        items = [copy.deepcopy(f) for (pp, _), f in sorted(self.firewalls.items()) if pp == p["project"]]
        return self._list("compute#firewallList", f"{API}projects/{p['project']}/global/firewalls", items, q)

    def _firewalls_insert(self, p: dict, q: dict, body: dict) -> dict:
        project = p["project"]
        replay = self._replay(project, q)
        if replay:
            return replay
        name = body.get("name")
        if not name:
            raise required("resource.name")
        _check_name("resource.name", name)
        network = self._resolve_network("resource.network", body.get("network") or "global/networks/default")
        allowed, denied = body.get("allowed") or [], body.get("denied") or []
        if bool(allowed) == bool(denied):
            raise invalid("resource.allowed", "", "Exactly one of allowed or denied must be specified.")
        rules = allowed or denied
        field_name = "resource.allowed" if allowed else "resource.denied"
        for i, rule in enumerate(rules):
            proto = rule.get("IPProtocol")
            if not proto:
                raise required(f"{field_name}[{i}].IPProtocol")
            if proto not in ("tcp", "udp", "icmp", "esp", "ah", "sctp", "ipip", "all") and not proto.isdigit():
                raise invalid(f"{field_name}[{i}].IPProtocol", proto, "Unknown protocol.")
            for port in rule.get("ports") or []:
                if proto not in ("tcp", "udp", "sctp", "all"):
                    raise invalid(f"{field_name}[{i}].ports", port, "Ports may only be given for tcp, udp and sctp.")
                m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", port)
                if not m or int(m.group(1)) > 65535 or (m.group(2) and not int(m.group(1)) <= int(m.group(2)) <= 65535):
                    raise invalid(f"{field_name}[{i}].ports", port, "Invalid port or port range.")
        direction = body.get("direction") or "INGRESS"
        for key in ("sourceRanges", "destinationRanges"):
            for j, cidr in enumerate(body.get(key) or []):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise invalid(f"resource.{key}[{j}]", cidr, "Must be a valid IPv4 or IPv6 CIDR range.") from None
        for key in ("sourceTags", "targetTags"):
            for j, tag in enumerate(body.get(key) or []):
                _check_name(f"resource.{key}[{j}]", tag)
        priority = body.get("priority", 1000)
        if not 0 <= priority <= 65535:
            raise invalid("resource.priority", priority, "Must be between 0 and 65535.")
        path = f"projects/{project}/global/firewalls/{name}"
        if (project, name) in self.firewalls:
            raise already_exists(path)
        fw: dict[str, Any] = {
            "kind": "compute#firewall",
            "id": str(next(self._ids)),
            "creationTimestamp": _now_iso(),
            "name": name,
            "network": network["selfLink"],
            "priority": priority,
            "direction": direction,
            "logConfig": {"enable": False},
            "disabled": bool(body.get("disabled", False)),
            "selfLink": f"{API}{path}",
        }
        for key in (
            "description",
            "sourceRanges",
            "destinationRanges",
            "sourceTags",
            "targetTags",
            "allowed",
            "denied",
        ):
            if body.get(key):
                fw[key] = copy.deepcopy(body[key])
        if direction == "INGRESS" and not (body.get("sourceRanges") or body.get("sourceTags")):
            fw["sourceRanges"] = ["0.0.0.0/0"]
        self.firewalls[(project, name)] = fw
        return self._new_op(project, "global", "insert", fw["selfLink"], fw["id"], None, request_id=q.get("requestId"))

    def _firewalls_delete(self, p: dict, q: dict) -> dict:
        replay = self._replay(p["project"], q)
        if replay:
            return replay
        key = (p["project"], p["firewall"])
        fw = self.firewalls.get(key)
        if fw is None:
            raise not_found(f"projects/{p['project']}/global/firewalls/{p['firewall']}")

        def done(ok: bool) -> None:
            if ok:
                self.firewalls.pop(key, None)

        return self._new_op(
            p["project"], "global", "delete", fw["selfLink"], fw["id"], done, request_id=q.get("requestId")
        )


# --------------------------------------------------------------------------------------
# HTTP


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gce-fake/1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fake: GceFake = self.server.fake  # type: ignore[attr-defined]
        try:
            status, headers, payload = fake.handle(self.command, self.path, body)
            hold = float(headers.pop(HOLD_HEADER, 0) or 0)
            if hold:
                time.sleep(hold)  # done, but answered late: the client may have given up
        except Exception as exc:  # a bug in the fake: say so loudly, keep serving
            status, headers = 500, {}
            payload = {
                "error": {
                    "code": 500,
                    "message": f"GCE fake bug: {type(exc).__name__}: {exc}",
                    "errors": [{"reason": "backendError", "message": str(exc), "domain": "global"}],
                }
            }
            if getattr(self.server, "verbose", False):
                import traceback

                traceback.print_exc()
        data = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _dispatch

    def log_message(self, fmt: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            sys.stderr.write("gce-fake: " + (fmt % args) + "\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that gave up on a held answer
        super().handle_error(request, client_address)


class GceFakeServer:
    """The fake behind a real HTTP listener (a thread of this process)."""

    def __init__(
        self, fake: GceFake | None = None, host: str = "127.0.0.1", port: int = 0, *, verbose: bool = False
    ) -> None:
        self.fake = fake or GceFake()
        self._host, self._port, self._verbose = host, port, verbose
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "GceFakeServer":
        self._server = _Server((self._host, self._port), _Handler)
        self._server.fake = self.fake  # type: ignore[attr-defined]
        self._server.verbose = self._verbose  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="gce-fake", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._server = _Server((self._host, self._port), _Handler)
        self._server.fake = self.fake  # type: ignore[attr-defined]
        self._server.verbose = self._verbose  # type: ignore[attr-defined]
        print(f"GCE fake for project {self.fake.project} listening on {self.url}", flush=True)
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "GceFakeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.gce", description="Local Compute Engine v1 REST fake.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--project", default="onebox-test")
    parser.add_argument("--op-polls", type=int, default=1, help="get/wait calls until an operation is DONE")
    parser.add_argument("--op-seconds", type=float, default=1.0, help="…or seconds until DONE (0 disables)")
    parser.add_argument(
        "--step-seconds", type=float, default=1.0, help="seconds from STAGING to RUNNING without reads (0 disables)"
    )
    parser.add_argument("--cpu-quota", type=int, default=64)
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    fake = GceFake(
        args.project,
        op_polls=args.op_polls,
        op_seconds=args.op_seconds or None,
        step_seconds=args.step_seconds or None,
        cpu_quota=args.cpu_quota,
    )
    try:
        GceFakeServer(fake, args.host, args.port, verbose=args.verbose).serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
