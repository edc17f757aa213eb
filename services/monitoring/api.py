"""HTTP API of monitoring: parse the request, ask MonitoringService, answer JSON (or the dashboard)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, Field

from services.monitoring import prometheus
from services.monitoring.alerts import Alert
from services.monitoring.deadletters import DeadLetter
from services.monitoring.domain import (
    MAX_ORDER_ID_LENGTH,
    MonitoringError,
    NotReplayable,
    ServiceHealth,
    Timeline,
    TimelineEvent,
    UnknownDeadLetter,
    UnknownOrder,
    iso,
)
from services.monitoring.service import MonitoringService
from shared.auth import public, requires
from shared.config import SERVICE_NAMES
from shared.openapi import documented
from shared.web import ApiError, error_body, parse_query

bp = Blueprint("monitoring", __name__)

STATIC = Path(__file__).with_name("static")
LIST_PREVIEW_CHARS = 500
# The page's own script and style only, no inline code: an order id or name that sneaked markup into
# the page could not run. Nothing loads from elsewhere (the page works offline).
DASHBOARD_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DASHBOARD_FILES = {"dashboard.html": "text/html", "dashboard.js": "text/javascript", "dashboard.css": "text/css"}


class RecentOrdersQuery(BaseModel):
    limit: int = Field(default=20, ge=1, le=100)
    status: Literal["completed", "failed"] | None = None


class EventsQuery(BaseModel):
    limit: int = Field(default=50, ge=1, le=500)


class DeadLettersQuery(BaseModel):
    limit: int = Field(default=50, ge=0, le=500)


class AuditQuery(BaseModel):
    limit: int = Field(default=100, ge=1, le=500)
    service: Literal[SERVICE_NAMES] | None = None  # type: ignore[valid-type]
    principal_id: str | None = Field(default=None, min_length=1, max_length=100)


def _service() -> MonitoringService:
    return current_app.extensions["monitoring"]


def error_response(err: MonitoringError) -> tuple[Response, int]:
    """Map monitoring's errors to HTTP in one place."""
    if isinstance(err, UnknownOrder | UnknownDeadLetter):
        return error_body(404, "not_found", str(err))
    if isinstance(err, NotReplayable):
        return error_body(409, "conflict", str(err))
    return error_body(400, "validation_error", str(err))


def _order_id(raw: str) -> str:
    if not raw or len(raw) > MAX_ORDER_ID_LENGTH:
        raise ApiError(
            400,
            "validation_error",
            f"order id must be 1 to {MAX_ORDER_ID_LENGTH} characters",
            [{"field": "order_id", "message": "invalid length"}],
        )
    return raw


def _event_json(event: TimelineEvent, order_id: str | None = None) -> dict[str, Any]:
    body = {"order_id": order_id} if order_id is not None else {}
    body.update(
        event_id=event.event_id,
        topic=event.topic,
        event_type=event.event_type,
        timestamp=iso(event.timestamp),
        source=event.source,
    )
    return body


def _timeline_event_json(event: TimelineEvent) -> dict[str, Any]:
    body = {
        "event_type": event.event_type,
        "topic": event.topic,
        "timestamp": iso(event.timestamp),
        "source": event.source,
    }
    if event.detail:
        body["detail"] = event.detail
    return body


def _order_summary(timeline: Timeline) -> dict[str, Any]:
    last = timeline.last_event
    return {
        "order_id": timeline.order_id,
        "status": timeline.status,
        "failure_reason": timeline.failure_reason,
        "last_event": last.event_type if last else None,
        "updated": iso(timeline.last_at),
    }


def _health_json(health: ServiceHealth) -> dict[str, Any]:
    body = dict(health.__dict__)
    body["checked_at"] = iso(health.checked_at)
    body["down_since"] = iso(health.down_since)
    return body


def _letter_json(letter: DeadLetter, preview: bool = False) -> dict[str, Any]:
    body = dict(letter.__dict__)
    body["received_at"] = iso(letter.received_at)
    body["last_replayed_at"] = iso(letter.last_replayed_at)
    if preview and letter.value is not None and len(letter.value) > LIST_PREVIEW_CHARS:
        body["value"] = letter.value[:LIST_PREVIEW_CHARS]
        body["value_truncated"] = True
    return body


def _alert_json(alert: Alert) -> dict[str, Any]:
    return {**alert.__dict__, "since": iso(alert.since)}


@bp.get("/orders/<order_id>/events")
@requires("monitoring:read")
@documented("Every event monitoring saw of an order")
def order_events(order_id: str) -> Response:
    timeline = _service().timeline(_order_id(order_id))
    return jsonify({"order_id": timeline.order_id, "events": [_event_json(e) for e in timeline.events]})


