"""The qemu provider of onebox: one onebox instance is one real Linux VM on this machine.

``QemuProvider(QemuConfig(...))`` implements ``providers.base.Provider`` with
QEMU (KVM when it really works here, else TCG software emulation). Guests boot
a Debian image built from Debian's packages on first use, and do their first
boot through their own cloud-init with the same cloud-config as the clouds.

* ``config``   – ``QemuConfig``, the provider's settings (``ONEBOX_QEMU_*``);
* ``provider`` – ``QemuProvider`` itself: instances, snapshots, catalog, listing;
* ``mapping``  – pure vocabulary: machine types, image aliases, run states, addresses, QEMU's command line;
* ``errors``   – failed commands and QEMU's monitor mapped to the typed provider errors;
* ``image``    – base images (built by ``tools/qemu-image/build.sh``), overlays, flattened snapshots;
* ``seed``     – the NoCloud seed ISO carrying ``providers.cloudinit``'s user data;
* ``qmp``      – a small client for QEMU's monitor socket;
* ``accel``    – the KVM probe (a trial boot of the guest kernel).
"""

from providers.qemu.config import QemuConfig
from providers.qemu.provider import QemuProvider

__all__ = ["QemuConfig", "QemuProvider"]
