"""Pure checks on user input shared by the request models.

Naming rules (documented in the README) are the intersection of what AWS,
GCP and Azure accept, so a name valid here is valid on every cloud.
"""

from __future__ import annotations

import re

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

NAME_PATTERN = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
SSH_USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
LABEL_KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
LABEL_VALUE_PATTERN = re.compile(r"^[a-z0-9_-]{0,63}$")
MAX_LABELS = 32
RESERVED_LABEL_PREFIXES = ("onebox", "managed-by")
RESERVED_SSH_USERS = frozenset({"root"})
SSH_KEY_TYPES = frozenset({"ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"})
MIN_RSA_BITS = 2048
MAX_SSH_KEY_CHARS = 16 * 1024


def check_ssh_public_key(value: str) -> str:
    """One OpenSSH public key line: known type, valid key data, RSA ≥ 2048 bits."""
    key = value.strip()
    if not key or len(key) > MAX_SSH_KEY_CHARS or "\n" in key or "\r" in key:
        raise ValueError("must be one OpenSSH public key line, e.g. 'ssh-ed25519 AAAA... you@host'")
    parts = key.split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise ValueError(f"key type must be one of {', '.join(sorted(SSH_KEY_TYPES))}")
    try:
        loaded = load_ssh_public_key(f"{parts[0]} {parts[1]}".encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("is not a valid OpenSSH public key") from exc
    if isinstance(loaded, rsa.RSAPublicKey) and loaded.key_size < MIN_RSA_BITS:
        raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    if not isinstance(loaded, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise ValueError("unsupported key type")
    return key


def check_ssh_user(value: str) -> str:
    if value in RESERVED_SSH_USERS:
        raise ValueError(f"'{value}' is reserved; choose another user name")
    return value


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not LABEL_KEY_PATTERN.match(key):
            raise ValueError(f"label key '{key[:70]}' must match {LABEL_KEY_PATTERN.pattern}")
        if key.startswith(RESERVED_LABEL_PREFIXES):
            raise ValueError(f"label key '{key}' is reserved for onebox")
        if not LABEL_VALUE_PATTERN.match(value):
            raise ValueError(f"label '{key}' value must match {LABEL_VALUE_PATTERN.pattern}")
    return labels


# --- user-supplied URLs (SSRF) -----------------------------------------------

BLOCKED_HOSTNAMES = ("localhost", "metadata", "metadata.google.internal", "metadata.azure.internal",
                     "instance-data", "instance-data.ec2.internal")


def _literal_ip(host: str):
    """The address a host names literally, in any notation (2130706433, 0x7f.1, [::1]); None for names."""
    import ipaddress
    import socket

    candidate = host.strip("[]")
    try:
        return ipaddress.ip_address(candidate)
    except ValueError:
        pass
    if candidate and all(c in "0123456789abcdefxABCDEFX." for c in candidate):
        try:  # the legacy forms inet_aton accepts, and so do HTTP clients
            return ipaddress.ip_address(socket.inet_aton(candidate))
        except OSError:
            return None
    return None


def check_public_url(url: str, allowlist: list[str] | tuple[str, ...] = ()) -> str:
    """Refuse URLs that would make onebox or its VMs reach internal services (SSRF).

    Refused unless their host is allowlisted (a host name, an address or a CIDR):
    schemes other than http(s), loopback, link-local (169.254.0.0/16 with the
    cloud metadata address), private, reserved, multicast and unspecified
    addresses in any notation, and localhost or metadata host names. Other
    host names are accepted: they are resolved on the VM.
    """
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must be an http or https URL")
    if not host or parts.username or parts.password:
        raise ValueError("must name a host, without credentials")
    address = _literal_ip(host)
    for entry in allowlist:
        if host == entry.lower().strip("[]"):
            return url
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if address is not None and address in network:
            return url
    if address is not None:
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        if (address.is_loopback or address.is_link_local or address.is_private or address.is_reserved
                or address.is_multicast or address.is_unspecified):
            raise ValueError(f"points at a non-public address ({address}); ask an admin to allowlist it")
        return url
    if host in BLOCKED_HOSTNAMES or host.endswith((".localhost", ".internal")):
        raise ValueError(f"points at an internal host ({host}); ask an admin to allowlist it")
    return url
