"""HTTP API of monitoring: parse the request, ask MonitoringService, answer JSON (or the dashboard)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

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
from shared.web import ApiError, error_body, query_int

bp = Blueprint("monitoring", __name__)

DASHBOARD = Path(__file__).with_name("dashboard.html")
LIST_PREVIEW_CHARS = 500
# Inline script and style only; nothing may load from elsewhere (the page works offline).
DASHBOARD_CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'"


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
def order_events(order_id: str) -> Response:
    timeline = _service().timeline(_order_id(order_id))
    return jsonify({"order_id": timeline.order_id, "events": [_event_json(e) for e in timeline.events]})


@bp.get("/orders/recent")
def recent_orders() -> Response:
    limit = query_int("limit", 20, 1, 100)
    status = request.args.get("status") or None
    if status not in (None, "completed", "failed"):
        raise ApiError(
            400,
            "validation_error",
            "status must be completed or failed",
            [{"field": "status", "message": "not one of completed, failed"}],
        )
    return jsonify({"orders": [_order_summary(t) for t in _service().recent_orders(limit, status)]})


@bp.get("/events")
def recent_events() -> Response:
    limit = query_int("limit", 50, 1, 500)
    return jsonify({"events": [_event_json(e, order_id) for order_id, e in _service().recent_events(limit)]})


@bp.get("/timelines/<order_id>")
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
def status() -> Response:
    overall, health, checked_at = _service().status()
    return jsonify(
        {"overall": overall, "services": {h.service: _health_json(h) for h in health}, "checked_at": iso(checked_at)}
    )


@bp.get("/services/health")
def services_health() -> Response:
    return jsonify({"services": [_health_json(h) for h in _service().current_health()]})


@bp.get("/performance")
def performance() -> Response:
    return jsonify(_service().performance())


@bp.get("/metrics/prometheus")
def metrics_prometheus() -> Response:
    return Response(prometheus.render(_service().metrics()), mimetype="text/plain; version=0.0.4; charset=utf-8")


@bp.get("/alerts")
def alerts() -> Response:
    return jsonify({"alerts": [_alert_json(a) for a in _service().alerts()]})


@bp.get("/dlq")
def dead_letters() -> Response:
    letters, total = _service().dead_letters(query_int("limit", 50, 0, 500))
    return jsonify({"entries": [_letter_json(x, preview=True) for x in letters], "total": total})


@bp.get("/dlq/<letter_id>")
def dead_letter(letter_id: str) -> Response:
    return jsonify(_letter_json(_service().dead_letter(letter_id)))


@bp.post("/dlq/<letter_id>/replay")
def replay(letter_id: str) -> tuple[Response, int]:
    """Re-publish the stored message to its original topic (at least once).

    Replaying twice has the effect of once for well-formed events: every consumer drops an
    event id it has already applied. 503 when Kafka does not acknowledge the message.
    """
    letter = _service().replay(letter_id)
    return jsonify({"id": letter.id, "topic": letter.topic, "replayed_count": letter.replayed_count}), 202


@functools.cache
def _dashboard_html() -> str:
    return DASHBOARD.read_text(encoding="utf-8")


@bp.get("/")
@bp.get("/dashboard")
def dashboard() -> Response:
    response = Response(_dashboard_html(), mimetype="text/html")
    response.headers["Content-Security-Policy"] = DASHBOARD_CSP
    response.headers["Cache-Control"] = "no-store"
    return response
