"""Shared fixtures: a real MongoDB-wire database server (onebox's embedded one), an SSH key pair, free ports."""

from __future__ import annotations

import dataclasses
import json
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


# --- tables printed at the end of the run, gathered from pytest-xdist's workers ---

def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):  # an xdist worker: its rows go to the controller
        from tests import reports

        session.config.workeroutput["onebox_reports"] = json.dumps(reports.ROWS)


def pytest_testnodedown(node, error):  # (pytest-xdist's hook, on the controller)
    from tests import reports

    if "onebox_reports" in getattr(node, "workeroutput", {}):
        reports.merge(json.loads(node.workeroutput["onebox_reports"]))


def pytest_terminal_summary(terminalreporter):
    from tests import reports

    reports.write_summary(terminalreporter)


# --- a real MongoDB-protocol server, and the app on top of it -----------------

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import uuid  # noqa: E402

import httpx  # noqa: E402

from app.embedded_db import EmbeddedDatabase  # noqa: E402
from app.settings import REPO_ROOT, Settings  # noqa: E402

DB_HOME = Path(os.environ.get("ONEBOX_TEST_DB_HOME", REPO_ROOT / ".bin" / "mongo-server"))
TEST_SECRET = "test-secret-" + "x" * 40


def start_database(data_dir: Path, log_path: Path | None = None, **options) -> EmbeddedDatabase:
    """A fresh embedded database (onebox's own server) on a free port, its file on tmpfs when there is one."""
    return EmbeddedDatabase(DB_HOME, f"127.0.0.1:{free_port()}", data_dir, log_path=log_path,
                            **{"cache_mb": 256, "heap_mb": 1024, **options}).start()


def scratch_dir(tmp_path_factory, name: str) -> Path:
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp_path_factory.getbasetemp()
    return base / f"onebox-test-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def dbserver(tmp_path_factory):
    """One database server for the session; each test gets a database of its own on it (make_settings)."""
    if not (DB_HOME / "onebox-db.jar").exists():
        pytest.fail(f"{DB_HOME}/onebox-db.jar is missing: run `make mongo-server` (make test does)")
    data = scratch_dir(tmp_path_factory, "db")
    db = start_database(data, tmp_path_factory.getbasetemp() / "dbserver.log")
    yield db
    db.stop()
    import shutil

    shutil.rmtree(data, ignore_errors=True)


# Every database a test asked make_settings for, as (server URL, name): dropped when its test module
# ends (below), so that the session's one server holds one module's data at a time, not the whole run's.
_DATABASES: list[tuple[str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def _drop_module_databases():
    first = len(_DATABASES)
    yield
    made, _DATABASES[first:] = _DATABASES[first:], []
    if not made:
        return
    from pymongo import MongoClient

    for url in dict.fromkeys(url for url, _ in made):
        client = MongoClient(url, serverSelectionTimeoutMS=1000)
        try:
            for server_url, name in made:
                if server_url == url:
                    client.drop_database(name)
        except Exception:  # noqa: BLE001 - a server a test stopped holds nothing to drop
            pass
        finally:
            client.close()


def make_settings(dbserver, data_dir: Path, **overrides) -> Settings:
    database = f"t_{uuid.uuid4().hex[:12]}"
    _DATABASES.append((dbserver.url(), overrides.get("database", database)))
    values = dict(
        data_dir=data_dir,
        mongodb_url=dbserver.url(),
        database=database,
        jwt_secret=TEST_SECRET,
        lease_seconds=3.0,
        poll_seconds=0.05,
        backoff_base_seconds=0.05,
        backoff_max_seconds=0.5,
        max_attempts=3,
        wait_running_timeout_seconds=20.0,
        configure="skip",  # tests that need Ansible ask for it
        quota_max_instances=100,  # tests of quotas and rate limits set their own
        quota_max_vcpus=1000,
        rate_limit_per_minute=100_000,
        # Cloud stand-ins are shared by the session's tests, each with a database of its own: to one
        # test's reaper, another's resources have no record. Tests of the reaper turn it on.
        reaper_enabled=False,
        events_stream_max_seconds=1.0,  # an instance's event stream never outlives a test (reconnect after 1 s)
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(dbserver, tmp_path) -> Settings:
    return make_settings(dbserver, tmp_path / "data")


def _remove_local_instances(data_dir: Path) -> None:
    from providers.base import InstanceRef
    from providers.local import LocalConfig, LocalProvider

    local = LocalProvider(LocalConfig(root=data_dir / "local"))
    for resource in local.list_managed():
        if resource.kind == "instance":
            local.delete_instance(InstanceRef(resource.instance_id, resource.region))


@pytest.fixture
async def services(settings):
    from app.services import Services

    svc = Services.build(settings)
    await svc.db.ensure_indexes()
    yield svc
    with contextlib.suppress(Exception):  # keep the shared server small: each test's database goes with it
        await svc.db.client.drop_database(settings.database)
    await svc.close()
    _remove_local_instances(settings.data_dir)  # never leave an sshd behind a test


@pytest.fixture
async def api(services):
    from app.main import create_app

    app = create_app(services.settings, services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://onebox.test") as client:
        yield client


@pytest.fixture
async def worker(services):
    """A worker running in the background of the test's event loop."""
    from app.worker.runner import Worker

    stop = asyncio.Event()
    task = asyncio.create_task(Worker(services).run(stop))
    yield
    stop.set()
    await task


@pytest.fixture
def mint(services):
    def mint(user: str = "alice", admin: bool = False) -> dict[str, str]:
        role = "admin" if admin else "user"
        return {"Authorization": f"Bearer {services.tokens.mint(user, role=role)}"}

    return mint
