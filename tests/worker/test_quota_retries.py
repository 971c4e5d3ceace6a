"""Quota slots and retried requests: a create retried after a lost answer takes its instance's slots once."""

from __future__ import annotations

import pytest

from app import quotas
from app.problems import Problem


async def test_acquiring_again_for_the_same_holder_takes_nothing_more(services):
    settings = services.settings.model_copy(update={"quota_max_instances": 2, "quota_max_vcpus": 8})
    needs = {"max_instances": 1, "max_vcpus": 4}
    await quotas.acquire(services.db, settings, "alice", "i-first", needs)
    await quotas.acquire(services.db, settings, "alice", "i-first", needs)  # the retry of the same create
    assert await quotas.usage(services.db, "alice") == {"max_instances": 1, "max_vcpus": 4, "max_snapshots": 0}
    await quotas.acquire(services.db, settings, "alice", "i-second", needs)  # room for exactly one more
    with pytest.raises(Problem) as refused:
        await quotas.acquire(services.db, settings, "alice", "i-third", needs)
    assert refused.value.status == 403
    assert await quotas.usage(services.db, "alice") == {"max_instances": 2, "max_vcpus": 8, "max_snapshots": 0}
