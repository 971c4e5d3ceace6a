"""ready: time-to-ready per provider (POST → ``running``), and the failover time.

onebox runs in this process (API through httpx's ASGI transport, one worker, configuration
skipped) against each provider in turn: ``local`` (a real sshd per instance, nothing injected)
and the three cloud stand-ins — AWS on moto behind the EC2 fault proxy, the GCE fake, the ARM
fake — each slowed down to its cloud's typical latencies. The stand-ins answer at once, so the
latency is injected by a wrapper around the provider that sleeps (in the provider's thread, as a
blocking SDK call would) before the calls that take time on a real cloud:

| cloud | ``create_instance`` | ``wait_running`` | what it stands for |
| --- | --- | --- | --- |
| aws | 1.5 s | 12 s | RunInstances' answer; pending → running of a Linux AMI on a Nitro type |
| gcp | 8 s | 4 s | instances.insert's operation until DONE; STAGING → RUNNING |
| azure | 45 s | 3 s | the VM PUT's long-running operation (NIC, IP, NSG, disk, VM); the first instance view |

These are onebox's estimates of the usual figures, not measurements of the clouds (they vary
with region, machine type and image; GPUs are slower): what the scenario measures is what onebox
adds on top of them and how the tail behaves, so each figure's baseline is the latency injected.
``--quick`` scales the latencies to a tenth and launches fewer instances.

Time-to-ready is read from each record's ``transitions`` (first entry → ``running``), the same
derivation as ``onebox_time_to_ready_seconds``. N instances are launched at once per provider.

Failover time, per cloud stand-in: the first zone of the request is out of capacity (a persistent
fault in the stand-in, answered after the create latency as a cloud would); M instances ask for
``zones: [first, second]`` while M others, at the same time, ask for the second zone directly
(the baseline). Holds are off (``capacity_cooldown_seconds=0``) so every failover launch meets
the error. The difference is the failover's cost: one failed create, the cleanup of that zone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

from app.clock import as_utc
from app.observability.metrics import seconds_to_ready
from app.settings import Settings
from bench.common import SECRET, Row, dbserver, percentile, scratch
from bench.provision import ssh_public_key

LATENCY = {
    "aws": {"create_instance": 1.5, "wait_running": 12.0},
    "gcp": {"create_instance": 8.0, "wait_running": 4.0},
    "azure": {"create_instance": 45.0, "wait_running": 3.0},
    "local": {},
}


class Slowed:
    """A provider whose slow calls take as long as its cloud's typically do (sleeping in the provider's
    thread, like a blocking SDK call); everything else goes straight through."""

    def __init__(self, inner: Any, delays: dict[str, float]) -> None:
        self.inner, self.delays = inner, delays

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create_instance(self, spec):
        time.sleep(self.delays.get("create_instance", 0.0))
        return self.inner.create_instance(spec)

    def wait_running(self, ref, timeout):
        time.sleep(self.delays.get("wait_running", 0.0))
        return self.inner.wait_running(ref, timeout)


def settings_for(db, work, provider: str) -> Settings:
    return Settings(mongodb_url=db.url(), database=f"bench_ready_{provider}", jwt_secret=SECRET,
                    data_dir=work / f"data-{provider}", providers=[provider], configure="skip", poll_seconds=0.2,
                    worker_concurrency=64, provider_threads=64, reaper_enabled=False, capacity_cooldown_seconds=0,
                    rate_limit_per_minute=1_000_000, quota_max_instances=10_000, quota_max_vcpus=100_000,
                    wait_running_timeout_seconds=600, aws_poll_seconds=0.2, gcp_poll_seconds=0.2)


async def launch(api, headers: dict, bodies: list[dict], svc) -> list[dict]:
    """POST every body at once; the records once all are running (failed ones raise)."""
    async def post(body):
        r = await api.post("/v1/instances", json=body, headers=headers)
        if r.status_code != 202:
            raise RuntimeError(f"POST /v1/instances: {r.status_code} {r.text[:300]}")
        return r.json()["id"]

    ids = await asyncio.gather(*(post(b) for b in bodies))
    deadline = time.monotonic() + 900
    while True:
        docs = await svc.db.instances.find({"_id": {"$in": ids}}).to_list()
        if len(docs) == len(ids) and all(d["status"] in ("running", "failed") for d in docs):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the launches did not finish in 15 minutes")
        await asyncio.sleep(0.25)
    failed = [d for d in docs if d["status"] == "failed"]
    if failed:
        raise RuntimeError(f"{len(failed)} launches failed: {failed[0]['error']}")
    order = {i: n for n, i in enumerate(ids)}
    return sorted(docs, key=lambda d: order[d["_id"]])


async def delete_all(api, headers: dict, docs: list[dict], svc) -> None:
    for d in docs:
        await api.delete(f"/v1/instances/{d['_id']}", headers=headers)
    ids = [d["_id"] for d in docs]
    deadline = time.monotonic() + 600
    while await svc.db.instances.count_documents({"_id": {"$in": ids}, "status": {"$ne": "deleted"}}):
        if time.monotonic() > deadline:
            raise TimeoutError("the deletes did not finish in 10 minutes")
        await asyncio.sleep(0.25)


def ready_seconds(docs: list[dict]) -> list[float]:
    return [seconds_to_ready([{**t, "at": as_utc(t["at"])} for t in d["transitions"]]) for d in docs]


@contextlib.contextmanager
def stand_ins(work):
    """The three cloud stand-ins, started; {name: FailoverStand}."""
    from tests.e2e.failover_stands import aws_stand, azure_stand, gcp_stand
    from tests.fakes.arm import ArmFake
    from tests.fakes.ec2_faults import Ec2FaultProxy
    from tests.fakes.fixtures import GCE_PROJECT
    from tests.fakes.gce import GceFake, GceFakeServer
    from tests.providers.aws_fixtures import running_moto

    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(work / "no-aws-config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(work / "no-aws-config")}.items():
        os.environ[key] = value
    with running_moto(work) as moto:
        proxy = Ec2FaultProxy(moto.url).start()
        gce = GceFakeServer(GceFake(GCE_PROJECT, cpu_quota=10_000)).start()
        arm = ArmFake().start()
        try:
            yield {"aws": aws_stand(moto.url, proxy), "gcp": gcp_stand(gce), "azure": azure_stand(arm)}
        finally:
            arm.stop()
            gce.stop()
            proxy.stop()


async def run(quick: bool = False) -> list[Row]:
    from tests.e2e.cloud_support import running_onebox

    count, pairs = (4, 2) if quick else (10, 4)
    scale = 0.1 if quick else 1.0
    rows: list[Row] = []
    with scratch("ready") as work, dbserver(work) as db, stand_ins(work) as stands:
        key = ssh_public_key(work)
        for name in ("local", "aws", "gcp", "azure"):
            delays = {call: seconds * scale for call, seconds in LATENCY[name].items()}
            injected = sum(delays.values())
            stand = stands.get(name)
            providers = {name: Slowed(stand.make_provider(), delays)} if stand else None
            async with running_onebox(settings_for(db, work, name), providers=providers) as (api, svc):
                headers = {"Authorization": f"Bearer {svc.tokens.mint('bench')}"}

                def body(n: int, **fields) -> dict:
                    if stand is None:
                        return {"name": f"ready-{n}", "provider": "local", "region": "local", "machine_type": "local",
                                "ssh_user": "bench", "ssh_public_key": key, **fields}
                    return {**stand.body(f"ready-{n}", ssh_public_key=key), **fields}

                docs = await launch(api, headers, [body(n) for n in range(count)], svc)
                times = ready_seconds(docs)
                await delete_all(api, headers, docs, svc)
                what = "no latency injected: a real sshd per instance" if stand is None else \
                    f"{injected:.1f} s of cloud latency injected ({', '.join(f'{k} {v:g} s' for k, v in delays.items())})"
                for label, q in (("p50", 0.5), ("p95", 0.95)):
                    rows.append(Row("ready", f"{name}: time to ready, {count} at once: {label}", percentile(times, q),
                                    "s", baseline=injected or None, baseline_label="injected latency" if injected else "",
                                    note=f"{what}; configuration skipped" if label == "p50" else ""))
                print(f"   {name}: time to ready p50 {percentile(times, 0.5):.2f} s, p95 {percentile(times, 0.95):.2f} s "
                      f"({injected:.1f} s injected)", flush=True)
                if stand is None:
                    continue
                short = stand.capacity(stand.region, stand.zone_a)
                try:
                    bodies = [body(n, zones=[stand.zone_a, stand.zone_b]) for n in range(pairs)]
                    bodies += [body(pairs + n, zones=[stand.zone_b]) for n in range(pairs)]
                    docs = await launch(api, headers, bodies, svc)
                finally:
                    stand.clear(short)
                if any(d["zone"] != stand.zone_b for d in docs):
                    raise RuntimeError(f"{name}: a launch did not land in {stand.zone_b}")
                times = ready_seconds(docs)
                failover, direct = percentile(times[:pairs], 0.5), percentile(times[pairs:], 0.5)
                rows.append(Row("ready", f"{name}: failover, capacity in the first zone → running in the second: p50",
                                failover, "s", baseline=direct, baseline_label="the second zone asked directly",
                                note=f"{pairs} failovers and {pairs} direct launches at once; extra "
                                     f"{failover - direct:.1f} s (one failed create: {delays['create_instance']:g} s "
                                     "injected, and the cleanup of the first zone)"))
                print(f"   {name}: failover p50 {failover:.2f} s against {direct:.2f} s directly", flush=True)
                await delete_all(api, headers, docs, svc)
    return rows
