"""What the workers' batch tests compare a batch with: the same events through the single handlers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from shared.events import Envelope
from shared.kafka_utils import PermanentError


def one_by_one(
    handlers: Mapping[str, Callable[[Any, Envelope], None]], service: Any, events: list[Envelope]
) -> dict[str, str]:
    """Handle ``events`` in order as the consumer would one at a time; return the refused ones' errors by event id."""
    refused = {}
    for event in events:
        try:
            handlers[event.event_type](service, event)
        except PermanentError as err:
            refused[event.event_id] = str(err)
    return refused
