"""Card numbers never leave the payment service in clear: after orders that complete, are declined,
run out of stock, are invalid, are cancelled and time out, no Luhn-valid run of 13 to 19 digits is
in any database of the stack, in any message of its topics or in any log its processes wrote, and
the payment service's vault holds none of their cards any more."""

from __future__ import annotations

from typing import Any

from bson import json_util
from confluent_kafka.admin import AdminClient

from shared.kafka_utils import client_config
from shared.mongo import make_mongo_client
from tests.chaos.witnesses import read_topics
from tests.e2e.card_scan import card_numbers_in
from tests.e2e.conftest import Stack, new_customer, wait_until

GOOD_CARD = "4242424242424242"
OTHER_CARD = "5555 5555 5555 4444"  # as a person types it
DECLINED_CARD = "4000000000000002"


def place(stack: Stack, items: list[tuple[str, int, float]], card: str) -> dict[str, Any]:
    """Place an order paid by ``card`` as its customer; return the order."""
    customer = new_customer()
    body = {
        "customer_id": customer,
        "items": [{"product_id": p, "quantity": q, "price": price} for p, q, price in items],
        "total_amount": round(sum(q * price for _, q, price in items), 2),
        "card_details": {"number": card},
    }
    response = stack.as_customer(customer).post(stack.url("order", "/orders"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    order = response.json()
    digits = card.replace(" ", "")
    assert (order["card_last4"], order["card_brand"]) == (digits[-4:], "visa" if digits[0] == "4" else "mastercard")
    assert digits not in response.text
    return order


def ended(stack: Stack, order_id: str, timeout: float = 90) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        order = stack.http.get(stack.url("order", f"/orders/{order_id}"), timeout=5).json()
        return order if order.get("status") in ("completed", "failed") else None

    return wait_until(check, timeout, what=f"order {order_id} to end")


def outcome(order: dict[str, Any]) -> str:
    return order["status"] if order["status"] == "completed" else order["failure_reason"]


def test_no_card_number_is_kept_anywhere_after_orders_of_every_ending(stack: Stack) -> None:
    placed = {
        "completed": place(stack, [("usb_cable", 1, 9.99)], GOOD_CARD),
        "payment_declined": place(stack, [("usb_cable", 1, 9.99)], DECLINED_CARD),
        "out_of_stock": place(stack, [("rare_item", 1000, 99.99)], OTHER_CARD),
        "invalid_order": place(stack, [("usb_cable", 1, 1.99)], GOOD_CARD),  # not the catalogue's price
    }
    for expected, order in placed.items():
        assert outcome(ended(stack, order["order_id"])) == expected
    # Without a payment worker the next two wait for their payment: one is cancelled meanwhile, the
    # other runs past the payment deadline. The vault (the payment API) still takes their cards.
    stack.stop_worker("payment")
    try:
        placed["cancelled"] = place(stack, [("usb_cable", 1, 9.99)], GOOD_CARD)
        placed["payment_timeout"] = place(stack, [("usb_cable", 1, 9.99)], OTHER_CARD)
        cancelled = placed["cancelled"]["order_id"]
        wait_until(lambda: payment_requested(stack, cancelled), what="the payment of the order to cancel")
        cancel = stack.http.post(stack.url("order", f"/orders/{cancelled}/cancel"), timeout=5)
        assert cancel.status_code == 202, cancel.text
        assert outcome(ended(stack, cancelled)) == "cancelled"
        timeout = stack.settings.saga.payment_timeout_s + 60
        assert outcome(ended(stack, placed["payment_timeout"]["order_id"], timeout)) == "payment_timeout"
    finally:
        stack.start_worker("payment")

    orders = stack.db("order")["orders"]
    tokens = [orders.find_one({"_id": o["order_id"]})["payment_method_token"] for o in placed.values()]
    assert all(token and token.startswith("pm_") for token in tokens), tokens
    vault = stack.db("payment")["payment_methods"]
    wait_until(lambda: vault.count_documents({"_id": {"$in": tokens}}) == 0, 60, what="the vault to forget the cards")

    found = {
        **numbers_in_databases(stack),
        **numbers_on_topics(stack),
        **{f"log {path.name}": card_numbers_in(text) for path, text in stack.logs_written().items()},
    }
    assert {where: numbers for where, numbers in found.items() if numbers} == {}
    assert any(where.startswith("topic ") for where in found), "no topic was read"
    assert any(where.startswith("log ") for where in found), "no log was read"


def payment_requested(stack: Stack, order_id: str) -> bool:
    saga = stack.http.get(stack.url("orchestrator", f"/flows/{order_id}"), timeout=5)
    return saga.status_code == 200 and saga.json().get("state") == "awaiting_payment"


def numbers_in_databases(stack: Stack) -> dict[str, list[str]]:
    """Every collection of every database of the stack (e2e_*), document by document."""
    client = make_mongo_client(stack.settings.mongo)
    try:
        found = {}
        for database in sorted(name for name in client.list_database_names() if name.startswith("e2e_")):
            for collection in client[database].list_collection_names():
                text = "\n".join(json_util.dumps(doc) for doc in client[database][collection].find())
                found[f"collection {database}.{collection}"] = card_numbers_in(text)
        return found
    finally:
        client.close()


def numbers_on_topics(stack: Stack) -> dict[str, list[str]]:
    """Every message (value, key and headers) of every topic of the stack, read from the beginning."""
    prefix = stack.settings.kafka.topic_prefix
    admin = AdminClient(client_config(stack.settings.kafka))
    names = admin.list_topics(timeout=30).topics
    topics = sorted(name.removeprefix(prefix) for name in names if name.startswith(prefix))
    found: dict[str, list[str]] = {f"topic {topic}": [] for topic in topics}
    for msg in read_topics(stack.settings, topics):
        parts = [msg.value() or b"", msg.key() or b""] + [value or b"" for _name, value in msg.headers() or []]
        text = " ".join(part.decode("utf-8", "replace") for part in parts)
        found[f"topic {msg.topic().removeprefix(prefix)}"] += card_numbers_in(text)
    return found
