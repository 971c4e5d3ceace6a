"""The lifecycle of instances, snapshots and QA runs: one pure table each.

Every change of ``status`` in onebox goes through ``check_transition``; the
worker and the API never write a status the table does not allow. The tables
are data, not code paths, so tests can walk every allowed and forbidden pair.
"""

from __future__ import annotations

import enum


class _DocumentedStatus(str, enum.Enum):
    """A status whose every member carries its own docstring."""

    def __new__(cls, value: str, doc: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.__doc__ = doc
        return member

    def __str__(self) -> str:
        return self.value


class InstanceStatus(_DocumentedStatus):
    PENDING = "pending", "Stored and queued; no worker has touched the cloud yet."

    PROVISIONING = "provisioning", "A worker is creating the VM and waiting for it to run."

    CONFIGURING = "configuring", "The VM runs; Ansible is installing the SSH user, agent and bootstrap script."

    RUNNING = "running", "Ready for the user: reachable over SSH, reporting health."

    STOPPING = "stopping", ("A worker is stopping the VM (the user asked, or a policy rule fired). Its disks are "
                            "kept; a public IP the cloud does not reserve may be released.")

    STOPPED = "stopped", ("The VM is stopped: no compute is billed, its disks (and what is on them) are kept. "
                          "It can be started again or deleted; an instance left stopped longer than "
                          "``delete_after_stopped_days`` is deleted.")

    STARTING = "starting", ("A worker is starting the stopped VM and reading its (possibly new) public IP. "
                            "Configuration is not run again: the agent comes back by itself.")

    REBOOTING = "rebooting", ("A worker is rebooting the running VM and waiting for it to run again. SSH and "
                              "the agent are away for a moment; disks and addresses are kept.")

    FAILED = "failed", ("A step failed for good and everything it created was removed, or the VM vanished "
                        "from the cloud while running or stopped (code ``cloud_resource_missing``). ``error`` "
                        "says why.")

    DELETING = "deleting", "The user asked to delete it; a worker is removing it from the cloud."

    DELETED = "deleted", "Gone from the cloud. The record is kept for history; nothing can follow."


class SnapshotStatus(_DocumentedStatus):
    CREATING = "creating", "A worker is snapshotting the instance's root disk."

    AVAILABLE = "available", "Ready: new instances may start from it."

    FAILED = "failed", "The snapshot could not be made; whatever was started was removed."

    DELETING = "deleting", "The user asked to delete it; a worker is removing it from the cloud."

    DELETED = "deleted", "Gone from the cloud; the record is kept."


class QaRunStatus(_DocumentedStatus):
    PENDING = "pending", "Stored and queued; no worker has started the suite yet."

    RUNNING = "running", "A worker is installing the tools and running the suite's checks on the instances."

    PASSED = "passed", "Every check passed (or was skipped, with its reason); the run's files and processes are gone."

    FAILED = "failed", ("At least one check failed: a pass/fail check did not hold, or a measurement fell below "
                        "its baseline by more than its tolerance. Each result says which and by how much.")

    ERROR = "error", ("The suite could not be carried out (an instance unreachable, a tool that could not be "
                      "installed or crashed); ``error`` says why and at which step.")

    CANCELLED = "cancelled", "Its owner cancelled it; its processes were stopped and its files removed."


I = InstanceStatus
# A stop, start or reboot that fails for good leaves the VM as the cloud then reports it: running,
# stopped, or gone (failed). Hence the ways back from stopping, starting and rebooting.
INSTANCE_TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    I.PENDING: frozenset({I.PROVISIONING, I.FAILED}),
    I.PROVISIONING: frozenset({I.CONFIGURING, I.FAILED}),
    I.CONFIGURING: frozenset({I.RUNNING, I.FAILED}),
    I.RUNNING: frozenset({I.STOPPING, I.REBOOTING, I.DELETING, I.FAILED}),  # failed: the reaper found the VM gone
    I.STOPPING: frozenset({I.STOPPED, I.RUNNING, I.FAILED}),
    I.STOPPED: frozenset({I.STARTING, I.DELETING, I.FAILED}),  # failed: the reaper found the VM gone
    I.STARTING: frozenset({I.RUNNING, I.STOPPED, I.FAILED}),
    I.REBOOTING: frozenset({I.RUNNING, I.STOPPED, I.FAILED}),
    I.FAILED: frozenset({I.DELETING}),
    I.DELETING: frozenset({I.DELETED}),
    I.DELETED: frozenset(),
}

