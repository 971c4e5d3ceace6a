"""The budget webhook: alerts POSTed to ``ONEBOX_WEBHOOK_URL``, signed, retried, SSRF-checked.

Each alert (``app.costs.watch``) is stored before anything is sent and carries its delivery's
state, so a crash loses nothing: the next pass of the watch sends what is due. An attempt that
fails (a network error, a timeout, any answer but 2xx — redirects are not followed) is retried
after ``ONEBOX_WEBHOOK_BACKOFF_SECONDS`` (5), doubled each time up to an hour, at most
``ONEBOX_WEBHOOK_MAX_ATTEMPTS`` (8) times. Delivery is at least once: receivers deduplicate on
``X-Onebox-Delivery``.

**Verifying a delivery.** ``X-Onebox-Signature: sha256=<hex>`` is
HMAC-SHA256(``ONEBOX_WEBHOOK_SECRET``, ``<X-Onebox-Timestamp> + "." + <raw body>``); compare it in
constant time and refuse timestamps more than a few minutes old (a replay). The secret never
leaves the settings: it is not stored, logged or sent.

**SSRF.** The URL is checked like users' URLs (``app.validation.check_public_url`` with
``ONEBOX_URL_ALLOWLIST``) at start and before every attempt, and since onebox itself connects, a
host name is resolved first and every address it resolves to must be public too (or allowlisted).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.clock import utcnow
from app.validation import check_public_url

log = logging.getLogger("onebox.costs.webhook")

MAX_BACKOFF_SECONDS = 3600.0
BATCH = 50  # deliveries attempted per pass


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def body_of(payload: dict[str, Any]) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def _allowlisted(address, allowlist: list[str]) -> bool:
    for entry in allowlist:
        try:
            if address in ipaddress.ip_network(entry.strip("[]"), strict=False):
                return True
        except ValueError:
            continue
    return False


async def check_destination(url: str, allowlist: list[str]) -> None:
    """Raise ValueError unless ``url`` and every address its host resolves to are public (or allowlisted)."""
    check_public_url(url, allowlist)
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    if host in (entry.lower().strip("[]") for entry in allowlist):
        return
    try:
        infos = await asyncio.to_thread(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ValueError(f"cannot resolve {host}: {exc.strerror or exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0].split("%")[0])
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        if _allowlisted(address, allowlist):
            continue
        if (address.is_loopback or address.is_link_local or address.is_private or address.is_reserved
                or address.is_multicast or address.is_unspecified):
            raise ValueError(f"{host} resolves to a non-public address ({address}); ask an admin to allowlist it")


async def attempt(settings, payload_body: str, event: str, delivery_id: str,
                  client: httpx.AsyncClient) -> str | None:
    """One attempt; None when the receiver answered 2xx, else why not."""
    url = settings.webhook_url
    try:
        await check_destination(url, settings.url_allowlist)
    except ValueError as exc:
        return f"refused: the webhook URL {exc}"
    timestamp = str(int(time.time()))
    body = payload_body.encode()
    headers = {"Content-Type": "application/json", "User-Agent": "onebox-webhook", "X-Onebox-Event": event,
               "X-Onebox-Delivery": delivery_id, "X-Onebox-Timestamp": timestamp,
               "X-Onebox-Signature": signature(settings.webhook_secret.get_secret_value().encode(), timestamp, body)}
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}" + (" (redirects are not followed)" if response.is_redirect else "")


async def deliver_due(services) -> int:
    """Send every alert whose delivery is due; the number delivered. Run by the watch, one process at a time."""
    settings = services.settings
    alerts = services.db.budget_alerts
    if not settings.webhook_url:
        return 0
    now = utcnow()
    due = [d async for d in alerts.find({"webhook.status": "pending", "webhook.next_attempt_at": {"$lte": now}})
           .sort("webhook.next_attempt_at", 1).limit(BATCH)]
    delivered = 0
    host = urlsplit(settings.webhook_url).hostname
    async with httpx.AsyncClient(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as client:
        for alert in due:
            error = await attempt(settings, alert["webhook"]["body"], alert["webhook"]["event"], alert["_id"], client)
            attempts = alert["webhook"]["attempts"] + 1
            if error is None:
                update = {"webhook.status": "delivered", "webhook.delivered_at": utcnow(), "webhook.attempts": attempts,
                          "webhook.last_error": None}
                delivered += 1
                log.info("webhook %s delivered to %s (attempt %d)", alert["_id"], host, attempts)
            elif attempts >= settings.webhook_max_attempts:
                update = {"webhook.status": "failed", "webhook.attempts": attempts, "webhook.last_error": error}
                log.warning("webhook %s to %s given up after %d attempts: %s", alert["_id"], host, attempts, error)
            else:
                delay = min(settings.webhook_backoff_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
                update = {"webhook.attempts": attempts, "webhook.last_error": error,
                          "webhook.next_attempt_at": utcnow() + dt.timedelta(seconds=delay)}
                log.warning("webhook %s to %s failed (%s); retrying in %.0fs", alert["_id"], host, error, delay)
            await alerts.update_one({"_id": alert["_id"]}, {"$set": update})
    return delivered
