"""HttpHealthProbe against real HTTP servers answering like shared.web's /health/detailed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from services.monitoring.health import HttpHealthProbe
from shared.config import Settings, load_settings
from shared.web import create_service_app


def serve(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


def failing() -> None:
    raise ConnectionError("mongo went away")


@pytest.fixture
def settings() -> Settings:
    return load_settings("order", environment="test")


@pytest.fixture
def healthy_url(settings: Settings) -> Iterator[str]:
    yield from serve(create_service_app(settings, "order", {"mongo": lambda: None}))


@pytest.fixture
def degraded_url(settings: Settings) -> Iterator[str]:
    yield from serve(create_service_app(settings, "order", {"mongo": failing, "kafka": lambda: None}))


@pytest.fixture
def slow_url(settings: Settings) -> Iterator[str]:
    # The sleep is the slow dependency under test: its check outlasts the probe's timeout.
    yield from serve(create_service_app(settings, "order", {"mongo": lambda: time.sleep(2)}))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_healthy_service_is_up_with_its_dependencies(healthy_url: str):
    health = HttpHealthProbe(2).check("order", healthy_url)
    assert (health.status, health.http_status, health.error) == ("up", 200, None)
    assert health.dependencies["mongo"]["status"] == "up"
    assert health.latency_ms is not None


def test_a_service_with_a_broken_dependency_is_degraded(degraded_url: str):
    health = HttpHealthProbe(2).check("order", degraded_url)
    assert (health.status, health.http_status) == ("degraded", 503)
    assert health.error == "dependencies down: mongo"
    assert "mongo went away" in health.dependencies["mongo"]["error"]


def test_a_service_nobody_answers_for_is_down():
    health = HttpHealthProbe(1).check("order", f"http://127.0.0.1:{free_port()}")
    assert health.status == "down"
    assert health.http_status is None
    assert "ConnectionError" in health.error


def test_a_service_slower_than_the_timeout_is_down(slow_url: str):
    health = HttpHealthProbe(0.3).check("order", slow_url)
    assert health.status == "down"
    assert "Timeout" in health.error
