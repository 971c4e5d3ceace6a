"""Request bodies and polling helpers for API tests."""

from __future__ import annotations

import asyncio
import time


def instance_body(key: str, /, **overrides) -> dict:
    body = {
        "name": "box-1",
        "provider": "local",
        "region": "local",
        "machine_type": "local",
        "ssh_user": "alice",
        "ssh_public_key": key,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


async def wait_status(client, path: str, headers: dict, wanted: set[str], timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        response = await client.get(path, headers=headers)
        if response.status_code == 503:  # "try again shortly", as a careful client does (a starved machine)
            await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
            continue
        assert response.status_code == 200, response.text
        last = response.json()
        if last["status"] in wanted:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path} stayed {last and last['status']} (wanted {wanted}): {last}")
