"""The providers this onebox offers, built lazily from settings.

Cloud SDKs are imported only when their provider is first used, so the service
starts even where one cloud's SDK is missing. Provider calls block; ``call``
runs them in worker threads, at most ``provider_threads`` at once, never on
the event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread

from app.settings import Settings
from providers.base import Catalog, Provider

T = TypeVar("T")
log = logging.getLogger("onebox.cloud")


class UnknownProvider(KeyError):
    pass


CATALOG_REUSE_SECONDS = 60.0  # providers keep their own, longer cache; this one spares a thread hop per request


class ProviderRegistry:
    def __init__(self, settings: Settings, overrides: dict[str, Provider] | None = None) -> None:
        self.settings = settings
        self._providers: dict[str, Provider] = dict(overrides or {})
        self._lock = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None
        self._catalogs: dict[str, tuple[float, Catalog]] = {}
        self._refreshing: dict[str, asyncio.Task] = {}

    @property
    def enabled(self) -> list[str]:
        return list(self.settings.providers)

    def get(self, name: str) -> Provider:
        if name not in self.settings.providers:
            raise UnknownProvider(name)
        with self._lock:
            if name not in self._providers:
                self._providers[name] = self._build(name)
            return self._providers[name]

    def _build(self, name: str) -> Provider:
        s = self.settings
        deployment = s.deployment()  # tagged on everything a provider makes; its listings skip other deployments'
        if name == "local":
            from providers.local import LocalConfig, LocalProvider

            return LocalProvider(LocalConfig(
                root=s.data_dir / "local", ssh_port=s.local_ssh_port, address_first=s.local_address_first,
                address_last=s.local_address_last, create_delay=s.local_create_delay_seconds, deployment=deployment,
            ))
        if name == "aws":
            from providers.aws import AwsConfig, AwsProvider

            return AwsProvider(AwsConfig(
                regions=tuple(s.aws_regions), endpoint_url=s.aws_endpoint_url, ssh_cidr=s.aws_ssh_cidr,
                reboot_on_snapshot=s.aws_reboot_on_snapshot, poll_delay=s.aws_poll_seconds, deployment=deployment,
            ))
        if name == "gcp":
            from providers.gcp import GcpConfig, GcpProvider

            if not s.gcp_project:
                raise ValueError("ONEBOX_GCP_PROJECT is required for the gcp provider")
            credentials = None  # Application Default Credentials
            if s.gcp_anonymous_credentials:
                from google.auth.credentials import AnonymousCredentials

                credentials = AnonymousCredentials()
            return GcpProvider(GcpConfig(project=s.gcp_project, zones=tuple(s.gcp_zones),
                                         api_endpoint=s.gcp_api_endpoint, ssh_cidr=s.gcp_ssh_cidr,
                                         poll_interval=s.gcp_poll_seconds, deployment=deployment),
                               credentials=credentials)
        if name == "azure":
            from providers.azure import AzureConfig, AzureProvider

            if not s.azure_subscription_id:
                raise ValueError("ONEBOX_AZURE_SUBSCRIPTION_ID is required for the azure provider")
            return AzureProvider(AzureConfig(
                subscription_id=s.azure_subscription_id, resource_group=s.azure_resource_group,
                locations=tuple(s.azure_locations), base_url=s.azure_base_url, ca_bundle=s.azure_ca_bundle,
                static_token=s.azure_static_token.get_secret_value() if s.azure_static_token else None,
                ssh_cidr=s.azure_ssh_cidr, polling_interval=s.azure_polling_interval, deployment=deployment,
            ))
        if name == "qemu":
            from providers.qemu import QemuConfig, QemuProvider

            return QemuProvider(QemuConfig(
                root=s.data_dir / "qemu", image_dir=s.qemu_image_dir, accel=s.qemu_accel,
                tb_size_mb=s.qemu_tb_size_mb, ssh_port_first=s.qemu_ssh_port_first,
                ssh_port_last=s.qemu_ssh_port_last, private_mcast=s.qemu_private_mcast,
                private_network=s.qemu_private_network, shutdown_grace=s.qemu_shutdown_grace_seconds,
                deployment=deployment,
            ))
        raise UnknownProvider(name)

    async def catalog(self, name: str) -> Catalog:
        """What ``name`` offers, for validating requests. Answered from memory; a copy older than
        ``CATALOG_REUSE_SECONDS`` is still answered while a fresh one is read in the background, so
        only the very first read (which ``warm_catalogs`` does at start) waits for the cloud."""
        provider = self.get(name)
        cached = self._catalogs.get(name)
        if cached is None:
            return await self._read_catalog(name, provider)
        if time.monotonic() - cached[0] > CATALOG_REUSE_SECONDS and name not in self._refreshing:
            task = asyncio.create_task(self._refresh_catalog(name, provider), context=contextvars.Context())
            self._refreshing[name] = task
            task.add_done_callback(lambda _: self._refreshing.pop(name, None))
        return cached[1]

    async def warm_catalogs(self) -> None:
        """Read every enabled provider's catalog once (at start), so no request waits for a cloud."""
        for name in self.enabled:
            try:
                await self.catalog(name)
            except Exception as exc:  # noqa: BLE001 - a cloud down at start: the first request tries again
                log.warning("could not read the %s catalog yet: %s", name, type(exc).__name__)

    async def _read_catalog(self, name: str, provider: Provider) -> Catalog:
        catalog = await self.call(provider.catalog)
        self._catalogs[name] = (time.monotonic(), catalog)
        return catalog

    async def _refresh_catalog(self, name: str, provider: Provider) -> None:
        try:
            await self._read_catalog(name, provider)
        except Exception as exc:  # noqa: BLE001 - keep answering the last good copy
            log.warning("could not refresh the %s catalog: %s", name, type(exc).__name__)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.settings.provider_threads)
        if self.settings.inject_cloud_latency_seconds:
            # A slow cloud, simulated without holding a thread: what scale-out is measured against.
            await asyncio.sleep(self.settings.inject_cloud_latency_seconds)
        # abandon_on_cancel: a stopping worker hands its job back at once instead of waiting for a
        # blocking SDK call to return (steps are idempotent; the call's result is simply dropped).
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self._limiter,
                                              abandon_on_cancel=True)
