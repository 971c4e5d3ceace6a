"""Which database errors mean "try again" (503, jobs wait) and which are real errors."""

from __future__ import annotations

import pytest
from pymongo.errors import (AutoReconnect, DuplicateKeyError, ExecutionTimeout, NetworkTimeout, OperationFailure,
                            ServerSelectionTimeoutError, WriteError)

from app.db import is_database_down


@pytest.mark.parametrize("exc", [
    ServerSelectionTimeoutError("no server"), AutoReconnect("reset"), NetworkTimeout("slow"),
    ExecutionTimeout("maxTimeMS", code=50), OperationFailure("interrupted", code=1),
    OperationFailure("shutting down", code=91), OperationFailure("stepped down", code=189),
])
def test_unavailable(exc):
    assert is_database_down(exc)


@pytest.mark.parametrize("exc", [
    DuplicateKeyError("dup", code=11000), OperationFailure("bad query", code=2), WriteError("invalid", code=121),
    ValueError("not a database error"),
])
def test_real_errors(exc):
    assert not is_database_down(exc)
