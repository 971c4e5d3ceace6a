"""The local provider of onebox: one onebox instance is one sshd on a loopback address of this machine.

``LocalProvider(LocalConfig(root=...))`` implements ``providers.base.Provider``
with processes and directories: no cloud account, nothing to install but
openssh-server. It is onebox's embedded default and the stand-in every test of
the layers above the providers runs on (``tests/providers/test_local.py``).

* ``config``    – ``LocalConfig``: where instances live, which addresses and port they take;
* ``provider``  – ``LocalProvider`` itself: instances (stop/start/reboot included), snapshots, listing;
* ``mapping``   – pure vocabulary: region, machine type, images, the instance marker, processes → state;
* ``errors``    – the local failures as typed provider errors;
* ``processes`` – finding and ending an instance's processes in /proc.
"""

from providers.local.config import LocalConfig
from providers.local.provider import LocalProvider

__all__ = ["LocalConfig", "LocalProvider"]
