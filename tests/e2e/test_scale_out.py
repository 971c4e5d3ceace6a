"""Scale-out: 2 API processes and 3 worker processes on one database provision 100 instances
against the GCE fake, each cloud call slowed by 1 s; every instance is provisioned exactly once,
and the wall time is compared with the same run on 1 worker (the issue's target: 2.5× faster; the
figure is printed at the end of the run)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter

import httpx
import pytest

from tests.e2e.cloud_support import Cloud
from tests.reports import SCALE_OUT
from tests.e2e.test_cloud_flows import gcp_cloud, settings_for  # noqa: F401 (fixtures)
from tests.e2e.test_workers import start_api, start_worker, stop, wait_until
from tests.fakes.fixtures import gce, gce_server  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

INSTANCES = 100
LATENCY_SECONDS = 1.0


async def provision(cloud: Cloud, settings, tmp_path, workers: int) -> tuple[float, float]:
    """Wall time from the first POST to the last instance running, with ``workers`` workers, and to
    the last create accepted (the API's share of it)."""
    from app.services import Services

    # The GCP provider's own 2 s poll (not the suite's fast one): on 2 cores the fake, the database
    # and five processes share the CPU, and faster polling makes the run CPU-bound.
    env = {**cloud.worker_env, "ONEBOX_PROVIDERS": cloud.name, "ONEBOX_CONFIGURE": "skip",
           "ONEBOX_INJECT_CLOUD_LATENCY_SECONDS": LATENCY_SECONDS, "ONEBOX_GCP_POLL_SECONDS": 2.0}
    ports = []
    processes = []
    svc = Services.build(settings)
    try:
        for n in range(2):
            process, port = await start_api(settings, tmp_path / f"api-{workers}-{n}.log", **env)
            processes.append(process)
            ports.append(port)
        for n in range(workers):
            processes.append(start_worker(settings, tmp_path / f"worker-{workers}-{n}.log", **env))
        headers = {"Authorization": f"Bearer {svc.tokens.mint('alice')}"}
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) for port in ports]
        for client in clients:  # warm (the API reads catalogs at start): what is measured is provisioning
            assert (await client.get("/v1/catalog", headers=headers)).status_code == 200
        await asyncio.sleep(2)  # the workers are up and polling (their start is not what is measured)
        started = time.monotonic()
        gate = asyncio.Semaphore(8)

        async def create(n: int) -> str:
            # As a careful client does: an overloaded API's 503 is retried with the same Idempotency-Key.
            for _ in range(10):
                async with gate:
                    r = await clients[n % 2].post("/v1/instances", json=cloud.body(name=f"box-{n}"),
                                                  headers={**headers, "Idempotency-Key": f"box-{n}"})
                if r.status_code != 503:
                    break
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
            assert r.status_code == 202, r.text
            return r.json()["id"]

        ids = await asyncio.gather(*(create(n) for n in range(INSTANCES)))
        accepted = time.monotonic() - started

        async def all_running():
            return await svc.db.instances.count_documents({"status": "running"}) == INSTANCES
        await wait_until(all_running, timeout=300, what=f"{INSTANCES} instances on {workers} worker(s)")
        took = time.monotonic() - started
        for client in clients:
            await client.aclose()
        # Exactly once: one create per instance, one VM per instance in the cloud.
        creates = Counter()
        async for event in svc.db.events.find({"type": "step.started", "step": "create"}, {"instance_id": 1}):
            creates[event["instance_id"]] += 1
        assert set(creates) == set(ids) and set(creates.values()) == {1}, creates.most_common(3)
        vms = Counter(r.instance_id for r in cloud.make_provider().list_managed() if r.kind == "instance")
        assert set(vms) == set(ids) and set(vms.values()) == {1}
        return took, accepted
    finally:
        for process in processes:
            stop(process, signal.SIGKILL)
        await svc.close()


async def test_three_workers_two_apis_provision_100_instances_each_once(gcp_cloud, gce, dbserver, tmp_path):
    gce.cpu_quota = 100_000  # 200 e2-small VMs over two runs
    try:
        times, accepted = {}, {}
        for workers in (1, 3):
            gce.reset()
            settings = settings_for(gcp_cloud, dbserver, tmp_path / f"w{workers}", quota_max_instances=INSTANCES, quota_max_vcpus=10 * INSTANCES,
                                    lease_seconds=30.0, poll_seconds=0.5)
            times[workers], accepted[workers] = await provision(gcp_cloud, settings, tmp_path, workers)
        speedup = times[1] / times[3]
        SCALE_OUT.append({"instances": INSTANCES, "latency_s": LATENCY_SECONDS, "one_worker_s": times[1],
                          "three_workers_s": times[3], "speedup": speedup,
                          "one_worker_accepted_s": accepted[1], "three_workers_accepted_s": accepted[3]})
        # The target (2.5×) is measured by `make bench` (bench/scale.py) on a quiet machine; here, beside the
        # rest of the suite on 2 cores, this asserts that more workers do go faster and reports the figure.
        assert speedup >= 1.15, f"3 workers took {times[3]:.1f}s, 1 worker {times[1]:.1f}s: {speedup:.2f}×"
    finally:
        gce.reset()
        gce.cpu_quota = 64
