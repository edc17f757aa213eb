"""Typed, validated settings: config.yaml, then environment variables, then explicit overrides.

This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, cast, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

ROOT = Path(__file__).resolve().parent.parent
CONFIG_FILE = ROOT / "config.yaml"
# Resolved, so a checkout whose .local is a symlink (a worktree sharing the servers) names the same
# paths as the servers it started (their PID files are checked against these).
LOCAL_DIR = (ROOT / ".local").resolve()
# Written by `make infra-up` with the generated local Mongo credentials, and by `make run` with the
# local JWT secret and service keys; read as environment defaults so `python main.py` works
# without exporting anything.
LOCAL_ENV_FILE = LOCAL_DIR / "infra.env"
LOCAL_AUTH_FILE = LOCAL_DIR / "auth.env"

ServiceName = Literal["order", "payment", "inventory", "notification", "orchestrator", "monitoring"]
SERVICE_NAMES: tuple[str, ...] = get_args(ServiceName)
ENVIRONMENTS = ("development", "test", "production")
ENV_PREFIX = "APP__"


class ConfigError(Exception):
    """Configuration is missing or invalid; the message names the offending key."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(min_length=1)
    topic_partitions: int = Field(ge=1, le=1000)
    replication_factor: int = Field(ge=1, le=10)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    linger_ms: int = Field(ge=0, le=1000)
    delivery_timeout_ms: int = Field(ge=1000)
    session_timeout_ms: int = Field(ge=1000)
    # How long a consumer may go between polls before the group drops it. Outages of Mongo are
    # waited out inside the handler loop, so this is long.
    max_poll_interval_ms: int = Field(ge=1000)
    # What a consumer fetches ahead of its handler. librdkafka's default (64 MB) fills up in a
    # backlog and stays in every worker's RSS; a batch of 500 events is ~0.5 MB.
    consumer_queue_kb: int = Field(ge=256, le=2_097_151)
    # Prepended to every topic name, so test runs never share topics with `make run`.
    topic_prefix: str = Field(default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=40)
    # True when KAFKA_BOOTSTRAP_SERVERS points at a broker we must not start or stop.
    external: bool = False


class MongoSettings(_Section):
    uri: str = Field(min_length=1)
    username: str | None = None
    password: SecretStr | None = None
    server_selection_timeout_ms: int = Field(ge=100)
    socket_timeout_ms: int = Field(ge=100)
    external: bool = False


class ConsumerSettings(_Section):
    max_attempts: int = Field(ge=1, le=100)
    backoff_base_s: float = Field(ge=0)
    backoff_max_s: float = Field(ge=0)
    # The most events a batch handler takes in one call (each fetched batch, each linger).
    max_batch: int = Field(ge=1, le=10_000)
    # How long an inbox (run_worker(inbox=True)) keeps a handled event id, and how often it is pruned.
    inbox_retention_s: float = Field(gt=0)
    inbox_prune_interval_s: float = Field(gt=0)
    # How long a service's worker waits, once an event has come, for more to handle in the same
    # batch (one bulk write for all); a service not named takes only what is already fetched.
    # Only workers off the saga's path should wait: every wait on the path adds to each order.
    batch_linger_ms: dict[ServiceName, Annotated[int, Field(ge=0, le=5000)]]

    def linger_s(self, service: str | None) -> float:
        """The batch linger of ``service``'s worker, in seconds."""
        return self.batch_linger_ms.get(cast(ServiceName, service), 0) / 1000


class OutboxSettings(_Section):
    retry_interval_s: float = Field(gt=0)
    # An API process holds at most this many outbox documents to publish or clear; a write that
    # would queue more waits up to api_backlog_wait_s for the relay, then gets 503 and Retry-After.
    api_backlog_limit: int = Field(ge=10)
    api_backlog_wait_s: float = Field(ge=0, le=60)
    # How long the relay gathers acknowledgements before clearing them from their documents in one
    # bulk write (sooner once it has 50). Clearing is off every order's path: a longer wait costs
    # nothing but duplicates after a crash, which consumers drop anyway.
    clear_interval_s: float = Field(gt=0, le=10)
    # A worker's relay rescans for a crashed process's unpublished events this often, and gives
    # one scan this long (the store may read the whole collection for it).
    recover_interval_s: float = Field(gt=0)
    scan_timeout_s: float = Field(gt=0)


