"""Schemathesis against the app's own OpenAPI document, as an authenticated user; the admin-only
routes (which answer such a user 403) in a shorter run of their own, with an admin token.

All phases (examples, coverage, fuzzing, stateful — the links in the document
chain create → read → snapshot → delete), every check but two that contradict
the API's contract:

* ``positive_data_acceptance``: onebox rightly refuses schema-valid values its
  provider catalogs do not offer (an unknown region is a string like any
  other), and no static schema can list them all;
* ``use_after_free``: a DELETE is asynchronous and the record is kept (status
  ``deleting``, then ``deleted``), so a deleted instance is still readable.

The seed is fixed so CI is repeatable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.support import free_port, wait_for_port

SECRET = "schemathesis-" + "s" * 40


# Admin-only operations answer 403 to the user run's token (the access matrix checks exactly that), so that
# run leaves them out and a shorter one fuzzes them with an admin token.
ADMIN_ONLY = r"^/(v1/admin/|metrics$)"


def _fuzz(dbserver, tmp_path, token_args: list[str], st_args: list[str]) -> str:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONEBOX_")}
    env.update({
        "ONEBOX_MONGODB_URL": dbserver.url(), "ONEBOX_DATABASE": f"fuzz_{port}", "ONEBOX_JWT_SECRET": SECRET,
        "ONEBOX_DATA_DIR": str(tmp_path / "data"), "ONEBOX_LOG_LEVEL": "WARNING",
        "ONEBOX_RATE_LIMIT_PER_MINUTE": "1000000", "ONEBOX_QUOTA_MAX_INSTANCES": "100000",
        "ONEBOX_QUOTA_MAX_VCPUS": "1000000", "ONEBOX_QUOTA_MAX_SNAPSHOTS": "100000",
        # No worker runs here, so an instance's event stream would stay open: let each end after a second.
        "ONEBOX_EVENTS_STREAM_MAX_SECONDS": "1",
    })
    bin_dir = os.path.dirname(sys.executable)
    api = subprocess.Popen([os.path.join(bin_dir, "onebox"), "serve", "--no-worker", "--port", str(port)], env=env,
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "api.log", "wb"))
    try:
        wait_for_port("127.0.0.1", port, 60)
        token = subprocess.run([os.path.join(bin_dir, "onebox"), "token", *token_args, "--ttl", "2h"],
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        result = subprocess.run(
            [os.path.join(bin_dir, "st"), "run", f"http://127.0.0.1:{port}/openapi.json",
             "-H", f"Authorization: Bearer {token}", "--checks", "all",
             "--exclude-checks", "positive_data_acceptance,use_after_free", *st_args,
             "--seed", "20261122", "--no-color"],
            capture_output=True, text=True, timeout=900, env={**os.environ, "NO_COLOR": "1"},
        )
    finally:
        api.terminate()
        api.wait(20)
    output = result.stdout + result.stderr
    assert token not in output
    assert result.returncode == 0, output[-6000:]
    return output


def test_schemathesis_finds_nothing(dbserver, tmp_path):
    output = _fuzz(dbserver, tmp_path, ["--user", "fuzzer"],
                   ["--phases", "examples,coverage,fuzzing,stateful", "--max-examples", "30",
                    "--exclude-path-regex", ADMIN_ONLY])
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) >= 500, output[-2000:]
    assert "Stateful" in output


def test_schemathesis_finds_nothing_in_admin_routes(dbserver, tmp_path):
    output = _fuzz(dbserver, tmp_path, ["--user", "fuzzadmin", "--admin"],
                   ["--phases", "examples,coverage,fuzzing", "--max-examples", "10",
                    "--include-path-regex", ADMIN_ONLY])
    generated = re.search(r"(\d+) generated", output)
    assert generated and int(generated.group(1)) >= 100, output[-2000:]
    assert "Authentication failed" not in output, "the admin token reaches every admin route"
