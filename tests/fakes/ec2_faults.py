"""A fault-injecting HTTP proxy in front of an EC2 endpoint (the moto server), for the AWS provider's tests.

moto answers every EC2 call correctly and at once; a real EC2 throttles, fails
with 5xx, runs out of capacity and sometimes answers too late. This proxy sits
between boto3 and moto and, for the calls a fault matches, answers instead of
moto with a real EC2 error document (``<Response><Errors><Error><Code>…``, with
the HTTP status EC2 uses), or forwards the call and holds moto's answer back
(the call happened, the client times out). Everything else passes through
unchanged, so boto3's own retries (``standard`` mode) and the provider's error
mapping run exactly as against AWS.

Matching: ``action`` (the EC2 ``Action`` parameter, e.g. ``RunInstances``;
None for any), ``contains`` (a string that must occur in the request body,
URL-decoded), ``region`` (the region the request is signed for) and ``zone``
(the Availability Zone a ``RunInstances`` launches into: its
``Placement.AvailabilityZone``, or the zone of its subnet, learnt from the
``DescribeSubnets`` answers that pass through): a zone out of capacity, a region
over its vCPU limit. EC2 calls name resources by their AWS ids (``i-…``, ``ami-…``,
``snap-…``), so the proxy learns which AWS id belongs to which of our ids: the
instance ``RunInstances`` made for ``ClientToken=onebox-<id>`` and the image
``CreateImage`` made under the name ``onebox-<snapshot id>`` count as
mentioning that id; ``alias()`` adds more. ``count`` is how often a fault
fires (-1: until removed); ``skip`` lets that many matching calls through first.

One piece of EC2 that moto leaves out is modelled here, because lost answers
make it matter: ``RunInstances`` is idempotent by ``ClientToken`` (EC2 answers
a repeated token with the reservation it already made; moto would launch a
second instance). The proxy answers a token it has seen succeed with the
answer it got for it.

    proxy = Ec2FaultProxy(moto_url).start()
    proxy.add_fault(action="RunInstances", status=503, code="Unavailable", count=3)
    proxy.add_fault(action="DescribeInstances", hold=3.0, contains="i-0123")
    proxy.calls  # [(action, status, "error" | "hold" | None), ...]
    proxy.stop()
"""

from __future__ import annotations

import http.client
import itertools
import re
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

# The messages EC2 sends with these codes (and the status it sends them with).
KNOWN_ERRORS: dict[str, tuple[int, str]] = {
    "RequestLimitExceeded": (503, "Request limit exceeded."),
    "Throttling": (400, "Rate exceeded"),
    "InternalError": (500, "An internal error has occurred"),
    "Unavailable": (503, "The server is overloaded and can't handle the request."),
    "InsufficientInstanceCapacity": (500, "We currently do not have sufficient capacity in the Availability Zone "
                                          "you requested. Our system will be working on provisioning additional "
                                          "capacity."),
    "InstanceLimitExceeded": (400, "You have requested more instances than your current instance limit allows "
                                   "for the specified instance type."),
    "VcpuLimitExceeded": (400, "You have requested more vCPU capacity than your current vCPU limit of 32 allows "
                               "for the instance bucket that the specified instance type belongs to."),
    "ResourceLimitExceeded": (400, "You have reached the maximum number of images (AMIs) for this account."),
}

_AWS_ID = re.compile(r"\b(?:i|ami|snap|vol)-[0-9a-f]{8,17}\b")
_INSTANCE_IN_RESPONSE = re.compile(rb"<instanceId>(i-[0-9a-f]+)</instanceId>")
_IMAGE_IN_RESPONSE = re.compile(rb"<imageId>(ami-[0-9a-f]+)</imageId>")
_SIGNED_REGION = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/ec2/")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class Ec2Fault:
    action: str | None = None
    contains: str | None = None
    status: int | None = None  # an error answer (with ``code``), or …
    code: str | None = None
    message: str | None = None
    hold: float | None = None  # … moto's answer held back this many seconds
    count: int = 1
    skip: int = 0
    region: str | None = None  # only requests signed for this region
    zone: str | None = None  # only launches into this Availability Zone
    id: int = 0
    hits: int = 0


