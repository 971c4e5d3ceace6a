"""The rules of QA runs: who may test what, one run per instance, cancelling, history and baselines.

A request never touches an instance: creating a run validates the suite, its
parameters and the instances (the caller's own, running and configured), takes
the instances' locks and stores the run with its job (``app.qa.jobs``), which a
worker then carries out. Cancelling records a cancel request the job acts on.
"""

from __future__ import annotations

from typing import Any

from app.auth.tokens import Principal
from app.clock import utcnow
from app.ids import new_qa_run_id
from app.instances.service import owner_filter
from app.lifecycle.states import QA_RUN_FINAL_STATUSES, QaRunStatus, recorded
from app.pagination import page
from app.problems import Problem, field_problem, not_found
from app.qa.repository import LockTaken, QaRepository
from app.qa.suites import SUITES, ParamError, job_steps, resolve_params
from app.services import Services
from app.worker.jobs import new_job

Q = QaRunStatus


def job_kind(suite: str) -> str:
    return f"qa_{suite}"


class QaService:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.db = services.db
        self.repo = QaRepository(services.db)

    # --- reading ------------------------------------------------------------------------------
    async def get(self, principal: Principal, run_id: str) -> dict[str, Any]:
        doc = await self.db.qa_runs.find_one({"_id": run_id, **owner_filter(principal)})
        if doc is None:
            raise not_found("QA run", run_id)
        return doc

    async def list(self, principal: Principal, *, suite: str | None, status: str | None, instance_id: str | None,
                   limit: int, cursor: str | None, owner: str | None = None) -> tuple[list[dict], str | None]:
        query: dict[str, Any] = owner_filter(principal)
        if owner and principal.is_admin:
            query["owner"] = owner
        if suite:
            query["suite"] = suite
        if status:
            query["status"] = status
        if instance_id:
            query["instances"] = instance_id
        return await page(self.db.qa_runs, query, limit, cursor)

    async def cancel_flags(self, docs: list[dict[str, Any]]) -> set[str]:
        live = [d["_id"] for d in docs if d["status"] not in QA_RUN_FINAL_STATUSES]
        return await self.repo.cancel_requested_among(live) if live else set()

    async def events(self, principal: Principal, run_id: str) -> list[dict[str, Any]]:
        await self.get(principal, run_id)
        return await self.services.events.list(run_id)

    # --- creating -----------------------------------------------------------------------------
    async def create(self, principal: Principal, suite_name: str, instance_ids: list[str],
                     given_params: dict[str, Any] | None) -> dict[str, Any]:
        suite = SUITES[suite_name]
        if len(set(instance_ids)) != len(instance_ids):
            raise field_problem("instances", "an instance is named twice")
        if not suite.min_instances <= len(instance_ids) <= suite.max_instances:
            raise field_problem("instances", f"the {suite.name} suite takes {suite.min_instances} to "
                                             f"{suite.max_instances} instances")
        try:
            params = resolve_params(suite, given_params)
        except ParamError as exc:
            raise field_problem(exc.field, exc.message) from None
        targets = []
        for index, instance_id in enumerate(instance_ids):
            targets.append(await self._target(principal, suite_name, instance_id, index, len(instance_ids)))
        run_id = new_qa_run_id()
        try:
            await self.repo.take_locks(run_id, instance_ids)
        except LockTaken as exc:
            raise Problem(409, "qa_run_in_progress", "A QA run is using this instance",
                          f"instance {exc.instance_id} is under QA run {exc.run_id or '(starting)'}; one run per "
                          "instance at a time", run_id=exc.run_id or None,
                          errors=[{"field": f"instances.{instance_ids.index(exc.instance_id)}",
                                   "message": f"in use by QA run {exc.run_id or '(starting)'}"}]) from None
        now = utcnow()
        doc = {
            "_id": run_id,
            "owner": principal.subject,
            "suite": suite.name,
            "instances": instance_ids,
            "targets": targets,
            "params": params,
            "steps": list(job_steps(suite)),
            "results": {},
            "facts": {},
            "status": Q.PENDING.value,
            "error": None,
            "created_at": now,
            "updated_at": now,
            "started_at": None,
            "finished_at": None,
            "transitions": [recorded(None, Q.PENDING, now)],
            "job": new_job(job_kind(suite.name), now),
        }
        try:
            await self.db.qa_runs.insert_one(doc)
        except BaseException:
            await self.repo.release_locks(run_id)
            raise
        names = ", ".join(t["instance_id"] for t in targets)
        await self.services.events.add(run_id, "qa.requested", f"{suite.name} suite queued on {names}")
        return doc

    async def _target(self, principal: Principal, suite: str, instance_id: str, index: int, count: int) -> dict:
        field = f"instances.{index}"
        # Only the caller's own instances, admins included: a QA run logs in to the VM and loads it.
        instance = await self.db.instances.find_one({"_id": instance_id, "owner": principal.subject})
        if instance is None:
            raise not_found("instance", instance_id)
        deleting = await self.db.delete_requests.find_one({"_id": instance_id}, {"_id": 1}) is not None
        if instance["status"] != "running" or deleting:
            status = "deleting" if deleting and instance["status"] == "running" else instance["status"]
            raise Problem(409, "instance_not_running", "Instance is not running",
                          f"QA runs need running instances; {instance_id} is {status}", current_status=status,
                          errors=[{"field": field, "message": f"is {status}, not running"}])
        if not instance.get("ssh_host_keys"):
            raise Problem(409, "instance_not_configured", "Instance was not configured",
                          f"{instance_id} was never configured (ONEBOX_CONFIGURE=skip?): QA runs reach instances "
                          "with onebox's key and the host key recorded at configuration",
                          errors=[{"field": field, "message": "was never configured"}])
        gpu_count, gpu_type = 0, None
        try:
            catalog = await self.services.providers.catalog(instance["provider"])
            machine = catalog.regions[instance["region"]].machine_types[instance["machine_type"]]
            gpu_count, gpu_type = machine.gpu_count, machine.gpu_type
        except Exception:  # noqa: BLE001 - an instance outliving its catalog entry: no GPU expectations
            pass
        role = "subject"
        if suite == "network":
            role = "client" if index == 0 else "server"
        return {"instance_id": instance_id, "role": role, "name": instance["name"], "provider": instance["provider"],
                "region": instance["region"], "zone": instance.get("zone"), "machine_type": instance["machine_type"],
                "image": instance.get("image") or instance.get("snapshot_id"), "gpu_count": gpu_count,
                "gpu_type": gpu_type}

    # --- cancelling -----------------------------------------------------------------------------
    async def cancel(self, principal: Principal, run_id: str) -> dict[str, Any]:
        doc = await self.get(principal, run_id)
        if doc["status"] in QA_RUN_FINAL_STATUSES:
            raise Problem(409, "qa_run_finished", f"QA run is {doc['status']}",
                          f"QA run {run_id} already ended ({doc['status']})", current_status=doc["status"])
        if not await self.repo.request_cancel(run_id, principal.subject):
            raise Problem(409, "already_cancelling", "QA run is being cancelled",
                          f"a cancel of QA run {run_id} is already under way", current_status=doc["status"])
        await self.services.events.add(run_id, "qa.cancel_requested", f"cancel requested by {principal.subject}")
        return doc

    # --- history and baselines ----------------------------------------------------------------
    async def history(self, principal: Principal, suite: str, check: str, *, provider: str | None,
                      machine_type: str | None, limit: int) -> dict[str, Any]:
        definition = SUITES[suite]
        if check not in definition.check_index:
            raise field_problem("check", f"the {suite} suite has no check '{check}'; its checks: "
                                         f"{', '.join(definition.check_index)}")
        # comparable results only: a network result against onebox's host is not one of a machine type
        query: dict[str, Any] = {"suite": suite, "check": check, "run_status": {"$in": ["passed", "failed"]},
                                 "comparable": True, **owner_filter(principal)}
        if provider:
            query["provider"] = provider
        if machine_type:
            query["machine_type"] = machine_type
        items = await self.repo.history(query, limit)
        settings = self.services.settings
        baselines = []
        for provider_name, machine in sorted({(i["provider"], i["machine_type"]) for i in items}):
            found = await self.repo.baseline_for(suite, definition.check(check), provider_name, machine,
                                                 runs=settings.qa_baseline_runs, min_runs=settings.qa_baseline_min_runs)
            if found is not None:
                baselines.append({"provider": provider_name, "machine_type": machine, **found.as_doc()})
        c = definition.check(check)
        return {"suite": suite, "check": check, "unit": c.unit, "better": c.better, "items": items,
                "baselines": baselines}

    def _measure(self, suite: str, check: str):
        definition = SUITES.get(suite)
        if definition is None:
            raise field_problem("suite", f"unknown suite '{suite}'; suites: {', '.join(SUITES)}")
        if check not in definition.check_index:
            raise field_problem("check", f"the {suite} suite has no check '{check}'")
        found = definition.check(check)
        if found.kind != "measure":
            raise field_problem("check", f"'{check}' is a pass/fail check: it has no value to compare")
        return found

    async def set_baseline(self, admin: Principal, suite: str, check: str, provider: str, machine_type: str,
                           value: float, tolerance_percent: float | None) -> dict[str, Any]:
        found = self._measure(suite, check)
        if provider not in ("aws", "gcp", "azure", "local", "qemu"):
            raise field_problem("provider", "one of aws, gcp, azure, local, qemu")
        tolerance = found.tolerance_percent if tolerance_percent is None else tolerance_percent
        return await self.repo.set_admin_baseline(suite, check, provider, machine_type, value, tolerance,
                                                  admin.subject)

    async def delete_baseline(self, suite: str, check: str, provider: str, machine_type: str) -> None:
        self._measure(suite, check)
        if not await self.repo.delete_admin_baseline(suite, check, provider, machine_type):
            raise not_found("baseline", f"{suite}/{check}/{provider}/{machine_type}")
