"""Settings of the local provider: where its instances live, which addresses and port they take.

``LocalConfig`` is plain data that ``app/cloud.py`` builds from onebox's settings.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LocalConfig:
    root: Path  # where instances and snapshots live
    ssh_port: int = 2222
    address_first: int = 10  # instances get 127.0.0.<first>..127.0.0.<last>
    address_last: int = 250
    create_delay: float = 0.0  # pretend the cloud takes this long after starting sshd
    os_user: str = field(default_factory=getpass.getuser)
    sshd: str | None = None  # path; found on PATH when None
    sftp_server: str | None = None
