"""``--wait``: follow an instance's event stream until it reaches the state asked for.

Reads ``GET /v1/instances/{id}/events/stream`` (Server-Sent Events; the README's "For frontend
teams" section is the contract): a Rich status line with a spinner shows the current status while
each event is printed as it arrives. A ``reconnect`` message, a dropped connection or a server
restarting all lead to a new connection with ``Last-Event-ID``, so no event is shown twice or lost;
only when reconnecting keeps failing (``MAX_FAILURES`` in a row) does the wait end, with exit 4.

What "done" means:

* **A new instance** (``create``): its status is in ``until`` (``running``). The stream sends the
  status before the events of the same poll, so the wait goes on until the transition's own event
  (``configuring → running``) is printed too — or ``EVENT_GRACE_SECONDS`` after the status, should that
  event never come (a worker killed between the two writes).
* **A change of state** (``stop``, ``start``, ``reboot``): the status before the request (``origin``)
  and the time of the last event before it (``since``, the server's own clock) tell this change from
  the instance's history, which the stream replays first: done when the status is in ``until`` after
  it was seen elsewhere (``rebooting``), or when a transition into ``until`` happened after ``since``.
  A transition after ``since`` into another steady status (a stop that ended ``running`` again, with
  the reason in ``error``) is a failure.
* **A final state** (``rm``: ``until_end``): only the server's ``end`` message, which comes after every
  event up to the final transition.

A status in ``fail_on`` (``failed``) ends the wait with ``InstanceFailed`` (exit 3), printing the
error's code, message and step once the failure's own events are shown. Ctrl-C stops watching, never
the operation (exit 130).

Reusable by any command that waits on an instance: ``wait_for`` with the printer and the target
states, or ``Follower`` with callbacks for other output.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any, Callable

from rich.text import Text

from app.client.errors import CliError, ExitCode
from app.client.http import ApiClient, StreamBroken
from app.client.output import Output, event_line, parse_time, status_text
from app.client.sse import COMMENT, SseParser, messages

MAX_FAILURES = 5
EVENT_GRACE_SECONDS = 3.0
STEADY = frozenset({"running", "stopped", "failed", "deleted"})  # where an instance stays until asked


class InstanceFailed(CliError):
    """The instance ended somewhere other than where it was waited for (exit 3), with its error."""

    def __init__(self, label: str, status: dict[str, Any], wanted: set[str]) -> None:
        error = status.get("error") or {}
        where = f" at step {error['step']}" if error.get("step") else ""
        reason = f"{error.get('code', 'error')}: {error.get('message', '')}" if error else ""
        if status.get("status") == "failed":
            message = f"{label} failed{where}" + (f": {reason}" if reason else "")
        else:
            message = f"{label} is {status.get('status')}, not {'/'.join(sorted(wanted))}"
            message += f" (failed{where}: {reason})" if reason else ""
        super().__init__(message, ExitCode.FAILED)
        self.status = status


def transition(message: str) -> tuple[str | None, str | None]:
    """``"running → deleting"`` (or ``"instance failed → deleting"``, ``"running → failed: why"``)
    → ``("running", "deleting")``; ``(None, None)`` for anything else."""
    if "→" not in message:
        return None, None
    before, after = message.rsplit("→", 1)
    source = before.split()[-1] if before.split() else None
    words = after.replace(":", " ").split()
    return source, (words[0] if words else None)


def transition_target(message: str) -> str | None:
    return transition(message)[1]


class Follower:
    def __init__(self, api: ApiClient, instance_id: str, *, until: set[str], fail_on: set[str] | None = None,
                 origin: str | None = None, since: dt.datetime | None = None, until_end: bool = False,
                 label: str | None = None, on_event: Callable[[dict[str, Any]], None] | None = None,
                 on_status: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.api = api
        self.instance_id = instance_id
        self.label = label or instance_id
        self.until = set(until)
        self.fail_on = {"failed"} if fail_on is None else set(fail_on)
        self.origin = origin
        self.since = since
        self.until_end = until_end
        self.on_event = on_event or (lambda event: None)
        self.on_status = on_status or (lambda status: None)
        self.status: dict[str, Any] = {}
        self.left = False  # a status other than `origin` was seen
        self.moved = False  # a transition event into `until` (after `since`, for a change) was seen
        self.reached_at: float | None = None  # when the status was first seen at the target
        self.failing_at: float | None = None  # when the status was first seen where the wait fails
        self.failed_into: str | None = None  # the status a failing transition event went into
        self.parser = SseParser()

    def _new(self, event: dict[str, Any]) -> bool:
        """Whether an event belongs to the change waited for (any event, for a new instance)."""
        if self.since is None:
            return True
        at = parse_time(event.get("at"))
        return at is not None and at > self.since

    def _fails(self, status: str | None) -> bool:
        if status in self.fail_on:
            return True
        # After a change of state began, another steady status is where it ended instead.
        return self.origin is not None and self.left and status in STEADY - self.until

    def _at_target(self) -> bool:
        if self.status.get("status") not in self.until:
            return False
        return self.origin is None or self.left or self.moved

    def _complete(self) -> bool:
        now = time.monotonic()
        if self.failing_at is not None:
            if self.status.get("status") == self.failed_into or now - self.failing_at >= EVENT_GRACE_SECONDS:
                raise InstanceFailed(self.label, self.status, self.until)
            return False
        if self.until_end or not self._at_target():
            return False
        return self.moved or now - (self.reached_at or now) >= EVENT_GRACE_SECONDS

    def _handle(self, event: str, data: dict[str, Any]) -> bool:
        """True once done; raises ``InstanceFailed``. ``reconnect`` is the caller's."""
        if event == "status":
            self.status = data
            self.on_status(data)
            status = data.get("status")
            self.left = self.left or (self.origin is not None and status != self.origin)
            self.failing_at = (self.failing_at or time.monotonic()) if self._fails(status) else None
            self.reached_at = (self.reached_at or time.monotonic()) if self._at_target() else None
        elif event == "instance":
            self.on_event(data)
            source, target = transition(str(data.get("message", ""))) if data.get("type") == "status" else (None, None)
            if target is not None and self._new(data):
                if target in self.until:
                    self.moved = True
                    self.reached_at = self.reached_at or (time.monotonic() if self._at_target() else None)
                elif target in self.fail_on or (self.origin is not None and target in STEADY):
                    self.left = True
                    self.failed_into = target
                    if self._fails(self.status.get("status")):
                        self.failing_at = self.failing_at or time.monotonic()
        elif event == "end":
            final = data.get("status")
            self.status = {**self.status, "status": final}
            if final in self.until:
                return True
            raise InstanceFailed(self.label, self.status, self.until)
        return self._complete()

    def run(self) -> dict[str, Any]:
        """Block until done; the last status payload (``{status, error, public_ip, ssh_port, …}``)."""
        failures = 0
        while True:
            headers = {"Last-Event-ID": self.parser.last_id} if self.parser.last_id else {}
            try:
                with self.api.stream(f"/v1/instances/{self.instance_id}/events/stream", headers=headers) as response:
                    failures = 0
                    for message in messages(response.iter_lines(), self.parser):
                        if message.event == "reconnect":
                            break
                        if message.event == COMMENT:  # a keep-alive: time passed
                            if self._complete():
                                return self.status
                            continue
                        try:
                            data = json.loads(message.data) if message.data else {}
                        except ValueError:
                            continue
                        if isinstance(data, dict) and self._handle(message.event, data):
                            return self.status
            except StreamBroken as broken:
                failures += 1
                if failures >= MAX_FAILURES:
                    raise broken.error from None
                time.sleep(min(2 ** (failures - 1), 8))


