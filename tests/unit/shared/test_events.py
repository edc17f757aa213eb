import json

import pytest

from shared.events import ALL_TOPICS, DEAD_LETTER_TOPIC, Envelope, InvalidEvent, redact_payload, scrub_card_numbers
from shared.outbox import outbox_document, outbox_fields


def created(**overrides):
    return Envelope(event_type="OrderCreated", order_id="o-1", source="order", data={"total_amount": 1.5}, **overrides)


def test_an_envelope_survives_the_wire():
    event = created(customer_id="c-1")
    again = Envelope.from_json(event.to_json())
    assert again == event
    assert again.topic == "orders.created"
    assert again.key == b"o-1"
    assert again.correlation_id == "o-1"


def test_a_follow_up_event_is_caused_by_the_first():
    first = created(customer_id="c-1")
    second = first.follow("OrderValidated", "orchestrator", {"total_amount": 1.5})
    assert second.causation_id == first.event_id
    assert second.correlation_id == first.correlation_id
    assert second.customer_id == "c-1"
    assert second.event_id != first.event_id


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"[]",
        json.dumps({"event_type": "OrderCreated"}).encode(),
        json.dumps({**created().to_dict(), "event_type": "NoSuchEvent"}).encode(),
        json.dumps({**created().to_dict(), "data": "not an object"}).encode(),
        json.dumps({**created().to_dict(), "order_id": 42}).encode(),
        b"\xff\xfe",
        b"[" * 100_000,  # nesting deep enough to blow the parser's recursion limit
        None,
    ],
)
def test_malformed_messages_are_rejected_as_invalid_events(payload):
    with pytest.raises(InvalidEvent):
        Envelope.from_json(payload)


def test_unknown_fields_from_a_newer_producer_are_ignored():
    raw = {**created().to_dict(), "added_in_v2": True}
    assert Envelope.from_dict(raw).order_id == "o-1"


def test_every_seed_topic_exists():
    seed = {
        "orders.created", "orders.validated", "orders.completed", "orders.failed", "payments.requested",
        "payments.completed", "payments.failed", "inventory.reserved", "inventory.released",
        "notifications.email", "dead.letter.queue",
    }  # fmt: skip
    assert seed <= set(ALL_TOPICS)
    assert ALL_TOPICS[-1] == DEAD_LETTER_TOPIC


def test_outbox_entries_are_keyed_by_event_id():
    event = created()
    assert outbox_document([event]) == {event.event_id: event.to_dict()}
    assert outbox_fields([event]) == {f"outbox.{event.event_id}": event.to_dict()}


def test_card_numbers_are_masked_in_payloads_kept_for_inspection():
    event = Envelope(
        event_type="PaymentRequested",
        order_id="o-1",
        source="orchestrator",
        data={"amount": 5.0, "card_details": {"number": "4000000000000002"}},
    )
    kept = redact_payload(event.to_json())
    assert b"4000000000000002" not in kept
    assert json.loads(kept)["data"]["card_details"]["number"] == "****0002"
    assert Envelope.from_json(kept).order_id == "o-1"
    assert b"4242424242424242" not in redact_payload(b'{"broken": "4242 4242 4242 4242')


def test_card_numbers_are_masked_in_free_text_but_dates_and_ids_are_kept():
    text = "input_value='4242-4242-4242-4242' at 2026-11-21T10:00:00 order 123 offset 42"
    assert scrub_card_numbers(text) == "input_value='****4242' at 2026-11-21T10:00:00 order 123 offset 42"


def test_log_lines_never_carry_a_card_number():
    import logging

    from shared.logs import JsonFormatter, TextFormatter

    try:
        raise ValueError("bad card 4000 0000 0000 0002")
    except ValueError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "card %s", ("4000000000000002",), exc_info=None)
        record.exc_info = __import__("sys").exc_info()
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert "4000000000000002" not in line and "4000 0000 0000 0002" not in line
        assert "****0002" in line