S = SnapshotStatus
SNAPSHOT_TRANSITIONS: dict[SnapshotStatus, frozenset[SnapshotStatus]] = {
    S.CREATING: frozenset({S.AVAILABLE, S.FAILED}),
    S.AVAILABLE: frozenset({S.DELETING}),
    S.FAILED: frozenset({S.DELETING}),
    S.DELETING: frozenset({S.DELETED}),
    S.DELETED: frozenset(),
}

Q = QaRunStatus
QA_RUN_TRANSITIONS: dict[QaRunStatus, frozenset[QaRunStatus]] = {
    Q.PENDING: frozenset({Q.RUNNING, Q.ERROR, Q.CANCELLED}),
    Q.RUNNING: frozenset({Q.PASSED, Q.FAILED, Q.ERROR, Q.CANCELLED}),
    Q.PASSED: frozenset(),
    Q.FAILED: frozenset(),
    Q.ERROR: frozenset(),
    Q.CANCELLED: frozenset(),
}
QA_RUN_FINAL_STATUSES = frozenset(s for s, targets in QA_RUN_TRANSITIONS.items() if not targets)

# Instances whose cloud resources may exist and cost money.
LIVE_INSTANCE_STATUSES = frozenset({I.PENDING, I.PROVISIONING, I.CONFIGURING, I.RUNNING, I.STOPPING, I.STOPPED,
                                    I.STARTING, I.REBOOTING, I.DELETING})
IN_PROGRESS_STATUSES = frozenset({I.PENDING, I.PROVISIONING, I.CONFIGURING})
# Where an instance rests until someone (a user, a policy) acts: no job holds it.
STEADY_INSTANCE_STATUSES = frozenset({I.RUNNING, I.STOPPED, I.FAILED, I.DELETED})
# Nothing can follow.
FINAL_INSTANCE_STATUSES = frozenset({I.DELETED})
# The VM is up (or on its way up or down) and its agent may report.
VM_UP_STATUSES = frozenset({I.CONFIGURING, I.RUNNING, I.STOPPING, I.STARTING, I.REBOOTING})
# What each user action needs, and the status it moves the instance to.
ACTIONS: dict[str, tuple[InstanceStatus, InstanceStatus]] = {
    "stop": (I.RUNNING, I.STOPPING),
    "start": (I.STOPPED, I.STARTING),
    "reboot": (I.RUNNING, I.REBOOTING),
}


class TransitionError(ValueError):
    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"cannot go from {current} to {target}")
        self.current, self.target = current, target


def can_transition(current: str, target: str, table=None) -> bool:
    table = INSTANCE_TRANSITIONS if table is None else table
    status_type = next(iter(table)).__class__
    return status_type(target) in table[status_type(current)]


def check_transition(current: str, target: str, table=None) -> None:
    if not can_transition(current, target, table):
        raise TransitionError(current, target)


def recorded(current: str | None, target: str, at) -> dict:
    """One entry of a record's ``transitions``: the history every change of status appends to.

    Written in the same single-document update as the status it records (guarded by the old
    status, so a retried write cannot append it twice). Costs are derived from it
    (``app.costs``), never from a counter a crash could skip."""
    return {"from": None if current is None else str(current), "to": str(target), "at": at}


def sources_of(target: str, table=None) -> list[str]:
    """The statuses from which ``target`` may be reached (for guarded updates)."""
    table = INSTANCE_TRANSITIONS if table is None else table
    return [str(s) for s, targets in table.items() if target in targets]
