"""onebox's one settings object.

Every knob is an environment variable prefixed ``ONEBOX_`` (``ONEBOX_MONGODB_URL``,
``ONEBOX_JWT_SECRET``, …), read once by ``get_settings()``. Secrets are
``SecretStr`` so they never show up in a repr, a log line or a response.
"""

from __future__ import annotations

import functools
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
MIN_HS256_SECRET_BYTES = 32
# A deployment id is a tag value on AWS and Azure and a label value on GCP: the narrowest of the three.
DEPLOYMENT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"

# Feature flags the web dashboard reads from GET /v1/features; ONEBOX_FEATURES overrides them.
FEATURE_DEFAULTS: dict[str, bool] = {
    "instances_ui": True,  # the Instances page (list, create, detail) in the sidebar
    "snapshots": True,  # the Snapshots page and the snapshot buttons
    "gpu_metrics": True,  # per-GPU charts on an instance's page
}


class JwtKey(BaseModel):
    """One verification key: pinned to one algorithm."""

    alg: Literal["HS256", "RS256", "ES256"]
    secret: SecretStr | None = None  # HS256
    public_key: str | None = None  # RS256/ES256, PEM


class QuotaLimits(BaseModel):
    max_instances: int | None = Field(default=None, ge=0)
    max_vcpus: int | None = Field(default=None, ge=0)
    max_snapshots: int | None = Field(default=None, ge=0)


class GoofysBucket(BaseModel):
    bucket: str
    mountpoint: str
    endpoint: str | None = None


PowerAction = Literal["stop", "delete"]


class PolicyLimits(BaseModel):
    """Ceilings and defaults for the lifecycle of users' instances (TTL, idle autostop, stopped-then-deleted).

    Used in three layers, the most specific first: a user's policy, the ``_default`` policy (both set by
    admins through ``PUT /v1/admin/policies/{user}``), then ``ONEBOX_POLICY``. A field left null is taken
    from the next layer. ``max_*`` are ceilings a user may only go under; ``default_*`` apply to instances
    that set nothing themselves."""

    model_config = {"extra": "forbid", "json_schema_extra": {"examples": [
        {"max_ttl_seconds": 86400, "default_ttl_seconds": 28800, "max_idle_minutes": 120, "default_idle_minutes": 60,
         "allowed_on_idle": ["stop"], "max_stopped_days": 14}]}}

    max_ttl_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 86400,
                                        description="longest run before the TTL rule acts")
    default_ttl_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 86400)
    default_on_expiry: PowerAction | None = Field(default=None, description="what the TTL does; stop when unset")
    max_idle_minutes: int | None = Field(default=None, ge=1, le=7 * 1440,
                                         description="longest idle window before the idle rule acts")
    default_idle_minutes: int | None = Field(default=None, ge=1, le=7 * 1440)
    allowed_on_idle: list[PowerAction] | None = Field(default=None, min_length=1, max_length=2,
                                                      description="what users may choose for on_idle")
    default_on_idle: PowerAction | None = None
    max_stopped_days: int | None = Field(default=None, ge=1, le=3650,
                                         description="longest an instance may stay stopped before it is deleted")
    default_stopped_days: int | None = Field(default=None, ge=1, le=3650)

    @model_validator(mode="after")
    def _defaults_within_ceilings(self) -> "PolicyLimits":
        for field, ceiling in (("default_ttl_seconds", "max_ttl_seconds"),
                               ("default_idle_minutes", "max_idle_minutes"),
                               ("default_stopped_days", "max_stopped_days")):
            value, limit = getattr(self, field), getattr(self, ceiling)
            if value is not None and limit is not None and value > limit:
                raise ValueError(f"{field} ({value}) is above {ceiling} ({limit})")
        if self.allowed_on_idle is not None and self.default_on_idle is not None \
                and self.default_on_idle not in self.allowed_on_idle:
            raise ValueError(f"default_on_idle ({self.default_on_idle}) is not in allowed_on_idle")
        return self


