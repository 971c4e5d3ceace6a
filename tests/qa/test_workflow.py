"""The shipped CI workflow (.github/workflows/qa.yml) and the CLI's pure parts: the workflow only uses options
`onebox qa run` has, and never pastes an input into its script."""

from __future__ import annotations

import re

import pytest
import typer
import yaml

from app.client.qa import parse_params, throwaway_public_key
from app.settings import REPO_ROOT

WORKFLOW = REPO_ROOT / ".github" / "workflows" / "qa.yml"


def run_options() -> set[str]:
    from app.client.qa import app

    command = typer.main.get_command(app).commands["run"]
    return {opt for param in command.params for opt in param.opts}


def test_the_workflow_is_dispatched_with_suite_provider_and_type():
    flow = yaml.safe_load(WORKFLOW.read_text())
    dispatch = flow[True]["workflow_dispatch"]  # YAML 1.1 reads the key `on` as True
    inputs = dispatch["inputs"]
    assert {"suite", "provider", "type"} <= set(inputs)
    assert set(inputs["suite"]["options"]) == {"smoke", "network", "disk", "cpu", "memory", "gpu"}
    steps = flow["jobs"]["qa"]["steps"]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "qa-report/"


def test_the_workflow_uses_only_real_options_and_no_pasted_input():
    flow = yaml.safe_load(WORKFLOW.read_text())
    run = next(s["run"] for s in flow["jobs"]["qa"]["steps"] if s.get("name") == "Run the suite")
    used = set(re.findall(r"(--[a-z][a-z-]*)", run))
    assert used <= run_options(), used - run_options()
    assert {"--suite", "--provider", "--type", "--junit", "--report"} <= used
    for step in flow["jobs"]["qa"]["steps"]:
        assert "${{" not in step.get("run", ""), "inputs go through env, never into the script"


def test_params_parse_numbers_and_lists():
    assert parse_params(["duration_seconds=5", "udp_target_mbps=2.5", "block_sizes=4k,64k", "x=y"]) == \
        {"duration_seconds": 5, "udp_target_mbps": 2.5, "block_sizes": ["4k", "64k"], "x": "y"}
    with pytest.raises(typer.BadParameter):
        parse_params(["novalue"])


def test_throwaway_key_is_an_openssh_ed25519_line():
    key = throwaway_public_key()
    assert re.fullmatch(r"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5[A-Za-z0-9+/]+=* onebox-qa", key)
    assert key != throwaway_public_key()
