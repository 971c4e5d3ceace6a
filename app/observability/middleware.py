"""Each HTTP request: its request id, and its count and latency in the HTTP metrics.

The outermost of onebox's middlewares, so every line logged while a request is handled (the
access log, slow-request warnings, events, errors) carries its ``request_id``; a request that
queues a job stores the id with it (``app.worker.jobs.new_job``), and the worker's lines for that
job carry it too. The id is the client's ``X-Request-ID`` when well-formed, else a fresh one, and
is returned in the response's ``X-Request-ID``. The access line of a route about one instance
(``/v1/instances/{instance_id}…``) names that instance too.

Routes are labelled by their template (``/v1/instances/{instance_id}``), never the raw path, and
paths no route matches share one label, so a scan of random URLs cannot blow up the number of
series.
"""

from __future__ import annotations

import time

from app.logs import accepted_request_id, log_context
from app.observability.metrics import AGENT_POSTS, HTTP_DURATION, HTTP_REQUESTS

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER = REQUEST_ID_HEADER.lower().encode()
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
AGENT_ROUTE = "/v1/agent/metrics"
UNMATCHED = "unmatched"


def route_label(scope) -> str:
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


def agent_outcome(status: int) -> str:
    if 200 <= status < 300:
        return "accepted"
    return "failed" if status >= 500 else "refused"


class RequestObservation:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        incoming = next((value.decode("latin-1") for name, value in scope.get("headers", []) if name == _HEADER), None)
        request_id = accepted_request_id(incoming)
        status = 500  # unless a response starts: an exception escaped every handler
        started = time.perf_counter()

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (_HEADER, request_id.encode())]}
                # the server's access line is written now: name the instance the route is about
                instance = (scope.get("path_params") or {}).get("instance_id")
                if instance:
                    with log_context(instance_id=instance):
                        return await send(message)
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = route_label(scope)
                method = scope["method"] if scope["method"] in METHODS else "other"
                HTTP_REQUESTS.labels(route, method, str(status)).inc()
                HTTP_DURATION.labels(route, method, str(status)).observe(time.perf_counter() - started)
                if route == AGENT_ROUTE and method == "POST":
                    AGENT_POSTS.labels(agent_outcome(status)).inc()
