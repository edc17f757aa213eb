"""HTTP API of the payment service: parse the request, call the service, answer JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import AfterValidator, BaseModel, Field, StrictFloat, StringConstraints

from services.payment.domain import (
    FAILED,
    AlreadyPaid,
    ChargeRequest,
    IdempotencyConflict,
    NotRefundable,
    Payment,
    PaymentError,
    PaymentNotFound,
    VaultUnavailable,
    card_digits,
    to_cents,
)
from services.payment.service import PaymentService
from shared.auth import requires
from shared.openapi import documented
from shared.ratelimits import limited
from shared.web import ApiError, error_body, parse_body, parse_query

bp = Blueprint("payment", __name__)

OrderId = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Amount = Annotated[StrictFloat, AfterValidator(to_cents)]
Method = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
# 12 to 19 digits, spaces and dashes allowed between them (the pattern tells API clients and the
# OpenAPI document what card_digits accepts).
CardNumber = Annotated[
    str, StringConstraints(max_length=40, pattern=r"^[ -]*(?:[0-9][ -]*){12,19}$"), AfterValidator(card_digits)
]


class CardDetails(BaseModel):
    number: CardNumber


class PaymentBody(BaseModel):
    order_id: OrderId
    amount: Amount
    payment_method: Method
    card_details: CardDetails | None = None
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None


class CardBody(BaseModel):
    card_number: CardNumber


class RefundBody(BaseModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = "requested"


class PaymentsQuery(BaseModel):
    order_id: OrderId
    limit: int = Field(default=50, ge=1, le=200)


def _service() -> PaymentService:
    return current_app.extensions["payment"]


@bp.post("/payments")
@requires("payments:write")
@limited("card_charges")
@documented(
    "Charge a card (Idempotency-Key header honoured)",
    body=PaymentBody,
    responses={201: "charged", 402: "declined", 409: "already paid or key reused"},
)
def create_payment() -> tuple[Response, int]:
    body = parse_body(PaymentBody)
    key = request.headers.get("Idempotency-Key") or None
    if key is not None and len(key) > 200:
        raise ApiError(
            400,
            "validation_error",
            "Idempotency-Key is too long",
            [{"field": "Idempotency-Key", "message": "at most 200 characters"}],
        )
    payment = _service().charge(
        ChargeRequest(
            order_id=body.order_id,
            amount=body.amount,
            payment_method=body.payment_method,
            card_number=body.card_details.number if body.card_details else None,
            customer_id=body.customer_id,
        ),
        idempotency_key=key,
    )
    # A retry with the same key gets the same answer as the first request.
    return jsonify(payment_json(payment)), 402 if payment.status == FAILED else 201


@bp.post("/payment-methods")
@requires("payments:vault")
@documented(
    "Keep a card in the vault; answer its token, brand and last 4 digits", body=CardBody, responses={201: "stored"}
)
def add_payment_method() -> tuple[Response, int]:
    """Keep a card in the vault for the saga's payment; the caller keeps only the token."""
    card = _service().vault.store(parse_body(CardBody).card_number)
    return jsonify({"token": card.token, "brand": card.brand, "last4": card.last4}), 201


@bp.get("/payments/<payment_id>")
@requires("payments:read")
@documented("A payment")
def get_payment(payment_id: str) -> Response:
    return jsonify(payment_json(_service().get(payment_id)))


@bp.get("/payments")
@requires("payments:read")
@documented("An order's payments", query=PaymentsQuery)
def list_payments() -> Response:
    query = parse_query(PaymentsQuery)
    payments = _service().list_for_order(query.order_id, query.limit)
    return jsonify({"order_id": query.order_id, "payments": [payment_json(p) for p in payments]})


@bp.post("/payments/<payment_id>/refund")
@requires("payments:refund")
@documented(
    "Refund a payment", body=RefundBody, body_required=False, responses={200: "refunded", 409: "not refundable"}
)
def refund_payment(payment_id: str) -> Response:
    body = parse_body(RefundBody, allow_empty=True)
    return jsonify(payment_json(_service().refund(payment_id, body.reason)))


def error_response(err: PaymentError) -> tuple[Response, int]:
    """Answer a domain error with its HTTP status and the standard error body."""
    if isinstance(err, PaymentNotFound):
        return error_body(404, "not_found", str(err), {"payment_id": err.payment_id})
    if isinstance(err, AlreadyPaid):
        return error_body(409, "already_paid", str(err), {"order_id": err.order_id, "payment_id": err.payment_id})
    if isinstance(err, IdempotencyConflict):
        return error_body(409, "idempotency_conflict", str(err), {"payment_id": err.payment_id})
    if isinstance(err, VaultUnavailable):
        return error_body(503, "vault_unavailable", "the card vault is not configured; try again later")
    if isinstance(err, NotRefundable):
        return error_body(409, "not_refundable", str(err), {"payment_id": err.payment_id, "status": err.status})
    return error_body(409, "conflict", str(err))


def payment_json(payment: Payment) -> dict[str, Any]:
    """Serialize a payment; it only ever holds the card's last four digits."""
    return {
        "payment_id": payment.payment_id,
        "order_id": payment.order_id,
        "amount": round(payment.amount, 2),
        "payment_method": payment.payment_method,
        "card_last4": payment.card_last4,
        "status": payment.status,
        "reason": payment.reason,
        "refunded_amount": round(payment.refunded_amount, 2),
        "refund_reason": payment.refund_reason,
        "customer_id": payment.customer_id,
        "gateway_ref": payment.gateway_ref,
        "created_at": iso(payment.created_at),
        "updated_at": iso(payment.updated_at),
    }


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
