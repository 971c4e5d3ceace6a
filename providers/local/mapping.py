"""The local provider's vocabulary: names, the on-disk layout, and how its processes map to states.

Pure data and functions, no process or file-system calls. A local "cloud" has
one region, one zone, one machine type and one image; an instance's state is
read from its processes (``state_of``), the way a cloud's status map reads the
cloud's own word for it.
"""

from __future__ import annotations

from providers.base import IMAGE_ALIASES, InstanceState

# Every process of an instance carries MARKER_ENV=<instance id> in its environment: how a
# restarted onebox finds an instance's processes again, and how stop and delete find all of them.
MARKER_ENV = "ONEBOX_LOCAL_INSTANCE"
LOCAL_REGION = "local"
LOCAL_MACHINE_TYPE = "local"
LOCAL_IMAGE = "local"
IMAGES = (LOCAL_IMAGE, *IMAGE_ALIASES)  # aliases are accepted: the instance is this machine either way

# Programs started at boot live on the instance's own disk, as systemd units do on a VM's root
# disk: every executable file here runs when the instance starts (the agent role puts one here).
BOOT_DIR = ("etc", "onebox", "boot.d")  # under disk/


def state_of(sshd_running: bool) -> InstanceState:
    """An existing local instance is running while its sshd runs, and stopped otherwise.

    There is no "pending": create and start return with sshd already started.
    """
    return InstanceState.RUNNING if sshd_running else InstanceState.STOPPED


def check_id(kind: str, ident: str) -> str:
    """``ident`` if it is safe as one path component, else ValueError."""
    if not ident or "/" in ident or ident.startswith(".") or "\0" in ident:
        raise ValueError(f"bad {kind} id {ident!r}")
    return ident
