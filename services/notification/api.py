"""HTTP API of the notification service: parse the request, call the service, answer JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, Field, StringConstraints

from services.notification.domain import DeliveryFailed, Notification, NotificationError, NotificationNotFound
from services.notification.service import NotificationRequest, NotificationService
from shared.auth import requires
from shared.openapi import documented
from shared.web import error_body, parse_body, parse_query

bp = Blueprint("notification", __name__)

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Email = Annotated[str, StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]


class NotificationBody(BaseModel):
    customer_id: Id
    type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
    message: Annotated[str, StringConstraints(min_length=1, max_length=5000)]
    channel: Literal["email", "sms", "push"] = "email"
    customer_email: Email | None = None
    subject: Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\r\n]*$")] | None = None
    order_id: Id | None = None


class NotificationQuery(BaseModel):
    customer_id: Id
    limit: int = Field(default=50, ge=1, le=200)


def _service() -> NotificationService:
    return current_app.extensions["notification"]


@bp.post("/notifications")
@requires("notifications:write")
@documented(
    "Send a notification",
    body=NotificationBody,
    responses={201: "sent", 422: "undeliverable", 502: "delivery failed; retry"},
)
def create_notification() -> tuple[Response, int]:
    body = parse_body(NotificationBody)
    notification = _service().send(
        NotificationRequest(
            customer_id=body.customer_id,
            type=body.type,
            message=body.message,
            subject=body.subject or body.type.replace("_", " ").capitalize(),
            channel=body.channel,
            customer_email=body.customer_email,
            order_id=body.order_id,
        )
    )
    return jsonify(notification_json(notification)), 201


@bp.get("/notifications/<notification_id>")
@requires("notifications:read")
@documented("A notification")
def get_notification(notification_id: str) -> Response:
    return jsonify(notification_json(_service().get(notification_id)))


@bp.get("/notifications")
@requires("notifications:read")
@documented("A customer's notifications, newest first", query=NotificationQuery)
def list_notifications() -> Response:
    query = parse_query(NotificationQuery)
    found = _service().list_for_customer(query.customer_id, query.limit)
    return jsonify({"customer_id": query.customer_id, "notifications": [notification_json(n) for n in found]})


def error_response(err: NotificationError) -> tuple[Response, int]:
    """Answer a domain error with its HTTP status and the standard error body."""
    if isinstance(err, NotificationNotFound):
        return error_body(404, "not_found", str(err), {"notification_id": err.notification_id})
    if isinstance(err, DeliveryFailed):
        details = {"notification_id": err.notification_id, "error": err.error}
        if err.permanent:
            return error_body(422, "undeliverable", str(err), details)
        return error_body(502, "delivery_failed", str(err), details)
    return error_body(409, "conflict", str(err))


def notification_json(notification: Notification) -> dict[str, Any]:
    return {
        "notification_id": notification.notification_id,
        "order_id": notification.order_id,
        "customer_id": notification.customer_id,
        "customer_email": notification.customer_email,
        "type": notification.type,
        "channel": notification.channel,
        "subject": notification.subject,
        "message": notification.message,
        "status": notification.status,
        "error": notification.error,
        "attempts": notification.attempts,
        "created_at": _iso(notification.created_at),
        "sent_at": _iso(notification.sent_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z") if moment else None
