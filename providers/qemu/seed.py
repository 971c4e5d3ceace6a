"""The NoCloud seed: how a qemu VM's real cloud-init gets the same user data as a cloud VM.

cloud-init's NoCloud data source reads ``user-data``, ``meta-data`` and
``network-config`` from any file system labelled ``cidata``; the provider
attaches one as a small read-only ISO (``seed.iso``). ``user-data`` is
``providers.cloudinit.cloud_config`` verbatim, the document EC2 gets as its
user data.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from providers.qemu.errors import ToolMissing
from providers.qemu.image import run

SEED_LABEL = "cidata"


def iso_tool() -> str:
    for name in ("genisoimage", "mkisofs", "xorrisofs"):
        found = shutil.which(name)
        if found:
            return found
    raise ToolMissing("genisoimage is not installed on the onebox host; `make qemu` installs it")


def write_seed(dest: Path, user_data: str, meta_data: str, network_config: str, timeout: float = 60.0) -> None:
    """Write the seed ISO to ``dest`` (atomically: a half-written one is never attached)."""
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".seed-") as tmp:
        files = Path(tmp) / "files"
        files.mkdir()
        for name, text in (("user-data", user_data), ("meta-data", meta_data), ("network-config", network_config)):
            (files / name).write_text(text)
        partial = Path(tmp) / "seed.iso"
        run([iso_tool(), "-quiet", "-output", str(partial), "-volid", SEED_LABEL, "-joliet", "-rock",
             str(files / "user-data"), str(files / "meta-data"), str(files / "network-config")],
            "write the cloud-init seed", timeout)
        partial.replace(dest)
