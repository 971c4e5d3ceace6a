#!/usr/bin/env python3
"""onebox QA probe: the facts and timings no packaged tool prints as JSON.

Copied into the QA run's directory by the qa_tools role and run there over SSH
by onebox (app/qa/jobs.py); it prints one JSON document on stdout that onebox
parses (app/qa/parsers.py). Standard library only, Python 3.8+.

  facts                                 vCPUs, OS, the tools' versions, what iperf3 supports
  latency --host H --port P --count N   time N TCP connections (the handshake is one round trip)
  smoke --mounts JSON                   Python, sudo, the bootstrap marker, the bucket mounts

On a onebox local instance (ONEBOX_DISK set) system paths live under the
instance's own disk, as the configure playbook lays them out.
"""

import argparse
import hashlib
import json
import os
import socket
import subprocess
import sys
import time


def latency(args):
    samples, errors, last_error = [], 0, None
    for _ in range(args.count):
        started = time.perf_counter()
        try:
            with socket.create_connection((args.host, args.port), timeout=args.timeout):
                samples.append((time.perf_counter() - started) * 1000.0)
        except OSError as exc:
            errors += 1
            last_error = str(exc)
        time.sleep(args.pause)
    return {"target": "%s:%d" % (args.host, args.port), "samples_ms": samples, "errors": errors,
            "last_error": last_error}


def _sudo():
    if not any(os.access(os.path.join(d, "sudo"), os.X_OK) for d in os.environ.get("PATH", "").split(os.pathsep)):
        return {"available": False, "ok": False, "message": "sudo is not installed"}
    try:
        done = subprocess.run(["sudo", "-n", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=20)
    except subprocess.TimeoutExpired:
        return {"available": True, "ok": False, "message": "sudo -n true did not answer"}
    message = done.stderr.decode(errors="replace").strip()[-300:]
    return {"available": True, "ok": done.returncode == 0, "message": message}


def _read_marker(path):
    try:
        with open(path) as f:
            return {"exit_code": int(f.read().strip()), "readable": True}
    except FileNotFoundError:
        return {"exit_code": None, "readable": True}
    except PermissionError:
        pass  # root's directory on a VM: ask sudo
    except ValueError:
        return {"exit_code": None, "readable": False}
    try:
        done = subprocess.run(["sudo", "-n", "cat", path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, timeout=20)
        if done.returncode == 0:
            return {"exit_code": int(done.stdout.decode().strip()), "readable": True}
        exists = subprocess.run(["sudo", "-n", "test", "-e", path], timeout=20).returncode == 0
        return {"exit_code": None, "readable": not exists}
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return {"exit_code": None, "readable": False}


def smoke(args):
    root = os.environ.get("ONEBOX_DISK", "")
    home = os.path.expanduser("~")
    mounts = []
    for mountpoint in json.loads(args.mounts):
        path = os.path.join(home, mountpoint[2:]) if mountpoint.startswith("~/") else root + mountpoint
        if root:
            # A local instance cannot mount: the goofys role ran goofys once and left a marker.
            marker = os.path.join(root, "var/lib/onebox/goofys", hashlib.sha1(path.encode()).hexdigest() + ".mounted")
            mounts.append({"mountpoint": mountpoint, "path": path, "mounted": os.path.exists(marker), "how": "marker"})
        else:
            mounts.append({"mountpoint": mountpoint, "path": path, "mounted": os.path.ismount(path),
                           "how": "mountpoint"})
    return {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "python_ok": sys.version_info >= (3, 8),
        "local": bool(root),
        "sudo": _sudo(),
        "bootstrap": _read_marker(root + "/var/lib/onebox/bootstrap/exit_code"),
        "mounts": mounts,
    }


TOOLS = {"iperf3": ["iperf3", "--version"], "fio": ["fio", "--version"], "sysbench": ["sysbench", "--version"],
         "nvidia-smi": ["nvidia-smi", "--version"]}


def _first_line(argv):
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [line.strip() for line in done.stdout.decode(errors="replace").splitlines() if line.strip()]
    return lines[0][:200] if done.returncode == 0 and lines else None


def facts(args):
    pretty = None
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    pretty = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    iperf3_help = ""
    try:
        iperf3_help = subprocess.run(["iperf3", "--help"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, timeout=20).stdout.decode(errors="replace")
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"nproc": os.cpu_count() or 1, "os": pretty, "kernel": os.uname().release,
            "tools": {name: _first_line(argv) for name, argv in TOOLS.items()},
            # built with OpenSSL: a server can admit only the run's own client (RSA-encrypted credentials)
            "iperf3_auth": "--authorized-users-path" in iperf3_help}


def main():
    parser = argparse.ArgumentParser(prog="onebox_qa_probe")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("facts")
    lat = sub.add_parser("latency")
    lat.add_argument("--host", required=True)
    lat.add_argument("--port", type=int, required=True)
    lat.add_argument("--count", type=int, default=20)
    lat.add_argument("--timeout", type=float, default=5.0)
    lat.add_argument("--pause", type=float, default=0.05)
    smk = sub.add_parser("smoke")
    smk.add_argument("--mounts", default="[]")
    args = parser.parse_args()
    result = {"facts": facts, "latency": latency, "smoke": smoke}[args.command](args)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
