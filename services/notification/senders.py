"""Notification senders: a JSON-lines file, the log, or SMTP, chosen by ``notification.sender``."""

from __future__ import annotations

import json
import logging
import smtplib
import threading
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from services.notification.domain import Notification, Undeliverable, now_ms
from services.notification.ports import NotificationSender
from shared.config import ROOT, NotificationSettings

logger = logging.getLogger(__name__)


def notification_record(notification: Notification) -> dict[str, Any]:
    """Return what a sender writes out about one notification."""
    return {
        "notification_id": notification.notification_id,
        "order_id": notification.order_id,
        "customer_id": notification.customer_id,
        "customer_email": notification.customer_email,
        "type": notification.type,
        "channel": notification.channel,
        "subject": notification.subject,
        "message": notification.message,
        "attempt": notification.attempts,
        "sent_at": now_ms().isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


class FileSender:
    """Append one JSON line per notification to a file, creating its directory when needed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def send(self, notification: Notification) -> None:
        """Append the notification as one JSON line."""
        line = json.dumps(notification_record(notification), ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as out:
                out.write(line)


class LogSender:
    """Write each notification to the service log."""

    def send(self, notification: Notification) -> None:
        """Log the notification."""
        logger.info(
            "notification %s (%s via %s) to customer %s: %s",
            notification.notification_id,
            notification.type,
            notification.channel,
            notification.customer_id,
            notification.subject,
        )


class SmtpSender:
    """Send email notifications through an SMTP server with the standard library."""

    def __init__(self, host: str, port: int, from_address: str, timeout_s: float = 10.0) -> None:
        self._host, self._port, self._from, self._timeout = host, port, from_address, timeout_s

    def send(self, notification: Notification) -> None:
        """Send the notification as a plain-text email to the customer's address."""
        if notification.channel != "email":
            raise Undeliverable(f"SMTP cannot deliver {notification.channel} notifications")
        if not notification.customer_email:
            raise Undeliverable("the notification has no customer_email to send to")
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = notification.customer_email
        # Header values must be single lines; event data is not trusted to be.
        message["Subject"] = " ".join(notification.subject.split())
        message["Message-ID"] = make_msgid()
        message.set_content(notification.message)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                smtp.send_message(message)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPNotSupportedError) as err:
            raise Undeliverable(f"the mail server refused the message: {err}") from err
        except smtplib.SMTPResponseException as err:
            if 500 <= err.smtp_code < 600:  # a permanent SMTP answer: retrying sends the same
                raise Undeliverable(f"the mail server refused the message: {err}") from err
            raise
        except ValueError as err:  # e.g. an address the standard library cannot encode
            raise Undeliverable(f"the message cannot be sent: {err}") from err


def make_sender(settings: NotificationSettings) -> NotificationSender:
    """Build the configured sender; a relative file path is relative to the repository root."""
    if settings.sender == "smtp":
        return SmtpSender(settings.smtp_host, settings.smtp_port, settings.smtp_from)
    if settings.sender == "log":
        return LogSender()
    path = Path(settings.file_path)
    return FileSender(path if path.is_absolute() else ROOT / path)
