"""The notification senders: a JSON-lines file, the log and SMTP."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.notification.domain import Notification, Undeliverable, now_ms
from services.notification.senders import FileSender, LogSender, SmtpSender, make_sender
from shared.config import ROOT, Settings


def a_notification(**fields: object) -> Notification:
    values = {
        "notification_id": "ntf_o-1_order_confirmation",
        "customer_id": "cust-1",
        "type": "order_confirmation",
        "channel": "email",
        "subject": "Order confirmed",
        "message": "Thank you, your order is on its way.",
        "created_at": now_ms(),
        "order_id": "o-1",
        "customer_email": "ann@example.com",
        **fields,
    }
    return Notification(**values)


def test_the_file_sender_appends_one_json_line_per_notification_creating_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "notifications.log"
    sender = FileSender(path)
    sender.send(a_notification())
    sender.send(a_notification(notification_id="ntf_2", message="second"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["notification_id"] for line in lines] == ["ntf_o-1_order_confirmation", "ntf_2"]
    assert lines[0]["customer_email"] == "ann@example.com"
    assert lines[1]["message"] == "second"


def test_make_sender_resolves_a_relative_file_path_from_the_repository_root(
    make_settings: Callable[..., Settings],
) -> None:
    sender = make_sender(make_settings("notification", notification={"file_path": "x/notes.log"}).notification)
    assert isinstance(sender, FileSender)
    assert sender.path == ROOT / "x" / "notes.log"


def test_make_sender_keeps_an_absolute_path_and_picks_the_configured_kind(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    file_settings = make_settings("notification", notification={"file_path": str(tmp_path / "n.log")})
    assert make_sender(file_settings.notification).path == tmp_path / "n.log"
    assert isinstance(make_sender(make_settings(notification={"sender": "log"}).notification), LogSender)
    assert isinstance(make_sender(make_settings(notification={"sender": "smtp"}).notification), SmtpSender)


def test_the_log_sender_logs_the_notification(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="services.notification.senders"):
        LogSender().send(a_notification())
    assert "ntf_o-1_order_confirmation" in caplog.text


class TinySmtpServer:
    """Just enough SMTP on localhost to receive one message per connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.messages: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rwb") as stream:

            def reply(line: str) -> None:
                stream.write(f"{line}\r\n".encode())
                stream.flush()

            reply("220 tiny")
            while raw := stream.readline():
                command = raw.decode().strip().upper()
                if command.startswith(("EHLO", "HELO")):
                    reply("250 tiny")
                elif command == "DATA":
                    reply("354 go on")
                    lines = []
                    while (line := stream.readline().decode()) not in (".\r\n", ""):
                        lines.append(line)
                    self.messages.append("".join(lines))
                    reply("250 stored")
                elif command == "QUIT":
                    reply("221 bye")
                    return
                else:
                    reply("250 ok")


@pytest.fixture
def smtp_server() -> Iterator[TinySmtpServer]:
    server = TinySmtpServer()
    yield server
    server.listener.close()


def test_the_smtp_sender_sends_an_email_to_the_customer(smtp_server: TinySmtpServer) -> None:
    SmtpSender("127.0.0.1", smtp_server.port, "orders@example.com", timeout_s=5).send(
        a_notification(subject="Order\r\nBcc: evil@example.com confirmed")
    )
    smtp_server.thread.join(5)
    [message] = smtp_server.messages
    assert "To: ann@example.com" in message
    assert "From: orders@example.com" in message
    assert "Subject: Order Bcc: evil@example.com confirmed" in message
    assert "\nBcc:" not in message
    assert "your order is on its way" in message


@pytest.mark.parametrize("fields", [{"customer_email": None}, {"channel": "sms"}])
def test_the_smtp_sender_refuses_what_email_cannot_deliver(fields: dict[str, object]) -> None:
    with pytest.raises(Undeliverable):
        SmtpSender("127.0.0.1", 1, "orders@example.com").send(a_notification(**fields))