@dataclass
class _Call:
    action: str
    status: int
    fault: str | None  # "error", "hold" or None
    text: str = field(repr=False, default="")


class Ec2FaultProxy:
    """The proxy: faults and a call log shared by the server threads and the test."""

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self._lock = threading.RLock()
        self._faults: list[Ec2Fault] = []
        self._ids = itertools.count(1)
        self._aliases: dict[str, str] = {}  # AWS id -> our id
        self._calls: list[_Call] = []
        self._fired: dict[int, int] = {}  # fault id -> answers it changed (kept after the fault is gone)
        self._launched: dict[str, tuple[int, dict[str, str], bytes]] = {}  # ClientToken -> RunInstances answer
        self._subnet_zones: dict[str, str] = {}  # subnet id -> its Availability Zone (from DescribeSubnets)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control
    def add_fault(self, **kw: Any) -> Ec2Fault:
        """A fault (fields of ``Ec2Fault``); ``code`` alone takes EC2's status and message for it."""
        fault = Ec2Fault(**kw)
        if fault.code and fault.code in KNOWN_ERRORS:
            status, message = KNOWN_ERRORS[fault.code]
            fault.status = fault.status or status
            fault.message = fault.message or message
        if (fault.status is None) == (fault.hold is None):
            raise ValueError("a fault either answers an error (status, code) or holds the answer (hold)")
        with self._lock:
            fault.id = next(self._ids)
            self._faults.append(fault)
        return fault

    def remove_fault(self, fault_id: int) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f.id != fault_id]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def fired(self, fault_id: int) -> int:
        """How many answers that fault changed so far."""
        with self._lock:
            return self._fired.get(fault_id, 0)

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._aliases.clear()
            self._calls.clear()
            self._launched.clear()
            self._subnet_zones.clear()

    def alias(self, ours: str, *aws_ids: str) -> None:
        """Calls naming any of ``aws_ids`` count as mentioning ``ours``."""
        with self._lock:
            self._aliases.update({a: ours for a in aws_ids})

    @property
    def calls(self) -> list[tuple[str, int, str | None]]:
        with self._lock:
            return [(c.action, c.status, c.fault) for c in self._calls]

    def calls_mentioning(self, ours: str) -> list[tuple[str, int, str | None]]:
        with self._lock:
            return [(c.action, c.status, c.fault) for c in self._calls if ours in c.text]

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "Ec2FaultProxy":
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ec2-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    # -- the request path
    def _text(self, body: bytes) -> str:
        """The request as text, plus the ids of ours that the AWS ids in it belong to."""
        text = unquote_plus(body.decode("utf-8", "replace"))
        ours = {self._aliases[a] for a in _AWS_ID.findall(text) if a in self._aliases}
        return text + "\n" + " ".join(sorted(ours))

    def _take(self, action: str, text: str, region: str | None = None, zone: str | None = None) -> Ec2Fault | None:
        for fault in self._faults:
            if fault.action and fault.action != action:
                continue
            if fault.contains and fault.contains not in text:
                continue
            if fault.region and fault.region != region:
                continue
            if fault.zone and fault.zone != zone:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                continue
            fault.hits += 1
            self._fired[fault.id] = fault.hits
            if fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
            return fault
        return None

    def _learn(self, params: dict[str, list[str]], response: bytes) -> None:
        action = (params.get("Action") or [""])[0]
        if action == "RunInstances":
            token = (params.get("ClientToken") or [""])[0]
            m = _INSTANCE_IN_RESPONSE.search(response)
            if token.startswith("onebox-") and m:
                self.alias(token.removeprefix("onebox-"), m.group(1).decode())
        elif action == "CreateImage":
            name = (params.get("Name") or [""])[0]
            m = _IMAGE_IN_RESPONSE.search(response)
            if name.startswith("onebox-") and m:
                self.alias(name.removeprefix("onebox-"), m.group(1).decode())
        elif action == "DescribeSubnets":
            self._subnet_zones.update(_subnet_zones(response))

    def _zone(self, params: dict[str, list[str]]) -> str | None:
        """The Availability Zone a RunInstances launches into, when the request says (or its subnet does)."""
        placed = (params.get("Placement.AvailabilityZone") or [None])[0]
        if placed:
            return placed
        subnets = [v[0] for k, v in params.items() if k.endswith("SubnetId")]
        return next((self._subnet_zones[s] for s in subnets if s in self._subnet_zones), None)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes
               ) -> tuple[int, dict[str, str], bytes, float]:
        """(status, headers, body, seconds to hold the answer) for one request."""
        params = parse_qs(body.decode("utf-8", "replace")) if method == "POST" else parse_qs(urlsplit(path).query)
        action = (params.get("Action") or [""])[0]
        scope = _SIGNED_REGION.search(headers.get("Authorization") or headers.get("authorization") or "")
        with self._lock:
            text = self._text(body if method == "POST" else urlsplit(path).query.encode())
            fault = self._take(action, text, scope.group(1) if scope else None, self._zone(params))
        if fault is not None and fault.status is not None:
            with self._lock:
                self._calls.append(_Call(action, fault.status, "error", text))
            return fault.status, {"Content-Type": "text/xml;charset=UTF-8"}, _error_body(fault), 0.0
        token = (params.get("ClientToken") or [""])[0] if action == "RunInstances" else ""
        with self._lock:
            launched = self._launched.get(token) if token else None
        if launched is not None:
            status, out_headers, data = launched  # EC2's ClientToken idempotency
        else:
            status, out_headers, data = self._forward(method, path, headers, body)
        with self._lock:
            if status == 200:
                self._learn(params, data)
                if token:
                    self._launched.setdefault(token, (status, out_headers, data))
            self._calls.append(_Call(action, status, "hold" if fault else None, text))
        return status, out_headers, data, (fault.hold or 0.0) if fault else 0.0

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                 ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            send = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            send["Host"] = self.upstream.netloc
            conn.request(method, path, body=body or None, headers=send)
            response = conn.getresponse()
            data = response.read()
            return response.status, {k: v for k, v in response.getheaders() if k.lower() not in _HOP_HEADERS}, data
        finally:
            conn.close()

    def faults(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self._faults]


