"""The state tables: every allowed and every forbidden transition."""

from __future__ import annotations

import itertools

import pytest

from app.lifecycle.states import (
    ACTIONS,
    FINAL_INSTANCE_STATUSES,
    INSTANCE_TRANSITIONS,
    QA_RUN_FINAL_STATUSES,
    QA_RUN_TRANSITIONS,
    QaRunStatus as Q,
    SNAPSHOT_TRANSITIONS,
    STEADY_INSTANCE_STATUSES,
    InstanceStatus as I,
    SnapshotStatus as S,
    TransitionError,
    can_transition,
    check_transition,
    sources_of,
)

ALLOWED_INSTANCE = {
    (I.PENDING, I.PROVISIONING), (I.PROVISIONING, I.CONFIGURING), (I.CONFIGURING, I.RUNNING),
    (I.PENDING, I.FAILED), (I.PROVISIONING, I.FAILED), (I.CONFIGURING, I.FAILED),
    (I.RUNNING, I.DELETING), (I.FAILED, I.DELETING), (I.DELETING, I.DELETED),
    (I.RUNNING, I.FAILED),  # the reaper found the VM gone
    # day 2: stop, start, reboot; each can end where the cloud left the VM when it fails for good
    (I.RUNNING, I.STOPPING), (I.STOPPING, I.STOPPED), (I.STOPPING, I.RUNNING), (I.STOPPING, I.FAILED),
    (I.STOPPED, I.STARTING), (I.STARTING, I.RUNNING), (I.STARTING, I.STOPPED), (I.STARTING, I.FAILED),
    (I.RUNNING, I.REBOOTING), (I.REBOOTING, I.RUNNING), (I.REBOOTING, I.STOPPED), (I.REBOOTING, I.FAILED),
    (I.STOPPED, I.DELETING),  # DELETE works from stopped
    (I.STOPPED, I.FAILED),  # the reaper found the stopped VM gone
}
ALLOWED_SNAPSHOT = {
    (S.CREATING, S.AVAILABLE), (S.CREATING, S.FAILED), (S.AVAILABLE, S.DELETING), (S.FAILED, S.DELETING),
    (S.DELETING, S.DELETED),
}

ALLOWED_QA_RUN = {
    (Q.PENDING, Q.RUNNING), (Q.PENDING, Q.ERROR), (Q.PENDING, Q.CANCELLED),
    (Q.RUNNING, Q.PASSED), (Q.RUNNING, Q.FAILED), (Q.RUNNING, Q.ERROR), (Q.RUNNING, Q.CANCELLED),
}


@pytest.mark.parametrize("current,target", sorted(itertools.product(I, I)))
def test_instance_transition(current, target):
    allowed = (current, target) in ALLOWED_INSTANCE
    assert can_transition(current, target) is allowed
    if allowed:
        check_transition(current, target)
    else:
        with pytest.raises(TransitionError):
            check_transition(current, target)


@pytest.mark.parametrize("current,target", sorted(itertools.product(S, S)))
def test_snapshot_transition(current, target):
    allowed = (current, target) in ALLOWED_SNAPSHOT
    assert can_transition(current, target, SNAPSHOT_TRANSITIONS) is allowed


@pytest.mark.parametrize("current,target", sorted(itertools.product(Q, Q)))
def test_qa_run_transition(current, target):
    allowed = (current, target) in ALLOWED_QA_RUN
    assert can_transition(current, target, QA_RUN_TRANSITIONS) is allowed


def test_qa_run_final_statuses():
    assert QA_RUN_FINAL_STATUSES == {Q.PASSED, Q.FAILED, Q.ERROR, Q.CANCELLED}


def test_every_state_is_in_the_table_and_documented():
    assert set(INSTANCE_TRANSITIONS) == set(I)
    assert set(SNAPSHOT_TRANSITIONS) == set(S)
    assert set(QA_RUN_TRANSITIONS) == set(Q)
    for status in [*I, *S, *Q]:
        assert status.__doc__ and status.__doc__ != type(status).__doc__


def test_deleted_is_final_and_sources():
    assert not INSTANCE_TRANSITIONS[I.DELETED]
    assert sorted(sources_of(I.DELETING)) == ["failed", "running", "stopped"]


def test_actions_name_their_source_and_the_status_they_move_to():
    for action, (needed, moving) in ACTIONS.items():
        assert can_transition(needed, moving), action
        assert moving not in STEADY_INSTANCE_STATUSES and needed in STEADY_INSTANCE_STATUSES
    assert FINAL_INSTANCE_STATUSES == {I.DELETED}
    # every status a job moves an instance through leads back to a steady one
    for status in set(I) - STEADY_INSTANCE_STATUSES:
        assert INSTANCE_TRANSITIONS[status], status
