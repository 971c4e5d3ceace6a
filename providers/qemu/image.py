"""Guest images and disks: the base image built on first use, overlays, flattened snapshots.

A base image (``<image_dir>/<alias>-<recipe>/``: ``disk.qcow2``, ``vmlinuz``,
``initrd.img``, ``image.json``) is built once by ``tools/qemu-image/build.sh``
and never changed afterwards: every instance started from it is a qcow2
overlay backed by its ``disk.qcow2``. ``<recipe>`` is a digest of the build
scripts, so a changed recipe builds a new image next to the old one, which the
instances made from it keep using. Builds take a lock (``<image_dir>/.lock``),
so concurrent creates wait for one build instead of racing; ``make qemu-image``
is ``python -m providers.qemu debian-12``, the same code.

A snapshot is a flattened, standalone copy of an instance's disk, next to the
kernel and initrd it boots with; an instance made from it gets its own copy, so
deleting the snapshot never breaks an instance, as on the clouds.
"""

from __future__ import annotations

import contextlib
import argparse
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from providers.base import InvalidRequest, ProviderError
from providers.qemu.errors import ToolMissing, command_failed, os_failed, tail

log = logging.getLogger("onebox.qemu")

DISK = "disk.qcow2"
KERNEL = "vmlinuz"
INITRD = "initrd.img"
IMAGE_META = "image.json"
GIB = 1024 ** 3


@dataclass(frozen=True)
class BootFiles:
    """A disk and the kernel and initrd that boot it (a base image, a snapshot or an instance's copy)."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / DISK

    @property
    def kernel(self) -> Path:
        return self.directory / KERNEL

    @property
    def initrd(self) -> Path:
        return self.directory / INITRD

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.disk, self.kernel, self.initrd, self.directory / IMAGE_META))


def tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise ToolMissing(f"{name} is not installed on the onebox host; `make qemu` installs it")
    return found


def run(argv: list[str], action: str, timeout: float) -> subprocess.CompletedProcess:
    """Run a command; its failure as a provider error that quotes its output."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=True,
                              stdin=subprocess.DEVNULL)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise command_failed(action, exc) from exc
    except OSError as exc:
        raise os_failed(action, exc) from exc


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock(2) on ``path`` (compatible with flock(1), which ``make`` uses)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def recipe(build_script: Path) -> str:
    """A digest of the image recipe: every file next to the build script."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(build_script).parent.iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def base_image(image_dir: Path, alias: str, build_script: Path, timeout: float) -> BootFiles:
    """The base image of ``alias``, built first if it is missing (minutes; once per machine and recipe)."""
    files = BootFiles(image_dir / f"{alias}-{recipe(build_script)}")
    if files.complete():
        return files
    with file_lock(image_dir / ".lock"):
        if files.complete():  # another process built it while we waited
            return files
        log.warning("qemu: building the %s guest image in %s (once; a few minutes)", alias, files.directory)
        for name in ("mmdebstrap", "mkfs.ext4", "qemu-img"):
            tool(name)
        try:
            subprocess.run([str(build_script), alias, str(files.directory)], capture_output=True, text=True,
                           timeout=timeout, check=True, stdin=subprocess.DEVNULL)
        except subprocess.CalledProcessError as exc:
            # Most likely Debian's mirror was unreachable: worth another try later.
            raise ProviderError(f"could not build the {alias} guest image: {tail(exc.stderr or exc.stdout)}",
                                retryable=True, code="image_build_failed") from exc
        except subprocess.TimeoutExpired as exc:
            raise ProviderError(f"building the {alias} guest image took longer than {timeout:.0f}s",
                                retryable=True, code="image_build_failed") from exc
    if not files.complete():
        raise ProviderError(f"the {alias} guest image build left no complete image in {files.directory}")
    return files


def image_info(path: Path, timeout: float = 60.0) -> dict:
    """``qemu-img info`` of one file (-U: the file may be open in a running VM)."""
    out = run([tool("qemu-img"), "info", "-U", "--output=json", str(path)], f"read {path.name}", timeout)
    return json.loads(out.stdout)


def backing_file(path: Path) -> Path | None:
    info = image_info(path)
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if not backing:
        return None
    backing = Path(backing)
    return backing if backing.is_absolute() else (path.parent / backing)


def create_overlay(base: Path, overlay: Path, size_gb: int, timeout: float) -> None:
    """A qcow2 file on top of ``base`` (never written to), of ``size_gb`` virtual gigabytes."""
    base_size = int(image_info(base)["virtual-size"])
    if size_gb * GIB < base_size:
        raise InvalidRequest(f"disk_gb {size_gb} is smaller than the image's disk ({base_size / GIB:.1f} GB)")
    run([tool("qemu-img"), "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(overlay),
         str(size_gb * GIB)], "create the instance's disk", timeout)


def copy_disk(source: Path, dest: Path, size_gb: int, timeout: float) -> None:
    """A standalone copy of a flattened disk, grown to ``size_gb`` (an instance from a snapshot)."""
    size = int(image_info(source)["virtual-size"])
    if size_gb * GIB < size:
        raise InvalidRequest(f"disk_gb {size_gb} is smaller than the snapshot's disk ({size / GIB:.1f} GB)")
    partial = dest.with_name(dest.name + ".partial")
    run(["cp", "--reflink=auto", "--sparse=always", str(source), str(partial)], "copy the snapshot's disk",
        timeout)
    if size_gb * GIB > size:
        run([tool("qemu-img"), "resize", "-q", "-f", "qcow2", str(partial), str(size_gb * GIB)],
            "grow the instance's disk", timeout)
    os.replace(partial, dest)


def flatten(source: Path, dest: Path, timeout: float) -> None:
    """``source`` and everything under it in its backing chain, as one standalone qcow2 file."""
    partial = dest.with_name(dest.name + ".partial")
    run([tool("qemu-img"), "convert", "-U", "-O", "qcow2", str(source), str(partial)],
        "copy the disk into the snapshot", timeout)
    os.replace(partial, dest)


def link_or_copy(source: Path, dest: Path) -> None:
    """A kernel or initrd next to a disk: a hard link where possible (they are never written)."""
    partial = dest.with_name(dest.name + ".partial")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, dest)


def main(argv: list[str] | None = None) -> None:
    """``make qemu-image``: build (or find) the base image of an alias; prints its directory."""
    from providers.qemu.config import QemuConfig

    parser = argparse.ArgumentParser(prog="python -m providers.qemu", description=main.__doc__)
    parser.add_argument("alias", nargs="?", default="debian-12")
    parser.add_argument("--image-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    defaults = QemuConfig(root=args.image_dir)
    print(base_image(args.image_dir.resolve(), args.alias, defaults.build_script, defaults.build_timeout).directory)