@bp.get("/orders/recent")
@requires("monitoring:read")
@documented("Orders seen lately, newest first", query=RecentOrdersQuery)
def recent_orders() -> Response:
    query = parse_query(RecentOrdersQuery)
    return jsonify({"orders": [_order_summary(t) for t in _service().recent_orders(query.limit, query.status)]})


@bp.get("/events")
@requires("monitoring:read")
@documented("Events seen lately, newest first", query=EventsQuery)
def recent_events() -> Response:
    limit = parse_query(EventsQuery).limit
    return jsonify({"events": [_event_json(e, order_id) for order_id, e in _service().recent_events(limit)]})


@bp.get("/timelines/<order_id>")
@requires("monitoring:read")
@documented("An order's timeline with status and duration")
def order_timeline(order_id: str) -> Response:
    """Answer what monitoring observed of an order on the topics: its events in time order, status and duration."""
    timeline = _service().timeline(_order_id(order_id))
    return jsonify(
        {
            "order_id": timeline.order_id,
            "status": timeline.status,
            "failure_reason": timeline.failure_reason,
            "events": [_timeline_event_json(e) for e in timeline.events],
            "duration_s": timeline.elapsed_s(),
            "started_at": iso(timeline.created_at or timeline.first_at),
            "updated_at": iso(timeline.last_at),
        }
    )


@bp.get("/status")
@requires("monitoring:read")
@documented("Overall status and each service's health")
def status() -> Response:
    overall, health, checked_at = _service().status()
    return jsonify(
        {"overall": overall, "services": {h.service: _health_json(h) for h in health}, "checked_at": iso(checked_at)}
    )


@bp.get("/services/health")
@requires("monitoring:read")
@documented("Each service's last health check")
def services_health() -> Response:
    return jsonify({"services": [_health_json(h) for h in _service().current_health()]})


@bp.get("/performance")
@requires("monitoring:read")
@documented("Orders per minute, success rate, durations")
def performance() -> Response:
    return jsonify(_service().performance())


@bp.get("/metrics/prometheus")
@requires("metrics:read")
@documented("Business metrics for Prometheus", media="text/plain")
def metrics_prometheus() -> Response:
    return Response(prometheus.render(_service().metrics()), mimetype="text/plain; version=0.0.4; charset=utf-8")


@bp.get("/alerts")
@requires("monitoring:read")
@documented("Alerts firing now")
def alerts() -> Response:
    return jsonify({"alerts": [_alert_json(a) for a in _service().alerts()]})


@bp.get("/dlq")
@requires("monitoring:read")
@documented("Dead letters, newest first", query=DeadLettersQuery)
def dead_letters() -> Response:
    letters, total = _service().dead_letters(parse_query(DeadLettersQuery).limit)
    return jsonify({"entries": [_letter_json(x, preview=True) for x in letters], "total": total})


@bp.get("/dlq/<letter_id>")
@requires("monitoring:read")
@documented("One dead letter with its message")
def dead_letter(letter_id: str) -> Response:
    return jsonify(_letter_json(_service().dead_letter(letter_id)))


@bp.get("/audit")
@requires("audit:read")
@documented("The audit trail of every service, newest first", query=AuditQuery)
def audit_trail() -> Response:
    """The latest audit entries of every service, newest first (shared/audit.py)."""
    query = parse_query(AuditQuery)
    trail = current_app.extensions["audit"]
    entries = trail.recent(query.limit, service=query.service, principal_id=query.principal_id)
    return jsonify({"entries": [{**e, "at": e["at"].isoformat()} for e in entries]})


@bp.post("/dlq/<letter_id>/replay")
@requires("dlq:replay")
@documented("Publish a dead letter again to its topic", responses={202: "replayed", 409: "not replayable"})
def replay(letter_id: str) -> tuple[Response, int]:
    """Re-publish the stored message to its original topic (at least once).

    Replaying twice has the effect of once for well-formed events: every consumer drops an
    event id it has already applied. 503 when Kafka does not acknowledge the message.
    """
    letter = _service().replay(letter_id)
    return jsonify({"id": letter.id, "topic": letter.topic, "replayed_count": letter.replayed_count}), 202


@functools.cache
def _dashboard_file(name: str) -> str:
    return (STATIC / name).read_text(encoding="utf-8")


def _static(name: str) -> Response:
    response = Response(_dashboard_file(name), mimetype=DASHBOARD_FILES[name])
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    response.headers["Cache-Control"] = "no-store"
    return response


# The dashboard's files hold no data: the page is a sign-in form until an operator gives it a key
# with monitoring:read, and every figure it shows comes from the routes above with that key.
@bp.get("/")
@bp.get("/dashboard")
@public
def dashboard() -> Response:
    return _static("dashboard.html")


@bp.get("/dashboard.js")
@public
def dashboard_script() -> Response:
    return _static("dashboard.js")


@bp.get("/dashboard.css")
@public
def dashboard_style() -> Response:
    return _static("dashboard.css")