def last_event_time(api: ApiClient, instance_id: str) -> dt.datetime | None:
    """When the instance's latest event happened (server clock): what a change's events come after.
    Read before asking for the change."""
    events = api.get(f"/v1/instances/{instance_id}/events")
    times = [t for t in (parse_time(e.get("at")) for e in events) if t is not None]
    return max(times) if times else dt.datetime.min.replace(tzinfo=dt.timezone.utc)


def wait_for(api: ApiClient, out: Output, instance: dict[str, Any], *, until: set[str],
             fail_on: set[str] | None = None, origin: str | None = None, since: dt.datetime | None = None,
             until_end: bool = False, print_events: bool = True) -> dict[str, Any]:
    """Follow ``instance`` with a live status line on stderr; the final status payload.

    Events are printed to stderr (stdout stays the command's result); with ``since``, only the
    events after it (the instance's history is not repeated)."""
    label = f"{instance.get('name') or instance['id']}"
    target = "/".join(sorted(until))
    spinner = out.err.status(Text(f"{label}: waiting for {target}"), spinner="dots")

    def show_status(status: dict[str, Any]) -> None:
        line = Text(f"{label}: ")
        line.append_text(status_text(status.get("status")))
        line.append(f"  (waiting for {target})", style="dim")
        spinner.update(line)

    def show_event(event: dict[str, Any]) -> None:
        at = parse_time(event.get("at"))
        if print_events and (since is None or at is None or at > since):
            out.err.print(event_line(event), soft_wrap=True)

    follower = Follower(api, instance["id"], until=until, fail_on=fail_on, origin=origin, since=since,
                        until_end=until_end, on_event=show_event, on_status=show_status, label=label)
    try:
        with spinner:
            return follower.run()
    except InstanceFailed as failed:
        # The stream's status may trail the failing event by a poll: the record has the error for sure.
        record = api.get(f"/v1/instances/{instance['id']}")
        raise InstanceFailed(label, {**failed.status, "status": record.get("status"), "error": record.get("error")},
                             set(until)) from None
    except KeyboardInterrupt:
        raise CliError(f"stopped watching {label}; it carries on: `onebox show {label}`",
                       ExitCode.INTERRUPTED) from None