class SagaSettings(_Section):
    payment_timeout_s: float = Field(gt=0)
    order_timeout_s: float = Field(gt=0)
    timer_interval_s: float = Field(gt=0)
    # New orders wait in Kafka while this many sagas are in flight (0: no limit). Work in
    # flight costs every write of the stock it holds; see services/orchestrator/admission.py.
    max_in_flight: int = Field(ge=0)
    # Within that ceiling, as many as keep sagas ending within this time (None: half the payment
    # deadline or a quarter of the order deadline, whichever is shorter); see SagaWindow.
    admission_target_s: float | None = Field(gt=0)
    # How often the sagas in flight are counted for the admission of new orders.
    admission_count_interval_s: float = Field(gt=0)
    # The most due deadlines one timer pass fires.
    timer_batch: int = Field(ge=1)
    # Timer writes wait this long to go out together (see WriteBehind).
    timer_flush_interval_s: float = Field(gt=0)
    # How often the worker looks for active sagas that lost their timer (a crash between two writes).
    reconcile_interval_s: float = Field(gt=0)
    # Sagas the worker keeps in memory (a few KB each).
    cache_size: int = Field(ge=0)
    # A saga write that keeps finding the saga changed by another writer gives up after this many.
    max_write_attempts: int = Field(ge=1)

    @property
    def admission_target(self) -> float:
        # Under the payment deadline: a box slowed by other work must shrink the window while sagas
        # still end in time, not after payment commands have begun to wait past their deadline.
        return self.admission_target_s or min(self.payment_timeout_s / 2, self.order_timeout_s / 4)


class OrderSettings(_Section):
    # How often the worker deletes expired idempotency keys.
    idempotency_key_purge_interval_s: float = Field(gt=0)


class InventorySettings(_Section):
    reservation_ttl_s: float = Field(gt=0)
    expiry_interval_s: float = Field(gt=0)


class PaymentSettings(_Section):
    decline_cards: tuple[str, ...]
    amount_limit: float = Field(gt=0)
    latency_ms: int = Field(ge=0)
    failure_rate: float = Field(ge=0, le=1)
    # The simulated gateway's own books (services/payment/ledger.py): every charge attempt and
    # refund, shared by all payment processes and kept across restarts. Empty: in memory only.
    ledger_path: str
    # A batch of saga charges is charged and its replies written this many at a time.
    charges_per_write: int = Field(ge=1, le=1000)
    # The card vault's Fernet key (PAYMENT_VAULT_KEY): card numbers are kept encrypted with it,
    # in the payment service only, until the payment is settled or the saga ends.
    vault_key: SecretStr | None = None
    # A vault entry no payment used is deleted after this long (longer than any saga lives).
    vault_ttl_s: float = Field(gt=0)


class RateLimitSettings(_Section):
    """Limits on writes (shared/ratelimits.py), counted in the store so every process and replica
    shares them; "N/second|minute|hour" strings (Flask-Limiter's notation)."""

    enabled: bool
    # Every write (POST, PUT, PATCH, DELETE) of one customer, and of one API key.
    customer_writes: str = Field(min_length=1)
    key_writes: str = Field(min_length=1)
    # Every write from one client address, whoever sends it.
    address_writes: str = Field(min_length=1)
    # On top of the above: placing orders, per customer; REST reservations (stock hoarding) and
    # REST charges (card probing), per principal.
    order_creation: str = Field(min_length=1)
    reservations: str = Field(min_length=1)
    card_charges: str = Field(min_length=1)


class NotificationSettings(_Section):
    sender: Literal["file", "log", "smtp"]
    file_path: str
    smtp_host: str
    smtp_port: int = Field(ge=1, le=65535)
    smtp_from: str
    # A batch of notifications is sent and stored as sent this many at a time.
    sends_per_write: int = Field(ge=1, le=1000)


class AlertThresholds(_Section):
    error_rate: float = Field(ge=0, le=1)
    # The error rate is taken over this many minutes (monitoring keeps an hour of minute figures).
    error_rate_window_min: int = Field(ge=1, le=60)
    slow_order_s: float = Field(gt=0)
    stuck_saga_s: float = Field(gt=0)
    dlq_growth: int = Field(ge=1)


