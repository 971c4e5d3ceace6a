"""QA runs: benchmark suites run on demand on a user's running instances, judged against baselines, reported.

A run is a job like an instance's (``app.lifecycle.engine``): ``service`` validates a request and stores
the run with its job (one run per instance, taken with unique inserts in ``repository``); a worker runs
``jobs`` — the qa_tools Ansible role when a tool is missing, the suite's steps over SSH (``remote``), a
teardown that leaves nothing behind — turning the tools' machine-readable output into results
(``parsers``) judged against baselines (``baselines``) as they are measured. ``suites`` is the table of
suites, checks and parameters; ``report`` draws the charts (matplotlib) and writes the HTML page, the zip
and JUnit XML; ``models`` is what the API accepts and answers (``app/api/qa.py``).
"""
