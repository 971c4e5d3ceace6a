"""Settings of the GCP provider: which project and zones, where the API is, how long to wait.

``GcpConfig`` is plain data the app builds from its own settings. It holds no
credentials: Application Default Credentials (or those given to ``GcpProvider``)
are used.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GcpConfig:
    """Where and how onebox uses Compute Engine."""

    project: str
    zones: tuple[str, ...] = ()  # zones offered; empty -> every zone of `regions`
    regions: tuple[str, ...] = ()  # used when `zones` is empty; both empty -> every zone the project sees
    machine_types: tuple[str, ...] = ()  # machine types offered; empty -> all the zones list
    api_endpoint: str | None = None  # None = the real API; "http://127.0.0.1:8089" = the local fake
    network: str = "global/networks/default"
    ssh_cidr: str = "0.0.0.0/0"
    network_tag: str = "onebox-ssh"
    default_image: str = "ubuntu-24.04"  # alias or native id, used when a spec names none
    disk_type: str | None = None  # e.g. "pd-balanced"; None = the API default (pd-standard)
    name_prefix: str = "onebox"  # VM/snapshot/firewall names start with it
    wait_timeout: float = 600.0  # bound on one create/delete/snapshot wait
    poll_interval: float = 2.0  # between status reads
    request_timeout: float = 60.0  # one HTTP call
    api_retries: int = 4  # extra attempts per call on retryable errors
    retry_base_delay: float = 0.5  # first backoff, doubled per attempt (jittered)
    retry_max_delay: float = 20.0
    catalog_ttl: float = 3600.0
