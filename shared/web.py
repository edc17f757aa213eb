"""Flask pieces every service shares: JSON errors, body parsing, health, metrics, request logs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, jsonify, redirect, request
from flask_compress import Compress
from flask_cors import CORS
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from pydantic import BaseModel, ValidationError
from pymongo.errors import ConnectionFailure, PyMongoError
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.middleware.proxy_fix import ProxyFix

from shared import audit, auth, openapi, ratelimits
from shared.apikeys import KeyCache, KeyStore, MongoKeyStore
from shared.config import HttpSettings, OutboxSettings, Settings
from shared.kafka_utils import PublishError
from shared.mongo import DatabaseUnavailable
from shared.outbox import OutboxRelay

logger = logging.getLogger(__name__)

Model = TypeVar("Model", bound=BaseModel)
HealthCheck = Callable[[], None]

HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "endpoint", "status"])
HTTP_SECONDS = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["method", "endpoint"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message", "details"}}`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_body(status: int, code: str, message: str, details: Any = None) -> tuple[Response, int]:
    return jsonify({"error": {"code": code, "message": message, "details": details}}), status


def parse_body(model: type[Model], *, allow_empty: bool = False) -> Model:
    """Validate the JSON request body against ``model``: 415, 400 or the parsed model.

    Only ``application/json``: a form post (which any web page can make a browser send) is refused."""
    raw = request.get_data(cache=True)
    if not raw and allow_empty:
        return model()
    if request.mimetype != "application/json":
        raise ApiError(415, "unsupported_media_type", "request body must be JSON (Content-Type: application/json)")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise ApiError(400, "invalid_json", "request body is not valid JSON") from None
    return validate(model, data)


def parse_query(model: type[Model]) -> Model:
    """Validate the query string against ``model`` (the same model the OpenAPI document shows):
    400 naming each bad parameter, or the parsed model. Empty values count as absent."""
    return validate(model, {name: value for name, value in request.args.items() if value != ""})


def validate(model: type[Model], data: Any) -> Model:
    """Validate ``data`` against ``model``; field errors become a 400 naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ApiError(400, "validation_error", "request is invalid", field_errors(err)) from err


def field_errors(err: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]}
        for e in err.errors(include_url=False)
    ]


