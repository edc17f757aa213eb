"""Notification use cases: send one directly (REST), deliver the saga's, and look them up.

Exactly one notification per order and type: a NotificationRequested gets the id
``ntf_<order_id>_<type>``, so a redelivered event finds the stored one. A sent one is left
alone; a pending or failed one (a crash before sending, or a failed send the runner retries)
is sent now. A crash after sending but before the ``sent`` write sends it once more, so
delivery is at least once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import Counter

from services.notification.domain import (
    SAGA_TYPES,
    SENT,
    DeliveryFailed,
    DuplicateNotification,
    Notification,
    NotificationNotFound,
    Undeliverable,
    now_ms,
    saga_notification_id,
)
from services.notification.ports import NotificationRepository, NotificationSender
from shared.events import Envelope

logger = logging.getLogger(__name__)

SOURCE = "notification"
SENT_TOTAL = Counter("notifications_sent_total", "Notifications delivered", ["type", "channel"])
FAILED_TOTAL = Counter("notifications_failed_total", "Notification delivery attempts that failed")


@dataclass(frozen=True)
class NotificationRequest:
    customer_id: str
    type: str
    message: str
    subject: str
    channel: str = "email"
    customer_email: str | None = None
    order_id: str | None = None


def new_notification_id() -> str:
    return f"ntf_{uuid.uuid4().hex}"


class NotificationService:
    def __init__(
        self,
        notifications: NotificationRepository,
        sender: NotificationSender,
        *,
        sends_per_write: int,
        clock: Callable[[], datetime] = now_ms,
        new_id: Callable[[], str] = new_notification_id,
    ) -> None:
        self._notifications = notifications
        self._sender = sender
        # A batch is sent this many at a time, each group stored as sent before the next is sent: a
        # crash or an outage mid-batch then repeats at most one group's sends (at-least-once, as one by one).
        self._sends_per_write = sends_per_write
        self._clock = clock
        self._new_id = new_id

    def send(self, request: NotificationRequest) -> Notification:
        """Store and send a notification now; raise ``DeliveryFailed`` when sending fails."""
        notification = self._new(self._new_id(), request)
        self._notifications.add(notification)
        self._deliver(notification, events=())
        return notification

    def process_notification_request(self, request: NotificationRequest, cause: Envelope) -> None:
        """Send the saga's notification of an order once and queue NotificationSent."""
        notification_id = self._saga_id(request)
        notification = self._new(notification_id, request)
        try:
            self._notifications.add(notification)
        except DuplicateNotification:
            notification = self.get(notification_id)
            if notification.status == SENT:
                logger.info("notification %s was already sent", notification_id)
                return
            logger.warning("notification %s is %s; sending it now", notification_id, notification.status)
        self._deliver(notification, events=[self._sent_event(notification, cause)])

    def process_notification_requests(self, requests: Sequence[tuple[NotificationRequest, Envelope]]) -> None:
        """Deliver many saga notifications as ``process_notification_request`` would one by one,
        ``sends_per_write`` at a time: the new notifications in one write, then the sent ones, with
        their replies, in another.

        One already stored (a redelivery, or twice in the batch) goes the single path after the
        rest. A failed send stores the ones sent before it and raises as the single path does; the
        runner then takes the batch one event at a time, and each finds its notification sent or
        still to send.
        """
        step = self._sends_per_write
        for start in range(0, len(requests), step):
            self._deliver_group(requests[start : start + step])

    def _deliver_group(self, requests: Sequence[tuple[NotificationRequest, Envelope]]) -> None:
        notifications = [self._new(self._saga_id(request), request) for request, _cause in requests]
        added = self._notifications.add_all(notifications)
        sent: list[tuple[Notification, tuple[Envelope, ...]]] = []
        try:
            for notification, (_request, cause), ok in zip(notifications, requests, added, strict=True):
                if not ok:
                    continue
                self._send(notification)
                sent.append((notification, (self._sent_event(notification, cause),)))
        finally:
            stored = self._notifications.update_all(sent) if sent else []
            for (notification, _events), ok in zip(sent, stored, strict=True):
                if ok:
                    _count_sent(notification)
        for (request, cause), ok in zip(requests, added, strict=True):
            if not ok:
                self.process_notification_request(request, cause)

    def get(self, notification_id: str) -> Notification:
        """Return the notification or raise ``NotificationNotFound``."""
        notification = self._notifications.get(notification_id)
        if notification is None:
            raise NotificationNotFound(notification_id)
        return notification

    def list_for_customer(self, customer_id: str, limit: int = 50) -> list[Notification]:
        """Return the customer's notifications, newest first."""
        return self._notifications.list_by_customer(customer_id, limit)

    @staticmethod
    def _saga_id(request: NotificationRequest) -> str:
        if request.order_id is None:
            raise ValueError("a saga notification belongs to an order")
        return saga_notification_id(request.order_id, request.type)

    @staticmethod
    def _sent_event(notification: Notification, cause: Envelope) -> Envelope:
        data = {
            "notification_id": notification.notification_id,
            "type": notification.type,
            "channel": notification.channel,
        }
        return cause.follow("NotificationSent", SOURCE, data)

    def _new(self, notification_id: str, request: NotificationRequest) -> Notification:
        return Notification(
            notification_id=notification_id,
            customer_id=request.customer_id,
            type=request.type,
            channel=request.channel,
            subject=request.subject,
            message=request.message,
            created_at=self._clock(),
            order_id=request.order_id,
            customer_email=request.customer_email,
        )

    def _deliver(self, notification: Notification, events: Iterable[Envelope]) -> None:
        self._send(notification)
        if self._notifications.update(notification, events=events):
            _count_sent(notification)

    def _send(self, notification: Notification) -> None:
        """Send and mark sent in memory; a failure is stored and raised as DeliveryFailed."""
        notification.begin_attempt()
        try:
            self._sender.send(notification)
        except Exception as err:
            raise self._failed(notification, err) from err
        notification.mark_sent(self._clock())

    def _failed(self, notification: Notification, err: Exception) -> DeliveryFailed:
        """Store the failed attempt and say how the runner should treat it."""
        notification.mark_failed(f"{type(err).__name__}: {err}")
        self._notifications.update(notification)
        FAILED_TOTAL.inc()
        permanent = isinstance(err, Undeliverable)
        return DeliveryFailed(
            notification.notification_id,
            notification.error or "",
            permanent=permanent,
            # Connection trouble (refused, reset, timed out, server gone): the server is down.
            transient=not permanent and isinstance(err, OSError),
        )


def _count_sent(notification: Notification) -> None:
    kind = notification.type if notification.type in SAGA_TYPES else "other"
    SENT_TOTAL.labels(kind, notification.channel).inc()