class Settings(BaseSettings):
    # hide_input_in_errors: a refused setting must not print the others (secrets among them) at start.
    model_config = SettingsConfigDict(env_prefix="ONEBOX_", extra="ignore", hide_input_in_errors=True)

    # --- where things live -------------------------------------------------
    data_dir: Path = Field(default=REPO_ROOT / ".data", description="state of the embedded default")

    # --- database -----------------------------------------------------------
    mongodb_url: str | None = Field(default=None, description="any MongoDB 7+; unset = the embedded database")
    database: str = "onebox"
    embedded_db_address: str = "127.0.0.1:27018"
    embedded_db_home: Path = Field(default=REPO_ROOT / ".bin" / "mongo-server",
                                   description="the embedded database's jars (`make mongo-server`)")
    embedded_db_cache_mb: int = Field(default=1024, ge=16, description="the embedded database's page cache; "
                                                                      "size it to hold the data")
    embedded_db_heap_mb: int | None = Field(default=None, ge=256, description="the embedded database's Java heap; "
                                                                             "unset = twice the cache")
    db_timeout_seconds: float = Field(default=3.0, description="the database budget of one request (all its calls, "
                                                               "server selection included): 503 past it")

    # --- HTTP ---------------------------------------------------------------
    public_url: str = Field(default="http://127.0.0.1:8000", description="how agents on VMs reach this API")
    max_body_bytes: int = 256 * 1024
    slow_request_seconds: float = Field(default=1.0, description="log a warning for requests slower than this")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default=[], description="origins an external frontend may call the API from (exact, comma-separated); "
                                "empty = same origin only; '*' is refused")

    # --- web dashboard ------------------------------------------------------
    dev_login: bool = Field(default=False, description="development only: the sign-in page may mint a token for a "
                                                        "local user (POST /v1/dev/token); embedded database only")
    events_stream_poll_seconds: float = Field(default=1.0, gt=0, description="how often an open event stream "
                                                                            "reads the database")
    events_stream_keepalive_seconds: float = Field(default=15.0, gt=0, description="keep-alive comment after this "
                                                                                  "much silence")
    events_stream_max_seconds: float = Field(default=900.0, gt=0, description="a stream ends after this long; the "
                                                                              "client reconnects with Last-Event-ID")
    features: dict[str, bool] = Field(
        default={}, description='JSON {"instances_ui": false, ...}: feature flags over the defaults '
                                '(GET /v1/features); unknown names are refused')

    # --- tokens -------------------------------------------------------------
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_secret: SecretStr | None = Field(default=None, description="HS256 secret; unset = generated under data_dir")
    jwt_public_key: str | None = Field(default=None, description="PEM, for RS256/ES256")
    jwt_private_key: SecretStr | None = Field(default=None, description="PEM, only to mint tokens with RS256/ES256")
    jwt_keys: dict[str, JwtKey] = Field(
        default={}, description='JSON {"<kid>": {"alg": ..., "secret" or "public_key": ...}}: several active keys, '
                                'selected by the token\'s kid (rotation); unset = the single key above')
    jwt_signing_kid: str | None = Field(default=None, description="which of jwt_keys `onebox token` signs with")
    jwks_url: str | None = Field(default=None, description="an identity provider's JWKS (https, allowlisted host)")
    jwks_allowed_hosts: Annotated[list[str], NoDecode] = Field(default=[], description="hosts jwks_url may name")
    jwks_ca_bundle: str | None = Field(default=None, description="PEM file to trust for jwks_url (private CAs)")
    jwks_timeout_seconds: float = 5.0
    jwks_refresh_seconds: float = 600.0
    jwt_issuer: str = "onebox"
    jwt_audience: str = "onebox"
    jwt_leeway_seconds: int = 30

    # --- quotas and limits --------------------------------------------------
    quota_max_instances: int = Field(default=10, ge=0, description="live instances per user")
    quota_max_vcpus: int = Field(default=64, ge=0, description="vCPUs of live instances per user")
    quota_max_snapshots: int = Field(default=20, ge=0, description="snapshots per user")
    quota_overrides: dict[str, QuotaLimits] = Field(default={}, description='JSON {"<user>": {"max_instances": 50}}')
    rate_limit_per_minute: int = Field(default=600, ge=1, description="requests per user per minute, all processes")

    url_allowlist: Annotated[list[str], NoDecode] = Field(
        default=[], description="hosts, addresses or CIDRs user-supplied URLs may point at even if internal")

    # --- agents and metrics ----------------------------------------------
    agent_interval_seconds: int = Field(default=30, ge=1, le=3600, description="how often agents report")
    agent_token_ttl_days: int = 365
    agent_revocation_refresh_seconds: float = Field(
        default=2.0, gt=0, description="how often each API process reads newly withdrawn agent tokens: a deleted "
                                       "instance's agent is refused everywhere within this time")
    metrics_retention_days: float = 7.0
    maintenance_seconds: float = Field(default=600.0, description="how often workers purge old metrics")
    reaper_enabled: bool = True
    reaper_interval_seconds: float = Field(default=300.0, gt=0, description="how often one worker (a lease "
                                                                          "picks which) reaps")
    reaper_grace_seconds: float = Field(default=600.0, description="how long an ended record must be unchanged "
                                                                   "before its left-over resources are removed")
    metrics_max_future_seconds: int = 300

    # --- day-2 lifecycle: stop/start/reboot, TTL, idle autostop, policies (app.policies) ------------
    stop_timeout_seconds: float = Field(default=600.0, gt=0, description="how long a stop may take before it "
                                                                         "is retried (start and reboot use "
                                                                         "wait_running_timeout_seconds)")
    scheduler_enabled: bool = Field(default=True, description="the scheduler (one process at a time) that "
                                                              "applies TTL, idle and stopped-too-long rules")
    scheduler_interval_seconds: float = Field(default=60.0, gt=0, description="how often it checks every instance")
    policy: PolicyLimits = Field(default_factory=PolicyLimits,
                                 description='JSON {"max_ttl_seconds": 86400, ...}: the policy of everyone, under '
                                             'the _default and per-user policies admins set through the API')
    policy_time_scale: float = Field(default=1.0, gt=0, le=1.0,
                                     description="tests and demos only: every policy duration (TTL, idle window, "
                                                 "stopped days, warning leads) is multiplied by this")
    ttl_warning_seconds: Annotated[list[int], NoDecode] = Field(
        default=[3600, 600], description="warning events this long before a TTL acts (comma-separated)")
    idle_cpu_percent: float = Field(default=10.0, ge=0, le=100, description="busy at or above this CPU use")
    idle_gpu_percent: float = Field(default=5.0, ge=0, le=100, description="busy at or above this use of any GPU")
    idle_gpu_memory_percent: float = Field(default=10.0, ge=0, le=100,
                                           description="busy at or above this share of any GPU's memory in use")
    idle_gpu_power_percent: float = Field(default=30.0, ge=0, le=100,
                                          description="busy at or above this share of any GPU's power limit")
    idle_network_bytes_per_second: float = Field(default=50_000, ge=0, description="busy at or above this "
                                                                                   "traffic, in and out")
    idle_disk_bytes_per_second: float = Field(default=100_000, ge=0, description="busy at or above this disk "
                                                                                 "I/O, read and written")
    idle_ssh_sessions: int = Field(default=1, ge=1, description="busy with this many logged-in SSH sessions")

    # --- providers ----------------------------------------------------------
    providers: Annotated[list[str], NoDecode] = Field(default=["local"], description="enabled providers")
    provider_threads: int = Field(default=16, description="cloud SDK calls in flight at once per process")
    local_ssh_port: int = 2222
    local_address_first: int = 10  # 127.0.0.N, N from first to last
    local_address_last: int = 250
    local_create_delay_seconds: float = Field(default=0.0, description="pretend the 'cloud' is slow (tests, demos)")
    inject_cloud_latency_seconds: float = Field(
        default=0.0, ge=0, description="wait this long before every provider call (scale-out drills and benchmarks)")

    # --- configuration management ---------------------------------------
    configure: Literal["ansible", "skip"] = Field(
        default="ansible", description="skip = no Ansible run; an event says it was skipped (development)"
    )
    configure_timeout_seconds: float = 900.0
    ssh_endpoint_map: dict[str, str] = Field(
        default={}, description='JSON {"<public ip>" or "*": "host:port"}: reach instances through another address '
                                '(a bastion tunnel, or a local sshd standing in for a VM in tests)')
    ssh_endpoint_kind: Literal["vm", "local"] = Field(
        default="vm", description="what a mapped endpoint is: a VM, or a local-provider sshd standing in for one")
    goofys_url: str | None = Field(default=None, description="where to download goofys; unset = not installed")
    goofys_sha256: str | None = None
    goofys_buckets: list[GoofysBucket] = Field(default_factory=list, description="JSON list of {bucket, mountpoint, endpoint?}")

    # --- QA runs (app/qa) ---------------------------------------------------
    qa_baseline_runs: int = Field(default=5, ge=1, le=100, description="a derived baseline is the median of this "
                                                                       "many latest passed runs")
    qa_baseline_min_runs: int = Field(default=3, ge=1, le=100, description="passed runs needed before a baseline "
                                                                           "is derived from them")
    qa_host_address: str | None = Field(default=None, description="onebox's host as instances reach it: the far "
                                                                  "end of a one-instance network test (unset: "
                                                                  "127.0.0.1 for local instances, skipped elsewhere)")
    qa_iperf3_port: int = Field(default=5201, ge=1024, le=65535, description="the iperf3 server's port on an instance")
    qa_prepare_timeout_seconds: float = Field(default=900.0, gt=0, description="installing a run's tools (Ansible)")
    qa_install: Literal["when_missing", "always"] = Field(
        default="when_missing", description="when a run's tools are installed with playbooks/qa.yml: only when one "
                                            "is missing on an instance, or on every run")

    # --- worker -------------------------------------------------------------
    worker_concurrency: int = 8
    lease_seconds: float = 30.0
    poll_seconds: float = 0.5
    max_attempts: int = 5
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 120.0
    wait_running_timeout_seconds: float = 600.0
    shutdown_grace_seconds: float = Field(
        default=8.0, ge=0, description="on SIGTERM, how long running steps may take to finish before their "
                                       "jobs are handed back (fits Docker's 10 s stop timeout)")
    test_kill_at: Annotated[list[str], NoDecode] = Field(
        default=[], description="crash drills only: SIGKILL this worker at these steps (`create`, "
                                "`create:before`, `cleanup`, …); empty = never")
    inject_faults: Annotated[list[str], NoDecode] = Field(
        default=[], description="step names that fail right after doing their work (tests and failure drills)"
    )

    # --- AWS ----------------------------------------------------------------
    aws_regions: Annotated[list[str], NoDecode] = Field(default=["us-east-1"], description="regions offered")
    aws_endpoint_url: str | None = Field(default=None, description="e.g. a moto server; AWS_ENDPOINT_URL works too")
    aws_ssh_cidr: str = Field(default="0.0.0.0/0", description="who may reach port 22 of new instances")
    aws_reboot_on_snapshot: bool = False
    aws_poll_seconds: float = Field(default=5.0, gt=0, description="between state reads while waiting")

    # --- GCP ----------------------------------------------------------------
    gcp_project: str | None = Field(default=None, description="the project VMs are created in")
    gcp_zones: Annotated[list[str], NoDecode] = Field(default=["us-central1-a"], description="zones offered")
    gcp_api_endpoint: str | None = Field(default=None, description="e.g. the local GCE fake, for development")
    gcp_ssh_cidr: str = "0.0.0.0/0"
    gcp_anonymous_credentials: bool = Field(default=False, description="development against the GCE fake only")
    gcp_poll_seconds: float = Field(default=2.0, ge=0, description="between operation and state reads while waiting")

    # --- qemu (real VMs on this machine) ---------------------------------
    qemu_accel: Literal["auto", "kvm", "tcg"] = Field(
        default="auto", description="auto = KVM if a trial boot proves it runs a guest, else TCG (slow); or force one")
    qemu_image_dir: Path | None = Field(default=None, description="built guest images; unset = data_dir/qemu/images")
    qemu_ssh_port_first: int = Field(default=10022, ge=1024, le=65535, description="SSH of each VM is forwarded "
                                                                                  "from a free 127.0.0.1 port")
    qemu_ssh_port_last: int = Field(default=10221, ge=1024, le=65535)
    qemu_private_mcast: str = Field(default="230.0.77.1:17701", description="the VMs' private network: a multicast "
                                                                            "group:port on loopback, one per deployment")
    qemu_private_network: str = Field(default="10.77.0.0/24", description="private addresses of the VMs")
    qemu_tb_size_mb: int = Field(default=128, ge=16, description="TCG's translation cache per VM")
    qemu_agent_url: str | None = Field(default=None, description="how agents in qemu VMs reach this API; unset = "
                                                                 "public_url, a loopback host replaced by 10.0.2.2")
    qemu_boot_timeout_seconds: float = Field(default=600.0, gt=0, description="how long configuration waits for a "
                                                                              "qemu VM's sshd (a TCG boot is slow)")
    qemu_shutdown_grace_seconds: float = Field(default=60.0, ge=0, description="how long a stop waits for the guest "
                                                                               "to power off before ending QEMU")

    inject_delays: dict[str, float] = Field(
        default={}, description='JSON {"step": seconds}: pause after a step\'s work, before it is recorded (kill drills)'
    )

    # --- Azure --------------------------------------------------------------
    azure_subscription_id: str | None = None
    azure_resource_group: str = "onebox"
    azure_locations: Annotated[list[str], NoDecode] = Field(default=["eastus"], description="locations offered")
    azure_base_url: str | None = Field(default=None, description="e.g. the local ARM fake, for development")
    azure_ca_bundle: str | None = Field(default=None, description="PEM file to trust (the ARM fake's CA)")
    azure_static_token: SecretStr | None = Field(default=None, description="development against the ARM fake only")
    azure_ssh_cidr: str = "0.0.0.0/0"
    azure_polling_interval: float = 5.0

    # --- costs and budgets (app/costs) ---------------------------------------
    jwt_team_claim: str = Field(default="team", description="the user token claim naming the user's team (budgets "
                                                            "per team); an admin's assignment wins over it")
    budget_warn_percent: float = Field(default=80.0, gt=0, le=100, description="default warn_at_percent of a budget")
    budget_min_horizon_hours: float = Field(
        default=24.0, gt=0, le=744, description="a create or start without a TTL is projected over this many hours")
    budget_watch_enabled: bool = Field(default=True, description="workers check budget thresholds (one at a time)")
    budget_check_seconds: float = Field(default=60.0, gt=0, description="how often one worker checks budgets")
    webhook_url: str | None = Field(default=None, description="budget alerts are POSTed here (HMAC-signed); SSRF-"
                                                              "checked like user URLs (ONEBOX_URL_ALLOWLIST)")
    webhook_secret: SecretStr | None = Field(default=None, description="the HMAC-SHA256 key of webhook signatures; "
                                                                       "required with webhook_url")
    webhook_timeout_seconds: float = Field(default=5.0, gt=0, description="one delivery attempt's time limit")
    webhook_max_attempts: int = Field(default=8, ge=1, le=50, description="attempts before a delivery is given up")
    webhook_backoff_seconds: float = Field(default=5.0, gt=0, description="the first retry's delay; doubled each "
                                                                          "time, at most an hour")
    # --- deployments sharing a cloud account ------------------------------
    deployment_id: str | None = Field(
        default=None, pattern=DEPLOYMENT_ID_PATTERN,
        description="this onebox deployment's name, tagged onebox-deployment on every cloud resource; the reaper "
                    "touches only its own deployment's; unset = generated once into <data_dir>/deployment-id")

    # --- placement: capacity failover ------------------------------------
    capacity_cooldown_seconds: float = Field(
        default=600.0, ge=0, description="after a capacity error, how long other launches of that machine type try "
                                         "that zone only after every other choice (0 = never held)")

    # --- observability: logs and Prometheus metrics ----------------------
    log_level: str = Field(default="INFO", description="the least severe level logged")
    log_format: Literal["json", "text"] = Field(default="json", description="json: one JSON object per line, with "
                                                                        "request, instance, job, step and worker ids")
    prometheus_dir: Path | None = Field(
        default=None, description="where every process of one host keeps its Prometheus counters, so that any API "
                                  "process answers GET /metrics for all of them; unset = <data_dir>/prometheus")
    prometheus_token: SecretStr | None = Field(default=None, description="when set, GET /metrics needs "
                                                                         "Authorization: Bearer <this token>")

    @field_validator("providers", "inject_faults", "test_kill_at", "aws_regions", "gcp_zones", "azure_locations",
                     "url_allowlist", "jwks_allowed_hosts", "cors_origins", "ttl_warning_seconds",
                     mode="before")
    @classmethod
    def _comma_list(cls, value):
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("prometheus_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        return None if value in ("", None) else value

    @field_validator("cors_origins")
    @classmethod
    def _no_wildcard_origin(cls, value: list[str]) -> list[str]:
        if "*" in value:
            raise ValueError("'*' cannot be allowed: the API takes credentials; list the origins")
        return [v.rstrip("/") for v in value]

    @model_validator(mode="after")
    def _webhook_is_signed_and_public(self) -> "Settings":
        if self.webhook_url is None:
            return self
        if self.webhook_secret is None or len(self.webhook_secret.get_secret_value()) < 16:
            raise ValueError("ONEBOX_WEBHOOK_URL needs ONEBOX_WEBHOOK_SECRET (at least 16 characters) to sign with")
        from app.validation import check_public_url

        try:
            check_public_url(self.webhook_url, self.url_allowlist)
        except ValueError as exc:
            raise ValueError(f"ONEBOX_WEBHOOK_URL {exc}") from None
        return self

    @field_validator("features")
    @classmethod
    def _known_features(cls, value: dict[str, bool]) -> dict[str, bool]:
        unknown = sorted(set(value) - set(FEATURE_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown feature flags {unknown}; known: {sorted(FEATURE_DEFAULTS)}")
        return value

    # --- derived ------------------------------------------------------------
    @property
    def feature_flags(self) -> dict[str, bool]:
        """Every flag with its value: the defaults, overridden by ``ONEBOX_FEATURES``."""
        return {**FEATURE_DEFAULTS, **self.features}

    @property
    def prometheus_path(self) -> Path:
        return self.prometheus_dir or self.data_dir / "prometheus"

    @property
    def embedded_db(self) -> bool:
        return self.mongodb_url is None

    @property
    def effective_mongodb_url(self) -> str:
        if self.mongodb_url:
            return self.mongodb_url
        # The embedded server has no sessions, hence no retryable writes.
        return f"mongodb://{self.embedded_db_address}/?retryWrites=false&directConnection=true"

    def deployment(self) -> str:
        """This deployment's id: configured, or generated once under data_dir and kept there.

        Every process sharing the data directory reads the same file (the first to start writes it, whole,
        with a link that fails if another process won). Processes that do not share one (containers) must
        be given ``ONEBOX_DEPLOYMENT_ID``."""
        if self.deployment_id is not None:
            return self.deployment_id
        path = self.data_dir / "deployment-id"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            draft = path.with_name(f".deployment-id.{os.getpid()}.{secrets.token_hex(4)}")
            draft.write_text("d" + secrets.token_hex(6) + "\n")
            try:
                os.link(draft, path)
            except FileExistsError:
                pass  # another process of this deployment wrote it first
            finally:
                draft.unlink()
        value = path.read_text().strip()
        if not re.match(DEPLOYMENT_ID_PATTERN, value):
            raise ValueError(f"{path} does not hold a deployment id ({DEPLOYMENT_ID_PATTERN}); fix or remove it")
        return value

    def hs256_secret(self) -> bytes:
        """The HS256 secret: configured, or generated once under data_dir (mode 0600)."""
        if self.jwt_secret is not None:
            secret = self.jwt_secret.get_secret_value().encode()
        else:
            path = self.data_dir / "jwt-secret"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secrets.token_urlsafe(48))
            secret = path.read_text().strip().encode()
        if len(secret) < MIN_HS256_SECRET_BYTES:
            raise ValueError(
                f"ONEBOX_JWT_SECRET is {len(secret)} bytes; HS256 needs at least {MIN_HS256_SECRET_BYTES}"
                " (generate one with: python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        return secret


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