class MonitoringSettings(_Section):
    health_poll_interval_s: float = Field(gt=0)
    health_timeout_s: float = Field(gt=0)
    timeline_limit: int = Field(ge=1)
    # The store sorts the recent-events feed in memory on every read, so it is kept short
    # (/events serves up to 500).
    recent_events_kept: int = Field(ge=1)
    # Housekeeping reads at most this many timelines of open orders per pass.
    open_orders_checked: int = Field(ge=1)
    # How often the worker's housekeeping (trim the feed and old minutes, forget ended open orders)
    # runs at most, and how often it writes its buffered figures and recent events.
    housekeeping_interval_s: float = Field(gt=0)
    flush_interval_s: float = Field(gt=0)
    alerts: AlertThresholds


class HttpSettings(_Section):
    max_content_length: int = Field(ge=1024)
    workers: int = Field(ge=1, le=64)
    threads: int = Field(ge=1, le=64)
    # Browser origins allowed to call the APIs from their pages (CORS); empty: none.
    cors_origins: tuple[str, ...]
    # Host headers answered (others get 400); empty: any.
    trusted_hosts: tuple[str, ...]
    # How many proxies in front of the service set X-Forwarded-For/-Proto/-Host (0: trust none).
    proxies: int = Field(ge=0, le=5)
    # Behind a TLS-terminating proxy: answer plain-HTTP requests with a 308 to https (not /health).
    https_redirect: bool
    # Compress answers of at least this many bytes for clients that accept it (0: never).
    compress_min_bytes: int = Field(ge=0)


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    format: Literal["json", "text"]


class AuthSettings(_Section):
    """Who may call the APIs (shared/auth.py). Secrets come from the environment only."""

    # "off" answers every caller as an admin: throwaway development only, refused in production.
    mode: Literal["on", "off"]
    # HS256 tokens of a development identity provider (JWT_SECRET).
    jwt_secret: SecretStr | None = None
    # RS256/ES256 tokens of a real identity provider, checked against its published keys.
    jwks_url: str | None = None
    algorithms: tuple[Literal["HS256", "RS256", "ES256"], ...] = Field(min_length=1)
    issuer: str = Field(min_length=1)
    audience: str = Field(min_length=1)
    clock_skew_s: float = Field(ge=0, le=300)
    # How long a process trusts an API key lookup: a revoked key is refused everywhere after this.
    key_cache_s: float = Field(ge=0, le=300)
    # The database holding the API keys, shared by every service.
    database: str = Field(min_length=1, max_length=60)
    # This service's own key for the calls it makes (<SERVICE>_API_KEY), e.g. monitoring's polling.
    service_key: SecretStr | None = None

    @field_validator("jwt_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("JWT_SECRET must be at least 32 characters (HS256 needs a 256-bit key)")
        return value


class ServiceEndpoint(_Section):
    host: str
    port: int = Field(ge=1, le=65535)
    database: str = Field(min_length=1, max_length=60)
    # Where other processes reach the service when that is not host:port (e.g. in containers,
    # which bind 0.0.0.0 and are called by their compose service name).
    base_url: str | None = None

    @property
    def url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}"


class Settings(_Section):
    environment: Literal["development", "test", "production"]
    service: str | None = None
    kafka: KafkaSettings
    mongo: MongoSettings
    consumer: ConsumerSettings
    outbox: OutboxSettings
    saga: SagaSettings
    order: OrderSettings
    inventory: InventorySettings
    payment: PaymentSettings
    notification: NotificationSettings
    monitoring: MonitoringSettings
    http: HttpSettings
    logging: LoggingSettings
    auth: AuthSettings
    rate_limits: RateLimitSettings
    services: dict[str, ServiceEndpoint]
    # Set under gunicorn with several workers so /metrics adds up every worker's figures.
    prometheus_multiproc_dir: str | None = None
    # A consumer worker in a container of its own serves its metrics on this port.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)

    @model_validator(mode="after")
    def _auth_on_in_production(self) -> Settings:
        if self.environment == "production" and self.auth.mode == "off":
            raise ValueError("AUTH_MODE=off is for development only; production services refuse to start with it")
        return self

    @property
    def this(self) -> ServiceEndpoint:
        """Return the endpoint settings of the service these settings were loaded for."""
        if self.service is None:
            raise ConfigError("settings were loaded without a service name")
        return self.services[self.service]


