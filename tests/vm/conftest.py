"""The vm tier: real Linux VMs under QEMU (the qemu provider), inside `make test`.

Every test here is marked ``vm``. The guest image is built once per recipe into the repository's
``.data/qemu/images`` (``make test`` builds it first with ``make qemu-image``; the fixture builds it
otherwise), and every test session gets a private network and SSH port range of its own, so that it
never meets the VMs of ``make run`` or of another session. Boots are slow under TCG (about a minute
on an idle machine, several when it is busy): tests share booted VMs through module fixtures and
wait for conditions with generous deadlines, never for fixed times.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from app.settings import REPO_ROOT
from providers.qemu.config import QemuConfig
from providers.qemu.image import BootFiles, base_image
from tests.support import free_port

IMAGE_DIR = REPO_ROOT / ".data" / "qemu" / "images"
FIGURES: dict[str, str] = {}  # measured by the tests of this tier, printed at the end of the run
TOOLS = ("qemu-system-x86_64", "qemu-img", "genisoimage")
VM_TIMEOUT = 1800  # pytest-timeout for a test of this tier, fixtures included (a busy machine boots slowly)


FLOW_MODULE = "test_qemu_flow.py"  # the end-to-end module: its first VM boots while the others run


def _is_flow(item) -> bool:
    return Path(item.fspath).name == FLOW_MODULE


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    mine = [i for i, item in enumerate(items) if here in Path(item.fspath).parents]
    for i in mine:
        items[i].add_marker(pytest.mark.vm)
        items[i].add_marker(pytest.mark.timeout(VM_TIMEOUT))
    # The end-to-end module goes last within the tier, so that its parent (started by
    # `flow_onebox` at the tier's first test) boots while the other modules run.
    ordered = sorted((items[i] for i in mine), key=_is_flow)
    for i, item in zip(mine, ordered):
        items[i] = item


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("vm tier: real VMs under QEMU")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


@pytest.fixture(scope="session")
def qemu_tools() -> None:
    """QEMU on this machine. The tier is part of `make test`, which installs it: a machine without it
    fails here, once, saying what to run (a skip would let `make test` pass without the tier)."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run `make qemu` (make test does)", pytrace=False)


@pytest.fixture(scope="session")
def qemu_image(qemu_tools) -> BootFiles:
    defaults = QemuConfig(root=IMAGE_DIR)
    return base_image(IMAGE_DIR, "debian-12", defaults.build_script, defaults.build_timeout)


def new_network() -> dict:
    """A private network (a multicast port) and an SSH port range of their own."""
    first = random.randrange(20000, 40000, 200)
    return {"private_mcast": f"230.0.77.1:{free_port()}", "ssh_port_first": first, "ssh_port_last": first + 199}


@pytest.fixture(scope="session")
def qemu_network() -> dict:
    """This session's own private network and SSH port range."""
    return new_network()


def qemu_config(root: Path, network: dict, **overrides) -> QemuConfig:
    values = dict(root=root, image_dir=IMAGE_DIR, accel="tcg", **network)
    values.update(overrides)
    return QemuConfig(**values)


@pytest.fixture(scope="session", autouse=True)
def flow_onebox(request, tmp_path_factory, ssh_keypair):
    """The end-to-end module's onebox and its parent VM, started at the tier's first test when that
    module is in the run (``tests/vm/flow_onebox.py``); None otherwise."""
    if not any(_is_flow(item) for item in request.session.items):
        yield None
        return
    from tests.vm.flow_onebox import launch, shut_down

    request.getfixturevalue("qemu_image")
    box = launch(request.getfixturevalue("dbserver"), tmp_path_factory.mktemp("qemu-flow"), IMAGE_DIR,
                 new_network(), ssh_keypair)  # not the other modules' network: their VMs run meanwhile
    try:
        yield box
    finally:
        shut_down(box)
