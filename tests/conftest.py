"""Shared fixtures: a real FerretDB, an SSH key pair, free ports."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from tests.support import free_port  # noqa: F401  (re-exported for tests)


@dataclasses.dataclass
class SshKeyPair:
    private_path: Path
    public: str
    known_hosts: Path

    def command(self, host: str, port: int, remote: str, user: str | None = None) -> list[str]:
        import getpass

        return [
            "ssh", "-i", str(self.private_path), "-p", str(port),
            "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
            f"{user or getpass.getuser()}@{host}", remote,
        ]

    def run(self, host: str, port: int, remote: str, check: bool = True, user: str | None = None):
        return subprocess.run(self.command(host, port, remote, user), capture_output=True, text=True,
                              timeout=30, check=check)


@pytest.fixture(scope="session")
def ssh_keypair(tmp_path_factory) -> SshKeyPair:
    d = tmp_path_factory.mktemp("ssh")
    key = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tester@onebox", "-f", str(key)], check=True)
    return SshKeyPair(key, (d / "id_ed25519.pub").read_text().strip(), d / "known_hosts")