def load_settings(
    service: str | None = None,
    *,
    environment: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Load settings for ``service`` from the YAML file, the environment and ``overrides``."""
    if service is not None and service not in SERVICE_NAMES:
        raise ConfigError(f"unknown service {service!r}; expected one of {', '.join(SERVICE_NAMES)}")
    env = dict(process_env() if env is None else env)
    environment = environment or env.get("ENVIRONMENT", "development")
    if environment not in ENVIRONMENTS:
        raise ConfigError(f"ENVIRONMENT must be one of {', '.join(ENVIRONMENTS)}, not {environment!r}")

    layers = _read_config_file(config_file or Path(env.get("APP_CONFIG_FILE", CONFIG_FILE)))
    data = copy.deepcopy(layers.get("default") or {})
    _deep_merge(data, layers.get(environment) or {})
    _apply_env(data, env)
    if service is not None and env.get(f"{service.upper()}_API_KEY"):
        data.setdefault("auth", {})["service_key"] = env[f"{service.upper()}_API_KEY"]
    if overrides:
        _deep_merge(data, copy.deepcopy(dict(overrides)))
    data["environment"] = environment
    data["service"] = service
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False))
        raise ConfigError(f"invalid configuration: {problems}") from err


def process_env() -> dict[str, str]:
    """Return the environment with the local infra credentials file as lower-priority defaults."""
    merged = read_env_file(LOCAL_ENV_FILE)
    merged.update(read_env_file(LOCAL_AUTH_FILE))
    merged.update(os.environ)
    return merged


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a KEY=VALUE file; a missing file is empty."""
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip().strip("'\"")
    return values


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"config file not found: {path}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"config file {path} must map environment names to sections")
    return loaded


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    kafka, mongo, logging_ = (data.setdefault(k, {}) for k in ("kafka", "mongo", "logging"))
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        kafka["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
        kafka["external"] = True
    if env.get("MONGO_URI"):
        mongo["uri"] = env["MONGO_URI"]
        mongo["external"] = True
    for key in ("username", "password"):
        if env.get(f"MONGO_{key.upper()}"):
            mongo[key] = env[f"MONGO_{key.upper()}"]
    for key in ("level", "format"):
        if env.get(f"LOG_{key.upper()}"):
            logging_[key] = env[f"LOG_{key.upper()}"].lower() if key == "format" else env[f"LOG_{key.upper()}"]
    auth = data.setdefault("auth", {})
    for key in ("AUTH_MODE", "JWT_SECRET", "JWKS_URL", "AUTH_DATABASE"):
        if env.get(key):
            auth[key.lower().removeprefix("auth_")] = env[key]
    if env.get("PAYMENT_VAULT_KEY"):
        data.setdefault("payment", {})["vault_key"] = env["PAYMENT_VAULT_KEY"]
    if env.get("WORKER_METRICS_PORT"):
        data["worker_metrics_port"] = env["WORKER_METRICS_PORT"]
    if env.get("PROMETHEUS_MULTIPROC_DIR"):
        data["prometheus_multiproc_dir"] = env["PROMETHEUS_MULTIPROC_DIR"]
    services = data.setdefault("services", {})
    for name in SERVICE_NAMES:
        for key in ("host", "port", "database", "base_url"):
            value = env.get(f"{name.upper()}_{key.upper()}") or (
                env.get(f"{name.upper()}_MONGO_DATABASE") if key == "database" else None
            )
            if value:
                services.setdefault(name, {})[key] = value
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            path = [part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part]
            if path:
                _set_path(data, path, _env_value(name, value))


def _env_value(name: str, value: str) -> Any:
    """Keep an override as the string it is (pydantic converts numbers and booleans), but read
    lists and objects as JSON. YAML would turn 05011 into an octal 2569 and cut "s3cret #1" at the #."""
    if value.strip().startswith(("[", "{")):
        try:
            return json.loads(value)
        except ValueError as err:
            raise ConfigError(f"{name} must be valid JSON: {err}") from err
    return value


def _set_path(data: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        data = data.setdefault(part, {})
    data[path[-1]] = value


def _deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
