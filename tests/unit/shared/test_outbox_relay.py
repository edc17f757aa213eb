"""The outbox relay with in-memory stand-ins for the collection and the publisher."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from shared.events import Envelope
from shared.outbox import OutboxRelay

TIMING = {"retry_interval_s": 1.0, "clear_interval_s": 0.05}  # the relay's two intervals, as a service passes them
SCAN = {"recover_interval_s": 300, "scan_timeout_s": 300}  # the recovery scan's, as config.yaml sets them


class ThingsCollection:
    """The part of a collection the relay uses; its outbox scan fails ``scan_failures`` times."""

    full_name = "shop.things"

    def __init__(self, scan_failures: int = 0, leftovers: list[dict] | None = None) -> None:
        self.scan_failures = scan_failures
        self.leftovers = leftovers or []
        self.scans = 0
        self.reads = 0
        self.cleared: list[Any] = []

    def find(self, _filter: dict, _projection: dict) -> list[dict]:
        self.scans += 1
        if self.scans <= self.scan_failures:
            raise AutoReconnect("the scan timed out")
        return list(self.leftovers)

    def find_one(self, _filter: dict, _projection: dict) -> dict | None:
        self.reads += 1
        return None

    def bulk_write(self, requests: list, ordered: bool = True) -> None:
        self.cleared.extend(requests)

    def update_one(self, filter: dict, update: dict) -> None:
        self.cleared.append(filter["_id"])


class AcceptingPublisher:
    def __init__(self) -> None:
        self.published: list[str] = []
        self.polls = 0  # the relay polls once per round, after publishing what it took

    def publish(self, event: Envelope, on_delivery=None) -> None:
        self.published.append(event.event_id)
        if on_delivery:
            on_delivery(None)

    def poll(self, timeout: float) -> None:
        self.polls += 1
        time.sleep(min(timeout, 0.01))  # a producer's poll blocks for up to its timeout

    def flush(self, timeout: float) -> int:
        return 0


def wait_until(condition, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def test_a_failing_recovery_scan_neither_holds_up_new_events_nor_stops_retrying():
    things, publisher = ThingsCollection(scan_failures=2), AcceptingPublisher()
    relay = OutboxRelay(publisher, [things], retry_interval_s=0.01, clear_interval_s=0.05, **SCAN)  # type: ignore[list-item]
    relay.start()
    try:
        event = Envelope("NotificationSent", "order-1", "test")
        relay.notify(things, "doc-1", [event])  # type: ignore[arg-type]
        assert wait_until(lambda: publisher.published == [event.event_id])
        assert wait_until(lambda: things.scans == 3), "the scan was not retried after failing"
    finally:
        relay.stop(timeout=1)
    assert things.reads == 0  # the notified event was published from memory
    assert len(things.cleared) == 1


def test_an_api_relay_never_scans_and_leaves_leftovers_to_the_worker():
    things, publisher = ThingsCollection(), AcceptingPublisher()
    scan_soon = {**SCAN, "recover_interval_s": 0.01}
    relay = OutboxRelay(publisher, [things], retry_interval_s=0.01, clear_interval_s=0.05, **scan_soon)  # type: ignore[list-item]
    relay.start(scan=False)
    try:
        relay.notify(things, "doc-1", [Envelope("NotificationSent", "order-1", "test")])  # type: ignore[arg-type]
        assert wait_until(lambda: len(publisher.published) == 1)
    finally:
        relay.stop(timeout=1)
    assert relay._scanner is None  # no scanning thread was started, so none can scan later
    assert things.scans == 0


def test_recovery_publishes_the_events_it_scanned_without_reading_each_document_again(monkeypatch):
    monkeypatch.setattr("shared.outbox.RECOVERY_QUEUE_LIMIT", 2)  # the scan must wait for the relay
    events = [Envelope("NotificationSent", f"order-{n}", "test") for n in range(7)]
    leftovers = [{"_id": f"doc-{n}", "outbox": {e.event_id: e.to_dict()}} for n, e in enumerate(events)]
    things, publisher = ThingsCollection(leftovers=leftovers), AcceptingPublisher()
    relay = OutboxRelay(publisher, [things], retry_interval_s=0.01, clear_interval_s=0.05, **SCAN)  # type: ignore[list-item]
    relay.start()
    try:
        assert wait_until(lambda: len(publisher.published) == 7)
    finally:
        relay.stop(timeout=1)
    assert sorted(publisher.published) == sorted(e.event_id for e in events)
    assert things.reads == 0


def test_a_slow_rescan_waits_until_it_has_used_only_its_share_of_the_time(monkeypatch):
    clock = [100.0]

    class SlowThings(ThingsCollection):
        def find(self, _filter: dict, _projection: dict) -> list[dict]:
            clock[0] += 10.0  # a scan of a long history
            return super().find(_filter, _projection)

    class StopAfterFirstWait(threading.Event):
        waits: list[float] = []

        def wait(self, timeout: float | None = None) -> bool:
            self.waits.append(timeout or 0.0)
            self.set()
            return True

    monkeypatch.setattr("shared.outbox.time.monotonic", lambda: clock[0])
    relay = OutboxRelay(AcceptingPublisher(), [SlowThings()], **TIMING, **SCAN)  # type: ignore[list-item]
    stop = StopAfterFirstWait()
    relay._stop = stop
    relay._scan_periodically()
    assert stop.waits == [pytest.approx(10.0 / 0.02 - 10.0)]  # 490 s rather than 300


def test_wait_for_room_waits_while_the_backlog_is_at_the_limit_and_gives_up_after_the_timeout():
    things = ThingsCollection()
    relay = OutboxRelay(AcceptingPublisher(), [things], **TIMING, **SCAN)  # type: ignore[list-item]  # not started
    for n in range(3):
        relay.notify(things, f"doc-{n}", [Envelope("NotificationSent", f"order-{n}", "test")])  # type: ignore[arg-type]
    assert relay.backlog() == 3
    assert relay.wait_for_room(limit=4, timeout=0)
    started = time.monotonic()
    assert not relay.wait_for_room(limit=3, timeout=0.1)
    assert time.monotonic() - started >= 0.1
    relay.start(scan=False)  # it publishes and clears: room again
    try:
        assert relay.wait_for_room(limit=1, timeout=5)
        assert relay.backlog() == 0
    finally:
        relay.stop()


def test_acknowledged_entries_wait_for_the_clear_interval_and_a_stop_clears_them_at_once():
    things, publisher = ThingsCollection(), AcceptingPublisher()
    relay = OutboxRelay(publisher, [things], retry_interval_s=1.0, clear_interval_s=30, **SCAN)  # type: ignore[list-item]
    relay.start(scan=False)
    try:
        for n in range(3):
            relay.notify(things, f"doc-{n}", [Envelope("NotificationSent", f"order-{n}", "test")])  # type: ignore[arg-type]
        assert wait_until(lambda: len(publisher.published) == 3)
        rounds = publisher.polls
        assert wait_until(lambda: publisher.polls >= rounds + 2)  # a whole round after the acknowledgements
        assert things.cleared == []  # published at once, cleared together later
    finally:
        relay.stop(timeout=5)
    assert len(things.cleared) == 3
    assert relay.backlog() == 0
