"""The qemu provider as API clients meet it: in the catalog, and requests checked against it.

No VM is started here: a bad request is refused before anything is queued.
"""

from __future__ import annotations

import pytest

from providers.qemu import QemuConfig, QemuProvider
from tests.conftest import make_settings
from tests.vm.conftest import IMAGE_DIR

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVh9k3YgCz0m3b0nB2H0q8q3oH9u3Xl0VvS1r7Jm1xY alice@laptop"


@pytest.fixture
def settings(dbserver, tmp_path, qemu_network, qemu_tools):
    return make_settings(dbserver, tmp_path / "data", providers=["local", "qemu"], qemu_image_dir=IMAGE_DIR)


def body(**overrides) -> dict:
    values = {"name": "vm-1", "provider": "qemu", "region": "local", "machine_type": "small", "image": "debian-12",
              "ssh_user": "alice", "ssh_public_key": KEY}
    values.update(overrides)
    return values


async def test_the_catalog_offers_qemu(api, mint):
    catalog = (await api.get("/v1/catalog", headers=mint())).json()
    (qemu,) = [p for p in catalog["providers"] if p["name"] == "qemu"]
    assert qemu["available"] and qemu["images"] == ["debian-12"] and not qemu["native_images"]
    (region,) = qemu["regions"]
    assert region["name"] == "local" and region["zones"] == ["local"]
    sizes = {m["name"]: (m["vcpus"], m["memory_gb"], m["hourly_usd"]) for m in region["machine_types"]}
    assert sizes["small"] == (1, 1.0, 0.0) and sizes["medium"] == (2, 2.0, 0.0)


@pytest.mark.parametrize("field, value", [("image", "ubuntu-22.04"), ("machine_type", "t3.micro"),
                                          ("region", "us-east-1"), ("zone", "us-east-1a")])
async def test_what_qemu_cannot_do_is_refused_naming_the_field(api, mint, field, value):
    refused = await api.post("/v1/instances", json=body(**{field: value}), headers=mint())
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in refused.json()["errors"]] == [field]
    listed = (await api.get("/v1/instances?provider=qemu", headers=mint())).json()
    assert listed["items"] == [], "nothing was queued"


async def test_without_qemu_installed_the_catalog_says_so(dbserver, tmp_path):
    from tests.e2e.cloud_support import running_onebox

    settings = make_settings(dbserver, tmp_path / "data", providers=["qemu"])
    missing = QemuProvider(QemuConfig(root=tmp_path / "qemu", qemu_binary="/nonexistent/qemu-system-x86_64"))
    async with running_onebox(settings, providers={"qemu": missing}, worker=False) as (api, svc):
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        (qemu,) = (await api.get("/v1/catalog", headers=headers)).json()["providers"]
        assert not qemu["available"] and "make qemu" in qemu["error"]["message"]
        refused = await api.post("/v1/instances", json=body(), headers=headers)
        assert refused.status_code == 503 and refused.json()["code"] == "catalog_unavailable"
        assert "make qemu" in refused.json()["detail"]