def _subnet_zones(response: bytes) -> dict[str, str]:
    """subnet id -> Availability Zone, from a DescribeSubnets answer."""
    from xml.etree import ElementTree

    found = {}
    for element in ElementTree.fromstring(response).iter():
        fields = {child.tag.rsplit("}", 1)[-1]: child.text for child in element}
        if fields.get("subnetId") and fields.get("availabilityZone"):
            found[fields["subnetId"]] = fields["availabilityZone"]
    return found


def _error_body(fault: Ec2Fault) -> bytes:
    """EC2's error document (what botocore's ec2 parser reads)."""
    from xml.sax.saxutils import escape

    code = escape(fault.code or "InternalError")
    message = escape(fault.message or code)
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>").encode()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        proxy: Ec2FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        try:
            status, headers, data, hold = proxy.handle(self.command, self.path, dict(self.headers.items()), body)
        except OSError as exc:  # moto unreachable: a 503 the client will retry
            status, headers, hold = 503, {"Content-Type": "text/xml"}, 0.0
            data = _error_body(Ec2Fault(code="Unavailable", message=f"proxy: {exc}"))
        if hold:
            time.sleep(hold)  # done, but answered late: the client may have given up
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _dispatch

    def log_message(self, fmt: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that gave up on a held answer
        super().handle_error(request, client_address)
