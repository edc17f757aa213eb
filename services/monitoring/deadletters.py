"""Dead letters: raw messages a consumer gave up on, kept with where they came from and why."""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

MAX_HEADER_LENGTH = 1000


@dataclass(frozen=True)
class RawMessage:
    """A message as it sits on the dead-letter topic: bytes and headers, no promises."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()
    timestamp_ms: int = 0  # the broker's timestamp: with partition and offset, unique across topic rebuilds


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered message with where it came from and why it was given up on."""

    id: str
    topic: str | None
    partition: int | None
    offset: int | None
    error: str | None
    attempts: int | None
    service: str | None
    consumer_group: str | None
    key: str | None
    key_encoding: str
    value: str | None
    value_encoding: str
    received_at: datetime
    replayed_count: int = 0
    last_replayed_at: datetime | None = None

    def raw_key(self) -> bytes | None:
        return decode_payload(self.key, self.key_encoding)

    def raw_value(self) -> bytes | None:
        return decode_payload(self.value, self.value_encoding)


def encode_payload(raw: bytes | None) -> tuple[str | None, str]:
    """Return bytes as text: UTF-8 when they are, base64 otherwise, with the encoding used."""
    if raw is None:
        return None, "none"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def decode_payload(text: str | None, encoding: str) -> bytes | None:
    if text is None:
        return None
    return base64.b64decode(text) if encoding == "base64" else text.encode("utf-8")


def _header_text(headers: dict[str, bytes | None], name: str) -> str | None:
    raw = headers.get(name)
    return None if raw is None else raw.decode("utf-8", errors="replace")[:MAX_HEADER_LENGTH]


def _header_int(headers: dict[str, bytes | None], name: str) -> int | None:
    text = _header_text(headers, name)
    return int(text) if text is not None and re.fullmatch(r"-?\d{1,19}", text.strip()) else None


def dead_letter(raw: RawMessage, received_at: datetime) -> DeadLetter:
    """Describe a raw dead-letter message; headers that are missing or garbled become None."""
    headers = dict(raw.headers)
    key, key_encoding = encode_payload(raw.key)
    value, value_encoding = encode_payload(raw.value)
    return DeadLetter(
        # Offsets restart at 0 when the topic is recreated (Kafka data wiped, the database kept):
        # the timestamp keeps a new dead letter from colliding with an old one and being dropped.
        id=f"{raw.partition}-{raw.offset}-{raw.timestamp_ms}" if raw.timestamp_ms else f"{raw.partition}-{raw.offset}",
        topic=_header_text(headers, "original_topic"),
        partition=_header_int(headers, "original_partition"),
        offset=_header_int(headers, "original_offset"),
        error=_header_text(headers, "error"),
        attempts=_header_int(headers, "attempts"),
        service=_header_text(headers, "service"),
        consumer_group=_header_text(headers, "consumer_group"),
        key=key,
        key_encoding=key_encoding,
        value=value,
        value_encoding=value_encoding,
        received_at=received_at,
    )
