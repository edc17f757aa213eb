"""HTTP API: stock per product and REST reservations. Views parse, call the service, serialize."""

from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, jsonify
from pydantic import BaseModel, ConfigDict, Field

from services.inventory.catalogue import Catalogue
from services.inventory.domain import (
    MAX_ITEMS,
    MAX_QUANTITY,
    InsufficientStock,
    InvalidInput,
    InvalidOrder,
    InventoryError,
    Line,
    ManagedBySaga,
    ProductNotFound,
    ReservationNotFound,
)
from services.inventory.service import Reservations
from shared.auth import requires
from shared.openapi import documented
from shared.ratelimits import limited
from shared.web import ApiError, error_body, parse_body

bp = Blueprint("inventory", __name__)

PRODUCT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}")
MAX_PRICE = 1_000_000.0

# Domain error -> (HTTP status, error code): the one place they are mapped.
STATUS_BY_ERROR: dict[type[InventoryError], tuple[int, str]] = {
    ProductNotFound: (404, "not_found"),
    ReservationNotFound: (404, "not_found"),
    InsufficientStock: (409, "insufficient_stock"),
    ManagedBySaga: (409, "managed_by_saga"),
    InvalidInput: (400, "validation_error"),
}


class ProductBody(BaseModel):
    """PUT body: all three fields create a product; on an existing one, ``quantity`` is ADDED (restock)."""

    model_config = ConfigDict(extra="ignore")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    price: float | None = Field(default=None, gt=0, le=MAX_PRICE, strict=True)
    quantity: int | None = Field(default=None, ge=0, le=10_000_000, strict=True)


class ItemBody(BaseModel):
    product_id: str = Field(min_length=1, max_length=100)
    quantity: int = Field(ge=1, le=MAX_QUANTITY, strict=True)
    price: float | None = Field(default=None, gt=0, le=MAX_PRICE, strict=True)


class ReservationBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    order_id: str = Field(min_length=1, max_length=100)
    items: list[ItemBody] = Field(min_length=1, max_length=MAX_ITEMS)


def error_response(err: InventoryError) -> tuple[Response, int]:
    """Turn a domain error into the shared JSON error body."""
    if isinstance(err, InvalidOrder):
        return error_body(400, err.code, str(err), err.details)
    status, code = STATUS_BY_ERROR.get(type(err), (400, "bad_request"))
    return error_body(status, code, str(err), err.details)


def _catalogue() -> Catalogue:
    return current_app.extensions["inventory"]


def _reservations() -> Reservations:
    return current_app.extensions["inventory"]


@bp.get("/inventory")
@requires("inventory:read")
@documented("The catalogue with stock")
def list_products() -> Response:
    return jsonify({"products": [item.to_dict() for item in _catalogue().list_products()]})


@bp.get("/inventory/<product_id>")
@requires("inventory:read")
@documented("One product with its stock")
def get_product(product_id: str) -> Response:
    return jsonify(_catalogue().get_product(product_id).to_dict())


@bp.put("/inventory/<product_id>")
@requires("inventory:write")
@documented(
    "Create a product (name, price, quantity) or reprice/rename/restock one",
    body=ProductBody,
    responses={200: "updated", 201: "created"},
)
def put_product(product_id: str) -> tuple[Response, int]:
    _check_product_id(product_id)
    body = parse_body(ProductBody)
    item, created = _catalogue().put_product(product_id, name=body.name, price=body.price, quantity=body.quantity)
    return jsonify(item.to_dict()), 201 if created else 200


@bp.post("/reservations")
@requires("inventory:reserve")
@limited("reservations")
@documented("Hold stock for an order", body=ReservationBody, responses={201: "reserved", 409: "not enough stock"})
def create_reservation() -> tuple[Response, int]:
    body = parse_body(ReservationBody)
    lines = [Line(item.product_id, item.quantity, item.price) for item in body.items]
    reservation = _reservations().create_reservation(body.order_id, lines)
    return jsonify(reservation.to_dict()), 201


@bp.get("/reservations/<reservation_id>")
@requires("inventory:reserve")
@documented("A reservation")
def get_reservation(reservation_id: str) -> Response:
    return jsonify(_reservations().get_reservation(reservation_id).to_dict())


@bp.delete("/reservations/<reservation_id>")
@requires("inventory:reserve")
@documented(
    "Release a reservation made over REST", responses={200: "released (or already settled)", 409: "managed by a saga"}
)
def release_reservation(reservation_id: str) -> Response:
    reservation, released = _reservations().release(reservation_id, reason="released over the API")
    return jsonify({"reservation_id": reservation_id, "status": reservation.status, "released": released})


def _check_product_id(product_id: str) -> None:
    if not PRODUCT_ID.fullmatch(product_id):
        raise ApiError(
            400,
            "validation_error",
            "product_id must be 1 to 100 letters, digits, '_', '-', '.' or ':', starting with a letter or digit",
            [{"field": "product_id", "message": "invalid product id"}],
        )
