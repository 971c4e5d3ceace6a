"""The one cloud-config document onebox boots its VMs with, whatever runs them.

Clouds that read user data (EC2 today) and the qemu provider (through a
NoCloud seed ISO read by the guest image's real cloud-init) get exactly the
document ``cloud_config`` returns, so the first boot a cloud runs is the one
proven on a real Linux in onebox's own tests (``tests/vm``).

The document makes the one login user: the user's key, onebox's own key
(configuration management logs in as that user with it), passwordless sudo,
bash, no password. Everything else a VM needs is done later by the
configuration playbook, the same way on every provider. Per-image tuning
(which data sources to probe, which host key types to generate) belongs to
the image, not here: this document must mean the same on every cloud.
"""

from __future__ import annotations

import json

from providers.base import InstanceSpec

CLOUD_CONFIG_HEADER = "#cloud-config\n"


def authorized_keys(spec: InstanceSpec) -> list[str]:
    """The user's key, then onebox's own key when configuration is on (each once)."""
    keys = [spec.ssh_public_key.strip()]
    if spec.admin_ssh_public_key and spec.admin_ssh_public_key.strip() not in keys:
        keys.append(spec.admin_ssh_public_key.strip())
    return keys


def cloud_config(spec: InstanceSpec) -> str:
    """cloud-init user data making the login user of ``spec`` with its keys and sudo.

    JSON is valid YAML, so ``json.dumps`` quotes every value safely (a key's
    comment may hold ``:``, ``#`` or quotes).
    """
    doc = {
        "users": [{
            "name": spec.ssh_user,
            "ssh_authorized_keys": authorized_keys(spec),
            "sudo": "ALL=(ALL) NOPASSWD:ALL",
            "shell": "/bin/bash",
            "lock_passwd": True,
        }],
        "ssh_pwauth": False,
    }
    return CLOUD_CONFIG_HEADER + json.dumps(doc, indent=2) + "\n"
