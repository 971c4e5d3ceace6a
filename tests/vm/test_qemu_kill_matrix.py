"""The kill matrix (``tests/e2e/test_kill_matrix.py``) on the qemu provider: a worker process
SIGKILLed at every step of create, snapshot and delete (and whatever steps the matrix grows), then a
second worker and the reaper; nothing of ours left unaccounted for, nothing twice.

Configuration is skipped there (as for every provider in the matrix), so no guest needs to finish
booting: "running" is QEMU's run state. The VMs made here use the smallest machine type.
"""

from __future__ import annotations

from providers.qemu import QemuConfig, QemuProvider
from tests.e2e.cloud_support import Cloud, running_onebox
from tests.e2e.test_kill_matrix import Drill, matrix_settings, run_matrix
from tests.vm.conftest import IMAGE_DIR


async def test_kill_matrix_qemu(dbserver, tmp_path, ssh_keypair, qemu_image, qemu_network):
    name_only = Cloud("qemu", "local", "small", "debian-12", make_provider=lambda: None, alive=lambda: [],
                      worker_env={})
    settings = matrix_settings(name_only, dbserver, tmp_path).model_copy(update={
        "qemu_image_dir": IMAGE_DIR, "qemu_accel": "tcg", "qemu_shutdown_grace_seconds": 2.0,
        "qemu_private_mcast": qemu_network["private_mcast"], "qemu_ssh_port_first": qemu_network["ssh_port_first"],
        "qemu_ssh_port_last": qemu_network["ssh_port_last"]})
    provider = QemuProvider(QemuConfig(root=settings.data_dir / "qemu", image_dir=IMAGE_DIR))

    def alive() -> list[str]:  # every VM process and disk of ours on this host
        return [r.cloud_id for r in provider.list_managed()]

    cloud = Cloud("qemu", "local", "small", "debian-12", make_provider=lambda: None, alive=alive, worker_env={
        "ONEBOX_QEMU_IMAGE_DIR": str(IMAGE_DIR), "ONEBOX_QEMU_ACCEL": "tcg",
        "ONEBOX_QEMU_SHUTDOWN_GRACE_SECONDS": "2", "ONEBOX_QEMU_PRIVATE_MCAST": qemu_network["private_mcast"],
        "ONEBOX_QEMU_SSH_PORT_FIRST": str(qemu_network["ssh_port_first"]),
        "ONEBOX_QEMU_SSH_PORT_LAST": str(qemu_network["ssh_port_last"])})
    try:
        async with running_onebox(settings, worker=False) as (api, svc):
            await run_matrix(Drill(cloud, settings, api, svc, tmp_path, ssh_keypair.public))
    finally:
        from providers.base import InstanceRef

        for resource in provider.list_managed():
            if resource.kind == "instance":
                provider.delete_instance(InstanceRef(resource.instance_id, resource.region))
