"""The container files: the compose file validates, the image runs as a non-root user."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0


@pytest.mark.skipif(not compose_available(), reason="the docker compose plugin is not installed")
def test_compose_file_validates():
    env = {**os.environ, "ONEBOX_JWT_SECRET": "x" * 40, "ONEBOX_DEPLOYMENT_ID": "compose-test"}
    result = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=ROOT, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    services = subprocess.run(["docker", "compose", "config", "--services"], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True).stdout.split()
    assert sorted(services) == ["api", "mongo", "proxy", "worker"]
    rendered = subprocess.run(["docker", "compose", "config", "--format", "json"], cwd=ROOT, env=env,
                              capture_output=True, text=True, check=True).stdout
    import json

    config = json.loads(rendered)["services"]
    assert config["api"]["deploy"]["replicas"] == 2 and config["worker"]["deploy"]["replicas"] == 3
    assert "--no-worker" in config["api"]["command"]
    assert "replicaSet=rs0" in config["worker"]["environment"]["ONEBOX_MONGODB_URL"]
    assert "--replSet" in config["mongo"]["command"]
    for required in ("ONEBOX_JWT_SECRET", "ONEBOX_DEPLOYMENT_ID"):
        missing = subprocess.run(["docker", "compose", "config", "--quiet"], cwd=ROOT,
                                 env={k: v for k, v in env.items() if k != required}, capture_output=True, text=True)
        assert missing.returncode != 0 and required in missing.stderr


def test_dockerfile_is_multi_stage_and_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert text.count("\nFROM ") + text.startswith("FROM ") >= 2
    assert "\nUSER onebox" in text
    assert "mongo:7" in (ROOT / "docker-compose.yml").read_text()
