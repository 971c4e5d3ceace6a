"""Choosing QEMU's accelerator: KVM when it really runs a guest, otherwise TCG.

``/dev/kvm`` existing proves little, and neither does a trivial guest: inside
some VMs it is a paravirtual KVM that runs a real-mode boot sector fine, then
hangs or fails with an internal error on a real guest kernel (measured on the
machine onebox is developed on). So the probe is a trial boot of the guest
image's own kernel with no root file system: a kernel that runs panics with
"VFS: Unable to mount root fs" within a second or two under KVM, reboots at
once (``panic=-1``), and QEMU exits (``-no-reboot``). KVM counts as working
only when that panic is on the serial console within the timeout.

The answer is kept in ``accel.json`` under the provider's root for the rest
of the host's boot (keyed by ``/proc/sys/kernel/random/boot_id``, the QEMU
binary and the kernel's digest), so onebox's processes probe once, not on every start.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

PANIC_MARK = "Unable to mount root fs"
PROBE_TIMEOUT = 20.0  # a working KVM boots to the panic in about 1 s


@dataclass(frozen=True)
class Probe:
    works: bool
    reason: str  # why not, in the trial's or QEMU's words; empty when it works


def probe(qemu: str, kernel: Path, accel: str = "kvm", timeout: float = PROBE_TIMEOUT,
          device: str = "/dev/kvm") -> Probe:
    """Whether QEMU runs ``kernel`` with ``accel`` ("kvm"; "tcg" checks the probe itself, slowly)."""
    if accel == "kvm" and not os.access(device, os.R_OK | os.W_OK):
        return Probe(False, f"{device} is missing or not accessible")
    with tempfile.TemporaryDirectory(prefix="onebox-accel-probe-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-machine", "q35",
                "-accel", accel, "-cpu", "host" if accel == "kvm" else "qemu64", "-m", "256",
                "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1 quiet",
                "-serial", f"file:{console}", "-no-reboot"]
        said = ""
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                    stdin=subprocess.DEVNULL)
            said = " ".join(result.stderr.split())[:300]
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
            said = " ".join(stderr.split())[:300]
            output = console.read_text(errors="replace") if console.exists() else ""
            detail = said or ("no console output at all" if not output.strip() else "the kernel stopped mid-boot")
            return Probe(False, f"a trial boot of the guest kernel did not finish within {timeout:.0f}s ({detail})")
        except OSError as exc:
            return Probe(False, f"{qemu} could not run: {exc.strerror or exc}")
        output = console.read_text(errors="replace") if console.exists() else ""
    if PANIC_MARK in output:
        return Probe(True, "")
    return Probe(False, f"a trial boot of the guest kernel failed: {said or 'exit status %d' % result.returncode}")


def _boot_id() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return ""


def probe_key(qemu: str, kernel: Path) -> dict:
    """What a cached answer depends on: this boot of the host, the QEMU binary, the guest kernel."""
    return {"boot_id": _boot_id(), "qemu": qemu, "qemu_mtime": os.stat(qemu).st_mtime if os.path.exists(qemu) else 0,
            "kernel_sha256": hashlib.sha256(kernel.read_bytes()).hexdigest()}


def cached_probe(cache: Path, qemu: str, kernel: Path, **kwargs) -> Probe:
    """``probe`` for KVM, remembered in ``cache`` until the host reboots or QEMU or the kernel change."""
    key = probe_key(qemu, kernel)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        saved = json.loads(cache.read_text())
        if saved["key"] == key:
            return Probe(bool(saved["works"]), str(saved["reason"]))
    found = probe(qemu, kernel, "kvm", **kwargs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_name(cache.name + f".{os.getpid()}.partial")
    partial.write_text(json.dumps({"key": key, "works": found.works, "reason": found.reason}))
    os.replace(partial, cache)
    return found
