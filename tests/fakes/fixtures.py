"""Fixtures for the local ARM fake, shared by the fake's own tests, the Azure provider's and the API's."""

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
