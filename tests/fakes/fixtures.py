"""Fixtures for the local cloud fakes (ARM, GCE), shared by the fakes' own tests, the providers' and the API's."""

from __future__ import annotations

import pytest

from tests.fakes.arm import ArmFake


@pytest.fixture(scope="session")
def arm():
    """One ARM fake (https, its own CA) for the whole session."""
    fake = ArmFake().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(arm):
    """The ARM fake, emptied before and after the test."""
    arm.reset()
    yield arm
    arm.reset()


GCE_PROJECT = "onebox-test"


@pytest.fixture(scope="session")
def gce_server():
    """One Compute Engine fake (project onebox-test) for the whole session."""
    from tests.fakes.gce import GceFake, GceFakeServer

    server = GceFakeServer(GceFake(GCE_PROJECT)).start()
    yield server
    server.stop()


@pytest.fixture
def gce(gce_server):
    """The GCE fake, emptied before the test and without faults after it."""
    gce_server.fake.reset()
    yield gce_server.fake
    gce_server.fake.clear_faults()
