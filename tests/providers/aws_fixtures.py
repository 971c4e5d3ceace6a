"""A real moto EC2 server for the AWS provider's tests, and the fixtures around it.

``moto_ec2`` starts ``python -m moto.server`` once per test session on a free
local port. Its environment carries ``MOTO_AMIS_PATH``, a small AMI list with
Canonical and Debian images named like the real ones (moto's bundled list has
neither Ubuntu 22.04/24.04 nor Debian 12), so alias resolution runs unchanged.
``aws_env`` gives boto3 fake credentials through the environment for one test
only, and resets the server's state before it. Tests talk to the server only
over HTTP, through the provider or a plain boto3 client (``ec2``).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from providers.base import InstanceSpec

ACCOUNT_ID = "123456789012"  # moto's default account
CANONICAL = "099720109477"
DEBIAN = "136693071363"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOnebOxTestKeyOnlyForMotoXXXXXXXXXXXXXXXXXXX test@onebox"


def _ami(ami_id: str, owner: str, name: str, created: str, root: str = "/dev/sda1",
         arch: str = "x86_64") -> dict:
    return {
        "ami_id": ami_id, "state": "available", "public": True, "owner_id": owner,
        "image_location": f"{owner}/{name}", "sriov": "simple", "root_device_type": "ebs",
        "root_device_name": root, "description": name, "image_type": "machine",
        "architecture": arch, "name": name, "virtualization_type": "hvm", "hypervisor": "xen",
        "creation_date": created,
    }


# Two builds of each alias (the newer must win) and decoys that must never be picked.
TEST_AMIS = [
    _ami("ami-0a00000000000a221", CANONICAL, "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20240101",
         "2024-01-01T00:00:00.000Z"),
    _ami("ami-0a00000000000a222", CANONICAL, "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20250301",
         "2025-03-01T00:00:00.000Z"),
    _ami("ami-0a00000000000a241", CANONICAL, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20240423",
         "2024-04-23T00:00:00.000Z"),
    _ami("ami-0a00000000000a242", CANONICAL, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20250115",
         "2025-01-15T00:00:00.000Z"),
    _ami("ami-0a00000000000d121", DEBIAN, "debian-12-amd64-20240717-1811", "2024-07-17T18:11:00.000Z",
         root="/dev/xvda"),
    _ami("ami-0a00000000000d122", DEBIAN, "debian-12-amd64-20250112-1962", "2025-01-12T19:52:00.000Z",
         root="/dev/xvda"),
    # decoys: newer, but arm64, or not published by Canonical
    _ami("ami-0a00000000000ee01", CANONICAL, "ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-20991231",
         "2099-12-31T00:00:00.000Z", arch="arm64"),
    _ami("ami-0a00000000000ee02", "111122223333", "ubuntu/images/hvm-ssd/ubuntu-jammy-22.04-amd64-server-20991231",
         "2099-12-31T00:00:00.000Z"),
]
NEWEST = {"ubuntu-22.04": "ami-0a00000000000a222", "ubuntu-24.04": "ami-0a00000000000a242",
          "debian-12": "ami-0a00000000000d122"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class MotoServer:
    url: str

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200


@contextlib.contextmanager
def running_moto(workdir: Path) -> Iterator[MotoServer]:
    """moto's server in a subprocess, with our AMI list (files and log in ``workdir``); stopped after."""
    amis = workdir / "amis.json"
    amis.write_text(json.dumps(TEST_AMIS))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(MOTO_AMIS_PATH=str(amis), PYTHONUNBUFFERED="1")
    log = (workdir / "moto_server.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    server = MotoServer(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{server.url}/moto-api/", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start; see {log.name}") from None
                time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def moto_ec2(tmp_path_factory) -> Iterator[MotoServer]:
    """moto's server in a subprocess, with our AMI list; stopped at the end of the session."""
    with running_moto(tmp_path_factory.mktemp("moto")) as server:
        yield server


@pytest.fixture
def aws_env(moto_ec2, monkeypatch, tmp_path) -> MotoServer:
    """Fake credentials for boto3 for this test only, and a moto with nothing in it."""
    for key in list(os.environ):
        if key.startswith("AWS_"):
            monkeypatch.delenv(key)
    missing = str(tmp_path / "no-aws-config")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", missing)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", missing)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    moto_ec2.reset()
    return moto_ec2


@pytest.fixture
def ec2(aws_env):
    """A plain boto3 EC2 client on moto, to look at what the provider left there."""
    import boto3

    return boto3.client("ec2", region_name="us-east-1", endpoint_url=aws_env.url)


def new_spec(**overrides) -> InstanceSpec:
    instance_id = overrides.pop("instance_id", None) or f"i-{uuid.uuid4().hex[:12]}"
    values = dict(
        instance_id=instance_id, owner="alice", name=f"box-{instance_id}", region="us-east-1",
        zone=None, machine_type="t3.micro", ssh_user="alice", ssh_public_key=SSH_KEY, disk_gb=20,
        image="ubuntu-24.04", labels={"team": "dev"},
    )
    values.update(overrides)
    return InstanceSpec(**values)


def tags_of(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


__all__ = ["moto_ec2", "aws_env", "ec2", "new_spec", "tags_of", "MotoServer"]
