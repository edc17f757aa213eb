"""Ports shared by every service: publishing events and remembering handled ones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from shared.events import Envelope

DeliveryCallback = Callable[[Exception | None], None]


class EventPublisher(Protocol):
    def publish(self, event: Envelope, on_delivery: DeliveryCallback | None = None) -> None:
        """Queue ``event`` for its topic; ``on_delivery`` is told the outcome."""

    def poll(self, timeout: float) -> None:
        """Serve delivery reports for up to ``timeout`` seconds."""

    def flush(self, timeout: float) -> int:
        """Wait for queued events to be delivered; return how many are still queued."""


class Inbox(Protocol):
    def seen(self, event_id: str) -> bool:
        """Return True when this consumer group already applied ``event_id``."""

    def mark(self, event_id: str) -> None:
        """Record that ``event_id`` has been applied."""
