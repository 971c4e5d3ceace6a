"""The shared cloud-config document (pure): what every provider's first boot is given.

That a real cloud-init boots it is checked in ``tests/vm`` (a qemu VM); that EC2 is given exactly
this document, in ``tests/providers/test_aws.py``.
"""

from __future__ import annotations

import json

from providers.base import InstanceSpec
from providers.cloudinit import cloud_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVh9k3YgCz0m3b0nB2H0q8q3oH9u3Xl0VvS1r7Jm1xY alice@laptop"
ADMIN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOneboxAdminKeyForConfigurationOnly000000000 onebox-configure"


def spec(**overrides) -> InstanceSpec:
    values = dict(instance_id="i-1", owner="alice", name="box", region="r", zone=None, machine_type="m",
                  ssh_user="carol", ssh_public_key=KEY, disk_gb=20)
    values.update(overrides)
    return InstanceSpec(**values)


def parse(text: str) -> dict:
    header, body = text.split("\n", 1)
    assert header == "#cloud-config"
    return json.loads(body)


def test_the_user_gets_both_keys_sudo_and_no_password():
    (user,) = parse(cloud_config(spec(admin_ssh_public_key=ADMIN)))["users"]
    assert user == {"name": "carol", "ssh_authorized_keys": [KEY, ADMIN], "sudo": "ALL=(ALL) NOPASSWD:ALL",
                    "shell": "/bin/bash", "lock_passwd": True}
    assert parse(cloud_config(spec()))["ssh_pwauth"] is False


def test_without_configuration_only_the_users_key():
    assert parse(cloud_config(spec()))["users"][0]["ssh_authorized_keys"] == [KEY]
    same = parse(cloud_config(spec(admin_ssh_public_key=" " + KEY + "\n")))["users"][0]["ssh_authorized_keys"]
    assert same == [KEY], "one key is never authorized twice"


def test_every_value_is_quoted():
    key = 'ssh-ed25519 AAAA key: with "quotes" #and-hash'
    assert parse(cloud_config(spec(ssh_public_key=key)))["users"][0]["ssh_authorized_keys"] == [key]
