"""User-supplied URLs pointing inside (loopback, link-local, private, metadata) are refused, each named."""

from __future__ import annotations

import pytest

from app.validation import check_public_url
from tests.api.helpers import instance_body


REFUSED = [
    "http://127.0.0.1/",
    "http://127.1:9000/",
    "http://localhost:9000/",
    "http://foo.localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[fd00::1]/",
    "http://[fe80::1]/",
    "http://10.0.0.5/",
    "http://172.16.3.4/",
    "http://192.168.1.1/",
    "http://0.0.0.0/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://224.0.0.1/",
    "file:///etc/passwd",
    "gopher://example.com/",
    "http://user:pw@example.com/",
]
ACCEPTED = ["https://s3.amazonaws.com", "https://storage.googleapis.com/", "http://52.95.110.1:9000/",
            "https://minio.example.com:9000/bucket"]


@pytest.mark.parametrize("url", REFUSED)
async def test_refused_through_the_api(url, api, mint, ssh_keypair, services):
    body = instance_body(ssh_keypair.public, buckets=[{"bucket": "data", "mountpoint": "/mnt/data", "endpoint": url}])
    response = await api.post("/v1/instances", json=body, headers=mint("alice"))
    assert response.status_code == 422, (url, response.text)
    assert response.json()["errors"][0]["field"] == "buckets.0.endpoint"
    assert await services.db.instances.count_documents({}) == 0


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_urls_pass(url):
    assert check_public_url(url) == url


def test_allowlist_opens_a_private_address_or_name():
    with pytest.raises(ValueError):
        check_public_url("http://10.0.0.5:9000/")
    assert check_public_url("http://10.0.0.5:9000/", ["10.0.0.0/24"])
    assert check_public_url("http://minio.internal/", ["minio.internal"])
    with pytest.raises(ValueError):
        check_public_url("http://10.0.1.5/", ["10.0.0.0/24"])


async def test_accepted_bucket_is_stored(api, mint, ssh_keypair, services):
    body = instance_body(ssh_keypair.public, buckets=[{"bucket": "data", "mountpoint": "/mnt/data",
                                                       "endpoint": "https://s3.amazonaws.com"}])
    assert (await api.post("/v1/instances", json=body, headers=mint("alice"))).status_code == 202
    bad = instance_body(ssh_keypair.public, buckets=[{"bucket": "data", "mountpoint": "/mnt/../etc"}])
    assert (await api.post("/v1/instances", json=bad, headers=mint("alice"))).status_code == 422
