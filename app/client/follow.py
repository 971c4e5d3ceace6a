"""``--wait``: follow an instance's event stream until it reaches the state asked for.

Reads ``GET /v1/instances/{id}/events/stream`` (Server-Sent Events; the README's "For frontend
teams" section is the contract): a Rich status line with a spinner shows the current status while
each event is printed as it arrives. A ``reconnect`` message, a dropped connection or a server
restarting all lead to a new connection with ``Last-Event-ID``, so no event is shown twice or lost;
only when reconnecting keeps failing (``MAX_FAILURES`` in a row) does the wait end, with exit 4.

The wait succeeds when the status is one of ``until`` (once the transition's own event, which
follows the status within a poll or two, is printed too). With ``since`` (the server's time when the
request was accepted: its ``Date`` header, so the client's clock does not matter), the instance must
also have got there after the request — seen in another status first, or a transition event into
``until`` at or after ``since`` — which is how ``reboot --wait`` tells the instance that came back from
the one that was running before. With ``until_end``, only the server's ``end`` message completes the
wait (final states such as ``deleted``: every event up to the final transition is printed first). It
fails (``InstanceFailed``, exit 3) when the status becomes one of ``fail_on``, or when the server ends
the stream in any other state. Ctrl-C stops watching, never the operation (exit 130).

Reusable by any command that waits on an instance: pass the printer, a label, and the target states.
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


class InstanceFailed(CliError):
    """The instance ended in a state other than the one waited for (exit 3), with its error."""

    def __init__(self, label: str, status: dict[str, Any]) -> None:
        error = status.get("error") or {}
        if error:
            where = f" at step {error['step']}" if error.get("step") else ""
            message = f"{label} failed{where}: {error.get('code', 'error')}: {error.get('message', '')}"
        else:
            message = f"{label} ended {status.get('status')}"
        super().__init__(message, ExitCode.FAILED)
        self.status = status


def transition_target(message: str) -> str | None:
    """``"running → deleting"`` (or ``"instance failed → deleting"``) → ``"deleting"``."""
    if "→" not in message:
        return None
    words = message.rsplit("→", 1)[1].replace(":", " ").split()
    return words[0] if words else None


class Follower:
    """One wait. ``until_end``: only the server's ``end`` message completes it (every event up to the
    final transition is sent before it), for final states such as ``deleted``."""

    def __init__(self, api: ApiClient, instance_id: str, *, until: set[str], fail_on: set[str] | None = None,
                 since: dt.datetime | None = None, until_end: bool = False, label: str | None = None,
                 on_event: Callable[[dict[str, Any]], None] | None = None,
                 on_status: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.api = api
        self.instance_id = instance_id
        self.label = label or instance_id
        self.until = set(until)
        self.fail_on = {"failed"} if fail_on is None else set(fail_on)
        self.since = since
        self.until_end = until_end
        self.on_event = on_event or (lambda event: None)
        self.on_status = on_status or (lambda status: None)
        self.status: dict[str, Any] = {}
        self.left = False  # a status outside `until` was seen: reaching `until` now is new
        self.moved = False  # a transition event into `until` (at or after `since`, if given) was seen
        self.reached_at: float | None = None  # when the status was first seen at the target
        self.failing_at: float | None = None  # when the status was first seen in `fail_on`
        self.failed_seen = False  # and the transition event into it
        self.parser = SseParser()

    def _at_target(self) -> bool:
        if self.status.get("status") not in self.until:
            return False
        # Without `since`, being there is enough. With it, the instance must have got there after the
        # request: seen elsewhere first, or a transition event into it at or after `since`.
        return self.since is None or self.left or self.moved

    def _complete(self) -> bool:
        """At the target (or failed), and the transition's own event printed too — it follows the
        status within a poll or two, with the error's events — or, should it never come (a worker
        killed between the two writes), ``EVENT_GRACE_SECONDS`` later."""
        if self.failing_at is not None:
            if self.failed_seen or time.monotonic() - self.failing_at >= EVENT_GRACE_SECONDS:
                raise InstanceFailed(self.label, self.status)
            return False
        if self.until_end or not self._at_target():
            return False
        return self.moved or time.monotonic() - (self.reached_at or time.monotonic()) >= EVENT_GRACE_SECONDS

    def _handle(self, event: str, data: dict[str, Any]) -> bool:
        """True once done; raises ``InstanceFailed``. ``reconnect`` is the caller's."""
        if event == "status":
            self.status = data
            self.on_status(data)
            failing = data.get("status") in self.fail_on
            self.failing_at = (self.failing_at or time.monotonic()) if failing else None
            if data.get("status") not in self.until:
                self.left = True
            self.reached_at = (self.reached_at or time.monotonic()) if self._at_target() else None
        elif event == "instance":
            self.on_event(data)
            target = transition_target(str(data.get("message", ""))) if data.get("type") == "status" else None
            if target is not None and target in self.fail_on and self.failing_at is not None:
                self.failed_seen = True
            if target is not None and target in self.until:
                at = parse_time(data.get("at"))
                self.moved = self.moved or self.since is None or (at is not None and at >= self.since)
                if self._at_target() and self.reached_at is None:
                    self.reached_at = time.monotonic()
        elif event == "end":
            final = data.get("status")
            self.status = {**self.status, "status": final}
            if final in self.until:
                return True
            raise InstanceFailed(self.label, self.status)
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


def wait_for(api: ApiClient, out: Output, instance: dict[str, Any], *, until: set[str],
             fail_on: set[str] | None = None, since: dt.datetime | None = None, until_end: bool = False,
             print_events: bool = True) -> dict[str, Any]:
    """Follow ``instance`` with a live status line on stderr; the final status payload.

    Events are printed to stderr (stdout stays the command's result)."""
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
        if print_events and (since is None or at is None or at >= since):  # history before the request: skip
            out.err.print(event_line(event), soft_wrap=True)

    follower = Follower(api, instance["id"], until=until, fail_on=fail_on, since=since, until_end=until_end,
                        on_event=show_event, on_status=show_status, label=label)
    try:
        with spinner:
            return follower.run()
    except KeyboardInterrupt:
        raise CliError(f"stopped watching {label}; it carries on: `onebox show {label}`",
                       ExitCode.INTERRUPTED) from None