def query_int(name: str, default: int, low: int, high: int) -> int:
    """Read an integer query parameter within bounds, or answer 400 naming it."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400,
            "validation_error",
            f"{name} must be an integer",
            [{"field": name, "message": "not an integer"}],
        ) from None
    if not low <= value <= high:
        raise ApiError(
            400,
            "validation_error",
            f"{name} must be between {low} and {high}",
            [{"field": name, "message": "out of range"}],
        )
    return value


def create_service_app(
    settings: Settings,
    name: str,
    checks: Mapping[str, HealthCheck],
    import_name: str | None = None,
    keys: KeyStore | None = None,
) -> Flask:
    """Build the Flask app skeleton of one service: credentials checked on every route, errors,
    security headers, health, metrics and request logging. ``keys`` is where API keys are looked up
    (without it only customer tokens are accepted)."""
    app = Flask(import_name or name)
    app.config["MAX_CONTENT_LENGTH"] = settings.http.max_content_length
    app.json.sort_keys = False
    app.extensions["service_name"] = name
    app.extensions["health_checks"] = dict(checks)
    app.extensions["started_at"] = time.time()
    app.extensions["settings"] = settings
    # Timing first, so a refused request is logged and counted like any other.
    _register_request_logging(app)
    # The correlation id first, so even a refused request has one in its audit entry.
    audit.install(app, audit.AuditTrail(name, keys.audit_entries() if isinstance(keys, MongoKeyStore) else None))
    cache = KeyCache(keys, settings.auth.key_cache_s) if keys is not None else None
    auth.install(app, auth.Authenticator(settings.auth, cache), settings.auth.mode)
    # Counted in the auth database beside the keys, so every service and replica shares them.
    ratelimits.install(app, settings.rate_limits, keys.rate_counters() if isinstance(keys, MongoKeyStore) else None)
    _register_errors(app)
    _register_security_headers(app)
    _register_http_middleware(app, settings.http)
    app.add_url_rule("/health", "health", _health)
    app.add_url_rule("/health/detailed", "health_detailed", _health_detailed)
    app.add_url_rule("/metrics", "metrics", _metrics)
    app.add_url_rule("/metrics/custom", "metrics_custom", _metrics_custom)
    openapi.install(app, f"{name} service")
    return app


# Every answer is JSON or the dashboard's own files: nothing may frame them, sniff them into
# something else, or leak the URL (ids) to another site. The dashboard sets its own CSP.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _register_http_middleware(app: Flask, http: HttpSettings) -> None:
    """Proxies, trusted hosts, HTTPS redirect, CORS and compression, as the environment says."""
    if http.proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=http.proxies, x_proto=http.proxies, x_host=http.proxies)  # type: ignore[method-assign]
    if http.trusted_hosts:
        app.config["TRUSTED_HOSTS"] = list(http.trusted_hosts)

        @app.before_request
        def check_host() -> None:
            _ = request.host  # raises SecurityError (400) for a host not in TRUSTED_HOSTS

    if http.https_redirect:

        @app.before_request
        def to_https() -> Response | None:
            if request.is_secure or request.path == "/health":
                return None
            return redirect(request.url.replace("http://", "https://", 1), code=308)

    if http.cors_origins:
        CORS(
            app,
            origins=list(http.cors_origins),
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "Idempotency-Key", "X-Request-ID"],
            expose_headers=["Retry-After", "X-Request-ID", "WWW-Authenticate", "ETag"],
            supports_credentials=False,  # credentials travel in headers, never cookies
            max_age=600,
        )
    if http.compress_min_bytes:
        app.config["COMPRESS_MIN_SIZE"] = http.compress_min_bytes
        app.config["COMPRESS_ALGORITHM"] = ["gzip"]
        Compress(app)


def _register_security_headers(app: Flask) -> None:
    @app.after_request
    def add_security_headers(response: Response) -> Response:
        for header, value in SECURITY_HEADERS.items():
            response.headers.setdefault(header, value)
        if "Authorization" in request.headers or "X-API-Key" in request.headers:
            response.headers.setdefault("Cache-Control", "no-store")
        return response


WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SHED = Counter("http_shed_total", "Writes refused with 503 while the outbox relay was behind", ["endpoint"])


def hold_writes_for_relay(app: Flask, relay: OutboxRelay, outbox: OutboxSettings) -> None:
    """Make every write wait while the process's outbox relay is ``outbox.api_backlog_limit``
    documents behind, and refuse it with 503 after ``outbox.api_backlog_wait_s``: a flood then
    slows to the pace the store clears published events, and memory stays bounded. Nothing is
    written before the check, so a refused request changes nothing and can simply be retried."""
    retry_after = str(max(1, round(outbox.api_backlog_wait_s)))

    @app.before_request
    def wait_for_relay() -> tuple[Response, int] | None:
        if request.method not in WRITE_METHODS or relay.wait_for_room(
            outbox.api_backlog_limit, outbox.api_backlog_wait_s
        ):
            return None
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        SHED.labels(endpoint).inc()
        logger.warning("refusing %s %s: the outbox relay is %d behind", request.method, request.path, relay.backlog())
        response, status = error_body(503, "overloaded", "too many writes waiting to be published; retry later")
        response.headers["Retry-After"] = retry_after
        return response, status


def run_checks(checks: Mapping[str, HealthCheck]) -> dict[str, dict[str, Any]]:
    """Run each dependency check and report its status and latency."""
    results = {}
    for dependency, check in checks.items():
        started = time.perf_counter()
        try:
            check()
            status, error = "up", None
        except Exception as err:
            # The reason is logged here; callers see its kind only, never exception text.
            logger.warning("health check %s failed: %s: %s", dependency, type(err).__name__, err)
            status, error = "down", type(err).__name__
        result = {"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 2)}
        if error:
            result["error"] = error
        results[dependency] = result
    return results


@auth.public
@openapi.documented("Liveness: the process answers")
def _health() -> Response:
    return jsonify(
        {
            "status": "healthy",
            "service": current_app.extensions["service_name"],
            "uptime_s": round(time.time() - current_app.extensions["started_at"], 1),
        }
    )


@auth.requires("monitoring:read")
@openapi.documented("Each dependency's status and latency (503 when one is down)")
def _health_detailed() -> tuple[Response, int]:
    results = run_checks(current_app.extensions["health_checks"])
    healthy = all(r["status"] == "up" for r in results.values())
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "service": current_app.extensions["service_name"],
        "dependencies": results,
    }
    return jsonify(body), 200 if healthy else 503


def metrics_registry() -> CollectorRegistry:
    """The registry to read: all gunicorn workers' figures when running multi-process."""
    multiproc_dir = current_app.extensions["settings"].prometheus_multiproc_dir
    if not multiproc_dir:
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiproc_dir)
    return registry


@auth.requires("metrics:read")
@openapi.documented("Prometheus metrics", media="text/plain")
def _metrics() -> Response:
    return Response(generate_latest(metrics_registry()), mimetype=CONTENT_TYPE_LATEST)


@auth.requires("metrics:read")
@openapi.documented("The same figures as JSON")
def _metrics_custom() -> Response:
    figures: dict[str, list[dict[str, Any]]] = {}
    for metric in metrics_registry().collect():
        for sample in metric.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            figures.setdefault(sample.name, []).append({"labels": sample.labels, "value": sample.value})
    return jsonify({"service": current_app.extensions["service_name"], "metrics": figures})


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(err: ApiError) -> tuple[Response, int]:
        return error_body(err.status, err.code, err.message, err.details)

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[Response, int]:
        code = (err.name or "error").lower().replace(" ", "_")
        response, status = error_body(err.code or 500, code, err.description or err.name)
        if isinstance(err, MethodNotAllowed) and err.valid_methods:
            response.headers["Allow"] = ", ".join(err.valid_methods)
        return response, status

    @app.errorhandler(DatabaseUnavailable)
    @app.errorhandler(ConnectionFailure)
    def database_down(err: Exception) -> tuple[Response, int]:
        logger.warning("database unavailable: %s", err)
        return error_body(503, "database_unavailable", "the database is unavailable; retry later")

    @app.errorhandler(PublishError)
    def broker_down(err: Exception) -> tuple[Response, int]:
        logger.warning("kafka unavailable: %s", err)
        return error_body(503, "broker_unavailable", "the message broker is unavailable; retry later")

    @app.errorhandler(PyMongoError)
    @app.errorhandler(Exception)
    def unexpected(err: Exception) -> tuple[Response, int]:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return error_body(500, "internal_error", "internal server error")


def _register_request_logging(app: Flask) -> None:
    @app.before_request
    def start_timer() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        HTTP_REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        HTTP_SECONDS.labels(request.method, endpoint).observe(elapsed)
        if endpoint not in ("/metrics", "/health"):
            logger.info("%s %s %d %.1fms", request.method, request.path, response.status_code, elapsed * 1000)
        return response
