"""The dead-letter consumer: raw messages stored, offsets stored after saving, outages waited out."""

from __future__ import annotations

import threading
from collections.abc import Callable

from confluent_kafka import KafkaError
from pymongo.errors import AutoReconnect

from services.monitoring.deadletters import RawMessage
from services.monitoring.worker import DeadLetterConsumer
from shared.events import DEAD_LETTER_TOPIC
from tests.unit.monitoring.conftest import World


class FakeError:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def fatal(self) -> bool:
        return False


class FakeMessage:
    def __init__(self, offset: int, value: bytes | None, error: FakeError | None = None) -> None:
        self._offset, self._value, self._error = offset, value, error

    def error(self) -> FakeError | None:
        return self._error

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return [("original_topic", b"orders.created")]

    def timestamp(self) -> tuple[int, int]:
        return (0, -1)  # TIMESTAMP_NOT_AVAILABLE, as for a message without one


class FakeConsumer:
    """Hands out its messages, then asks the consumer under test to stop."""

    def __init__(self, messages: list[FakeMessage], when_drained: Callable[[], None]) -> None:
        self.messages = list(messages)
        self.when_drained = when_drained
        self.subscribed: list[str] = []
        self.stored: list[int] = []
        self.closed = False

    def subscribe(self, topics: list[str]) -> None:
        self.subscribed = topics

    def poll(self, timeout: float) -> FakeMessage | None:
        if self.messages:
            return self.messages.pop(0)
        self.when_drained()
        return None

    def store_offsets(self, message: FakeMessage) -> None:
        self.stored.append(message.offset())

    def close(self) -> None:
        self.closed = True


def run(messages: list[FakeMessage], record: Callable[[RawMessage], object]) -> FakeConsumer:
    holder: list[DeadLetterConsumer] = []
    consumer = FakeConsumer(messages, lambda: holder[0].stop())
    holder.append(DeadLetterConsumer(consumer, record, retry_wait_s=0.01))  # type: ignore[arg-type]
    thread = threading.Thread(target=holder[0].run)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    return consumer


def test_raw_messages_are_stored_and_their_offsets_kept_after(world: World):
    eof = FakeMessage(0, None, FakeError(KafkaError._PARTITION_EOF))
    consumer = run([FakeMessage(3, b"\xffbad"), eof, FakeMessage(4, b"{}")], world.service.record_dead_letter)
    assert consumer.subscribed == [DEAD_LETTER_TOPIC]
    assert sorted(world.letters.letters) == ["1-3", "1-4"]
    assert consumer.stored == [3, 4]
    assert consumer.closed


def test_a_database_outage_is_waited_out(world: World):
    failures = [AutoReconnect("down"), AutoReconnect("still down")]

    def flaky(raw: RawMessage) -> bool:
        if failures:
            raise failures.pop(0)
        return world.service.record_dead_letter(raw)

    consumer = run([FakeMessage(3, b"x")], flaky)
    assert list(world.letters.letters) == ["1-3"]
    assert consumer.stored == [3]


def test_a_message_that_cannot_be_stored_for_good_is_skipped(world: World):
    def broken(raw: RawMessage) -> bool:
        raise ValueError("bug")

    consumer = run([FakeMessage(3, b"x")], broken)
    assert consumer.stored == [3]
    assert consumer.closed
