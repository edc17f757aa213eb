"""Dead letters: raw messages of any shape are stored, listed and replayed to their topic."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from services.monitoring.app import bootstrap
from services.monitoring.deadletters import RawMessage, dead_letter
from services.monitoring.domain import NotReplayable, UnknownDeadLetter
from shared.kafka_utils import PublishError
from tests.unit.monitoring.conftest import World

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
HEADERS = [
    ("original_topic", b"payments.requested"),
    ("original_partition", b"3"),
    ("original_offset", b"1042"),
    ("error", b"InvalidEvent: message is not valid JSON"),
    ("attempts", b"1"),
    ("service", b"payment"),
    ("consumer_group", b"payment-service"),
]


def raw(offset: int = 9, value: bytes | None = b"\x80not json\xff", headers=HEADERS) -> RawMessage:
    return RawMessage(partition=2, offset=offset, key=b"order-1", value=value, headers=headers)


def test_a_dead_letter_keeps_where_it_came_from_and_why():
    letter = dead_letter(raw(), NOW)
    assert letter.id == "2-9"
    assert (letter.topic, letter.partition, letter.offset) == ("payments.requested", 3, 1042)
    assert letter.error == "InvalidEvent: message is not valid JSON"
    assert (letter.attempts, letter.service, letter.consumer_group) == (1, "payment", "payment-service")
    assert (letter.key, letter.key_encoding) == ("order-1", "utf-8")
    assert letter.received_at == NOW and letter.replayed_count == 0


def test_bytes_that_are_not_utf8_are_kept_as_base64():
    letter = dead_letter(raw(), NOW)
    assert letter.value_encoding == "base64"
    assert base64.b64decode(letter.value) == b"\x80not json\xff"
    assert letter.raw_value() == b"\x80not json\xff"


def test_text_values_stay_readable_and_missing_values_stay_missing():
    assert dead_letter(raw(value=b'{"half": '), NOW).value == '{"half": '
    empty = dead_letter(raw(value=None), NOW)
    assert (empty.value, empty.raw_value()) == (None, None)


def test_missing_or_garbled_headers_become_none():
    letter = dead_letter(raw(headers=[("original_partition", b"three"), ("attempts", None)]), NOW)
    assert (letter.topic, letter.partition, letter.attempts, letter.error) == (None, None, None, None)


def test_recording_the_same_dead_letter_twice_counts_it_once(world: World):
    assert world.service.record_dead_letter(raw()) is True
    assert world.service.record_dead_letter(raw()) is False
    assert world.figures.totals().dlq_total == 1
    letters, total = world.service.dead_letters(10)
    assert total == 1 and letters[0].id == "2-9"


def test_replay_sends_the_original_bytes_to_the_original_topic(world: World):
    world.service.record_dead_letter(raw())
    replayed = world.service.replay("2-9")
    assert world.publisher.sent == [
        ("payments.requested", b"order-1", b"\x80not json\xff", [("replayed_from", b"2-9")])
    ]
    assert replayed.replayed_count == 1
    assert world.service.replay("2-9").replayed_count == 2
    assert world.service.dead_letter("2-9").last_replayed_at == world.clock.now


def test_replay_of_an_unknown_letter_fails(world: World):
    with pytest.raises(UnknownDeadLetter):
        world.service.replay("0-1")


def test_a_letter_without_an_event_topic_cannot_be_replayed(world: World):
    world.service.record_dead_letter(raw(headers=[("original_topic", b"dead.letter.queue")]))
    with pytest.raises(NotReplayable):
        world.service.replay("2-9")
    assert world.publisher.sent == []


def test_replay_while_kafka_is_down_fails_and_counts_nothing(world: World):
    world.service.record_dead_letter(raw())
    world.publisher.down = True
    with pytest.raises(PublishError):
        world.service.replay("2-9")
    assert world.service.dead_letter("2-9").replayed_count == 0


def test_with_a_topic_prefix_only_prefixed_event_topics_are_replayable(world: World, make_settings):
    service = bootstrap(
        make_settings("monitoring", kafka={"topic_prefix": "test."}),
        timelines=world.timelines,
        recent=world.recent,
        figures=world.figures,
        letters=world.letters,
        health=world.health,
        probe=world.probe,
        publisher=world.publisher,
        lag=lambda: None,
        clock=world.clock,
    )
    service.record_dead_letter(raw(offset=1, headers=[("original_topic", b"test.orders.created")]))
    service.record_dead_letter(raw(offset=2, headers=[("original_topic", b"orders.created")]))
    assert service.replay("2-1").topic == "test.orders.created"
    with pytest.raises(NotReplayable):
        service.replay("2-2")
