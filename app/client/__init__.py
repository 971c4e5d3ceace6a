"""The client: ``onebox <command>`` talking to any onebox server over its REST API, and nothing else.

It never imports the server's modules (``app.services``, ``app.db``, ``app.settings``, …): a laptop or
a CI job needs only the URL and a token. ``app.cli`` (the one ``onebox`` command, server commands
included) loads this package only when a client command runs, so ``onebox serve`` starts without it.

Pieces, meant to be reused by every command group (``onebox qa``, ``onebox costs``, …):

* ``main``       — the command tree. **Adding a group is one line** in ``main.GROUPS``
                   (``"qa": "app.client.qa"``, a module with ``app = typer.Typer()``); top-level
                   commands go into ``main.COMMANDS``. Errors raised as ``CliError`` are printed and
                   turned into exit codes there, for every command.
* ``errors``     — ``ExitCode`` (0 ok, 1 the API refused, 2 usage, 3 the instance failed, 4 the server
                   cannot be reached, 130 Ctrl-C while waiting) and ``CliError``/``ApiError``.
* ``http``       — ``connect()`` → ``ApiClient``: ``get``/``post``/``delete``/``pages`` (follows
                   ``next_cursor``)/``stream``; RFC 9457 problems become one line plus one per field
                   error; network failures name the URL (exit 4). The token is never printed.
* ``config``     — ``~/.config/onebox/config.toml`` (0600), overridden by ``ONEBOX_URL``/``ONEBOX_TOKEN``.
* ``resolve``    — name-or-id arguments: ``resolve_instance``, ``resolve_instances``,
                   ``resolve_snapshot`` (ambiguous names list the candidates, exit 2).
* ``follow``     — ``wait_for(api, out, instance, until={...})``: the ``--wait`` event follower (live
                   status line, events as they arrive, reconnects with ``Last-Event-ID``, exit 3 on
                   ``failed``); ``Follower`` for custom printing.
* ``output``     — ``Output(json_mode)``: ``json``, ``table``, ``fields``, ``note`` (stderr),
                   ``result`` (stdout), and formatters (``status_text``, ``ago``, ``event_line``, …).
* ``options``    — ``JsonOption``, ``WaitOption``: the shared ``--json`` and ``--wait``.
* ``durations``  — ``8h``/``30m`` parsing (pure; the server's ``onebox token --ttl`` uses it too).

A command is: parse options → ``with connect() as api`` → resolve names → one or two API calls →
print with ``Output`` (results on stdout, progress and errors on stderr) → raise ``CliError`` for
anything that went wrong.
"""
