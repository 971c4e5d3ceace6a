"""onebox's own SSH key: how configuration management logs in to new instances.

Generated once under ``data_dir/ssh`` (mode 0600); providers authorize its
public half next to the user's key. Its private half never leaves this host.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

_lock = threading.Lock()


def deploy_key(data_dir: Path) -> tuple[Path, str]:
    """(path of the private key, public key line), generating the pair on first use."""
    key_dir = Path(data_dir) / "ssh"
    private = key_dir / "onebox_ed25519"
    with _lock:
        if not private.exists():
            key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = key_dir / ".onebox_ed25519.partial"
            for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
                stale.unlink(missing_ok=True)
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "onebox-configure", "-f", str(tmp)],
                           check=True, capture_output=True)
            tmp.with_name(tmp.name + ".pub").rename(private.with_name(private.name + ".pub"))
            tmp.rename(private)
    return private, private.with_name(private.name + ".pub").read_text().strip()
