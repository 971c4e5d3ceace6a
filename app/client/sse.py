"""A Server-Sent Events parser (the subset onebox's streams use), fed line by line.

Pure: ``app.client.follow`` feeds it the lines of ``GET /v1/instances/{id}/events/stream``. It follows
the WHATWG rules that matter here: ``field: value`` lines (one leading space dropped), ``data`` lines
joined with newlines, comment lines kept apart, a blank line dispatching the message,
and ``id`` remembered across messages for ``Last-Event-ID``. Comment lines (``: keep-alive``) are
passed on as messages named ``COMMENT``, so a reader waiting for something learns that time passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator


COMMENT = ":"  # the event name given to comment lines (keep-alives): a sign of life, nothing else


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None


class SseParser:
    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> Message | None:
        """One line without its line ending; a complete message when ``line`` ends one."""
        if line == "":
            if not self._data and not self._event and self._id is None:
                return None
            message = Message(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return message
        if line.startswith(":"):
            return Message(COMMENT, line[1:].strip(), None)
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
            self.last_id = value
        return None


def messages(lines: Iterable[str], parser: SseParser | None = None) -> Iterator[Message]:
    parser = parser or SseParser()
    for line in lines:
        message = parser.feed(line.rstrip("\r\n"))
        if message is not None:
            yield message
