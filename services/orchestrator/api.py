"""HTTP views of the orchestrator: the saga flows and each order's timeline, as the saga decided them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, Field

from services.orchestrator.domain import SagaError, SagaNotFound, Step
from services.orchestrator.saga import STATES, Deadline, SagaState
from services.orchestrator.service import SagaService
from shared.auth import requires
from shared.openapi import documented
from shared.web import error_body, parse_query

bp = Blueprint("orchestrator", __name__)


class FlowsQuery(BaseModel):
    state: Literal[STATES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=50, ge=1, le=200)


@bp.get("/flows")
@requires("sagas:read")
@documented("Sagas, newest first", query=FlowsQuery)
def list_flows() -> Response:
    query = parse_query(FlowsQuery)
    return jsonify({"flows": [_summary(flow) for flow in _service().flows(query.state, query.limit)]})


@bp.get("/flows/<order_id>")
@requires("sagas:read")
@documented("One saga: state, steps and deadlines")
def get_flow(order_id: str) -> Response:
    service = _service()
    flow = service.flow(order_id)
    deadlines = service.deadlines(flow)
    nxt = deadlines["next"]
    body = {
        **_summary(flow),
        "failure_detail": flow.failure_detail,
        "reservation_id": flow.reservation_id,
        "payment_id": flow.payment_id,
        "refund_requested": flow.refund_requested,
        "total_amount": flow.order.total_amount if flow.order else None,
        "attempts": flow.attempts,
        "steps": [_step(step) for step in flow.steps],
        "deadlines": {
            "payment": _iso(deadlines["payment"]),
            "order": _iso(deadlines["order"]),
            "next": {"at": _iso(nxt.at), "kind": nxt.kind} if isinstance(nxt, Deadline) else None,
        },
    }
    return jsonify(body)


@bp.get("/orders/<order_id>/events")
@requires("sagas:read")
@documented("The order's timeline as the saga recorded it")
def order_events(order_id: str) -> Response:
    """Answer the saga's steps of ``order_id`` as its timeline, in the order the saga recorded them."""
    flow = _service().flow(order_id)
    return jsonify({"order_id": flow.order_id, "events": [_step(step) for step in flow.steps]})


def error_response(err: SagaError) -> tuple[Response, int]:
    """Answer a domain error with the shared JSON error body."""
    if isinstance(err, SagaNotFound):
        return error_body(404, "not_found", str(err))
    return error_body(409, "conflict", str(err))


def _service() -> SagaService:
    return current_app.extensions["orchestrator"]


def _summary(flow: SagaState) -> dict[str, Any]:
    return {
        "order_id": flow.order_id,
        "state": flow.state,
        "failure_reason": flow.failure_reason,
        "created_at": _iso(flow.created_at),
        "updated_at": _iso(flow.updated_at),
    }


def _step(step: Step) -> dict[str, Any]:
    body: dict[str, Any] = {"step": step.step, "status": step.status, "at": _iso(step.at)}
    if step.event_id:
        body["event_id"] = step.event_id
    if step.detail:
        body["detail"] = step.detail
    return body


def _iso(value: Any) -> str | None:
    if not isinstance(value, datetime):
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
