"""HTTP API of the order service: parse the request, call OrderService, answer JSON."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pymongo.errors import ConnectionFailure

from services.order.domain import (
    IdempotencyConflict,
    InvalidCursor,
    Item,
    NewOrder,
    Order,
    OrderError,
    OrderNotFound,
    OrderTerminal,
    PaymentVaultUnavailable,
    iso,
)
from services.order.service import OrderService, Page
from shared.auth import Principal, current_principal, requires
from shared.events import ORDER_STATUSES
from shared.mongo import DatabaseUnavailable
from shared.openapi import documented
from shared.ratelimits import limited
from shared.web import ApiError, error_body, field_errors, parse_body, parse_query

bp = Blueprint("order", __name__)

MAX_ITEMS = 100
MAX_BULK = 100
MAX_KEY_LENGTH = 200
MAX_ID_LENGTH = 100
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

Id = Annotated[str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH)]
Money = Annotated[float, Field(strict=True, allow_inf_nan=False)]


def _card_digits(value: Any) -> Any:
    # People type card numbers with spaces or dashes; only the digits matter.
    return re.sub(r"[\s-]", "", value) if isinstance(value, str) else value


class ItemBody(BaseModel):
    product_id: Id
    # The inventory service refuses more than 100,000 units of a line: say so here, at once.
    quantity: Annotated[int, Field(strict=True, ge=1, le=100_000)]
    price: Annotated[Money, Field(gt=0, le=1_000_000_000)]


class CardBody(BaseModel):
    number: Annotated[str, BeforeValidator(_card_digits), StringConstraints(strict=True, pattern=r"^[0-9]{12,19}$")]


class OrderBody(BaseModel):
    customer_id: Id
    items: Annotated[list[ItemBody], Field(min_length=1, max_length=MAX_ITEMS)]
    total_amount: Annotated[Money, Field(ge=0)]
    customer_email: Annotated[str, StringConstraints(strict=True, strip_whitespace=True, max_length=254)] | None = None
    payment_method: Annotated[
        str, StringConstraints(strict=True, strip_whitespace=True, min_length=1, max_length=50)
    ] = "credit_card"
    card_details: CardBody | None = None

    @field_validator("customer_email")
    @classmethod
    def _plausible_email(cls, value: str | None) -> str | None:
        if value is not None and not EMAIL.fullmatch(value):
            raise ValueError("must be a valid email address")
        return value

    @field_validator("total_amount")
    @classmethod
    def _matches_items(cls, value: float, info: ValidationInfo) -> float:
        items = info.data.get("items")
        if items is None:
            return value  # the items are invalid; that error is reported on its own
        expected = round(sum(i.quantity * i.price for i in items), 2)
        if abs(round(value, 2) - expected) >= 0.005:
            raise ValueError(f"must equal the sum of quantity x price over the items ({expected:.2f})")
        return round(value, 2)

    def to_request(self) -> NewOrder:
        return NewOrder(
            customer_id=self.customer_id,
            items=tuple(Item(i.product_id, i.quantity, i.price) for i in self.items),
            total_amount=self.total_amount,
            customer_email=self.customer_email,
            payment_method=self.payment_method,
            card_number=self.card_details.number if self.card_details else None,
        )


class PageQuery(BaseModel):
    status: Literal[ORDER_STATUSES] | None = None  # type: ignore[valid-type]
    limit: int = Field(default=20, ge=1, le=100)
    cursor: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None


class OrdersQuery(PageQuery):
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_LENGTH)] | None = None


class BulkBody(BaseModel):
    # Each order is validated on its own below, so one bad order fails alone.
    orders: Annotated[list[Any], Field(min_length=1, max_length=MAX_BULK)]


def _service() -> OrderService:
    return current_app.extensions["order"]


@bp.post("/orders")
@requires("orders:write", "orders:write:any")
@limited("order_creation")
@documented(
    "Place an order (Idempotency-Key header honoured)",
    body=OrderBody,
    responses={
        200: "the order placed before with this Idempotency-Key",
        201: "placed",
        409: "Idempotency-Key used for another order",
    },
)
def place_order() -> tuple[Response, int]:
    body = parse_body(OrderBody)
    _may_place_for(current_principal(), body.customer_id)
    order, created = _service().place_order(body.to_request(), _idempotency_key())
    return jsonify(order_view(order)), 201 if created else 200


@bp.post("/orders/bulk")
@requires("orders:write", "orders:write:any")
@limited("order_creation", cost=lambda: _bulk_size())
@documented(
    "Place up to 100 orders; each answered on its own",
    body=BulkBody,
    responses={200: "all placed", 207: "some refused (see each result)"},
)
def place_orders() -> tuple[Response, int]:
    body = parse_body(BulkBody)
    principal = current_principal()
    results: list[dict[str, Any]] = [{} for _ in body.orders]
    valid: list[tuple[int, NewOrder]] = []
    for index, raw in enumerate(body.orders):
        try:
            new = OrderBody.model_validate(raw).to_request()
        except ValidationError as err:
            error = {"code": "validation_error", "message": "order is invalid", "details": field_errors(err)}
            results[index] = {"index": index, "status": 400, "error": error}
            continue
        if principal.may("orders:write", "orders:write:any", new.customer_id):
            valid.append((index, new))
        else:
            error = {"code": "forbidden", "message": FOREIGN_CUSTOMER, "details": None}
            results[index] = {"index": index, "status": 403, "error": error}
    created = 0
    for index, new in valid:
        # One at a time: if the database goes away part-way, each result still says whether
        # its order exists, so a client retries exactly the ones that were not created.
        try:
            [order] = _service().place_orders([new])
        except (ConnectionFailure, DatabaseUnavailable):
            error = {"code": "database_unavailable", "message": "not created; retry this order", "details": None}
            results[index] = {"index": index, "status": 503, "error": error}
            continue
        except PaymentVaultUnavailable:
            error = {"code": "payment_vault_unavailable", "message": VAULT_DOWN, "details": None}
            results[index] = {"index": index, "status": 503, "error": error}
            continue
        results[index] = {"index": index, "status": 201, "order_id": order.order_id}
        created += 1
    failed = len(body.orders) - created
    summary = {"results": results, "created": created, "failed": failed}
    if created == 0 and all(r["status"] == 503 for r in results):
        return jsonify(summary), 503
    return jsonify(summary), 207 if failed else 200


@bp.get("/orders/<order_id>")
@requires("orders:read", "orders:read:any")
@documented("An order with its status history")
def get_order(order_id: str) -> Response:
    return jsonify(order_view(_visible_order(order_id, "orders:read", "orders:read:any")))


@bp.get("/orders")
@requires("orders:read", "orders:read:any")
@documented("Orders, newest first (a customer's own; any customer's with orders:read:any)", query=OrdersQuery)
def list_orders() -> Response:
    customer_id = parse_query(OrdersQuery).customer_id
    principal = current_principal()
    if not principal.has("orders:read:any"):
        # A customer lists their own orders: no filter means theirs, another's is not theirs to see.
        customer_id = _own_customer(principal, customer_id or principal.customer_id)
    return jsonify(_page_view(_list(customer_id)))


@bp.get("/customers/<customer_id>/orders")
@requires("orders:read", "orders:read:any")
@documented("A customer's orders, newest first", query=PageQuery)
def list_customer_orders(customer_id: str) -> Response:
    customer_id = _bounded_id("customer_id", customer_id)
    principal = current_principal()
    if not principal.has("orders:read:any"):
        _own_customer(principal, customer_id)
    return jsonify(_page_view(_list(customer_id)))


@bp.post("/orders/<order_id>/cancel")
@requires("orders:cancel", "orders:cancel:any")
@documented("Ask for an order to be cancelled", responses={202: "cancel requested", 409: "already completed or failed"})
def cancel_order(order_id: str) -> tuple[Response, int]:
    _visible_order(order_id, "orders:cancel", "orders:cancel:any")
    order = _service().cancel_order(order_id)
    return jsonify({"order_id": order.order_id, "status": order.status, "cancel_requested": True}), 202


# Domain errors -> HTTP status and error code, in one place.
ERRORS: dict[type[OrderError], tuple[int, str]] = {
    OrderNotFound: (404, "not_found"),
    OrderTerminal: (409, "order_terminal"),
    IdempotencyConflict: (409, "idempotency_conflict"),
    InvalidCursor: (400, "validation_error"),
    PaymentVaultUnavailable: (503, "payment_vault_unavailable"),
}
VAULT_DOWN = "the card could not be handed to the payment service; nothing was created, retry shortly"
MESSAGES = {
    OrderNotFound: "order {} not found",
    OrderTerminal: "order {} is already completed or failed",
    PaymentVaultUnavailable: VAULT_DOWN,
}
# How long a client should wait before placing an order again after payment_vault_unavailable.
VAULT_RETRY_AFTER_S = "2"


@bp.errorhandler(OrderError)
def order_error(err: OrderError) -> tuple[Response, int]:
    """Answer a domain error with its HTTP status and code."""
    status, code = ERRORS.get(type(err), (409, "conflict"))
    message = MESSAGES.get(type(err), "{}").format(err)
    details = [{"field": "cursor", "message": message}] if isinstance(err, InvalidCursor) else None
    response, status = error_body(status, code, message, details)
    if isinstance(err, PaymentVaultUnavailable):
        response.headers["Retry-After"] = VAULT_RETRY_AFTER_S
    return response, status


def order_view(order: Order) -> dict[str, Any]:
    """Serialize an order for clients: of the card, its brand and last four digits only."""
    return {
        "order_id": order.order_id,
        "customer_id": order.customer_id,
        "customer_email": order.customer_email,
        "items": [{"product_id": i.product_id, "quantity": i.quantity, "price": i.price} for i in order.items],
        "total_amount": order.total_amount,
        "payment_method": order.payment_method,
        "card_brand": order.card_brand,
        "card_last4": order.card_last4,
        "status": order.status,
        "failure_reason": order.failure_reason,
        "failure_detail": order.failure_detail,
        "payment_id": order.payment_id,
        "reservation_id": order.reservation_id,
        "cancel_requested": order.cancel_requested_at is not None,
        "created_at": iso(order.created_at),
        "updated_at": iso(order.updated_at),
        "status_history": [{"status": c.status, "at": iso(c.at)} for c in order.status_history],
    }


def _list(customer_id: str | None) -> Page:
    query = parse_query(PageQuery)
    return _service().list_orders(customer_id=customer_id, status=query.status, limit=query.limit, cursor=query.cursor)


def _page_view(page: Page) -> dict[str, Any]:
    return {"orders": [order_view(o) for o in page.orders], "next_cursor": page.next_cursor}


FOREIGN_CUSTOMER = "you may place orders only for your own customer id"


def _bulk_size() -> int:
    """How many orders a bulk request holds, for its rate limit (before it is validated)."""
    body = request.get_json(silent=True)
    orders = body.get("orders") if isinstance(body, dict) else None
    return min(len(orders), MAX_BULK) if isinstance(orders, list) else 1


def _may_place_for(principal: Principal, customer_id: str) -> None:
    if not principal.may("orders:write", "orders:write:any", customer_id):
        raise ApiError(403, "forbidden", FOREIGN_CUSTOMER, [{"field": "customer_id", "message": FOREIGN_CUSTOMER}])


def _visible_order(order_id: str, own_scope: str, any_scope: str) -> Order:
    """The order, if the caller may see it; another customer's order is answered as not found,
    so ids cannot be probed."""
    order = _service().get_order(order_id)
    if not current_principal().may(own_scope, any_scope, order.customer_id):
        raise OrderNotFound(order_id)
    return order


def _own_customer(principal: Principal, customer_id: str | None) -> str:
    if customer_id is None or not principal.may("orders:read", "orders:read:any", customer_id):
        raise ApiError(404, "not_found", f"customer {customer_id} not found")
    return customer_id


def _bounded_id(field: str, value: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise ApiError(
            400, "validation_error", f"{field} is too long", [{"field": field, "message": "at most 100 characters"}]
        )
    return value


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > MAX_KEY_LENGTH:
        raise ApiError(
            400,
            "validation_error",
            "Idempotency-Key is too long",
            [{"field": "Idempotency-Key", "message": f"at most {MAX_KEY_LENGTH} characters"}],
        )
    return key or None
