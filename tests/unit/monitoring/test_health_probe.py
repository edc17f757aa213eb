"""HttpHealthProbe against real HTTP servers answering like shared.web's /health/detailed."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from services.monitoring.health import HttpHealthProbe
from shared.apikeys import InMemoryKeyStore, new_key
from shared.auth import SCOPES
from shared.config import Settings, load_settings
from shared.web import create_service_app

# /health/detailed needs monitoring:read: the servers check keys, the probe shows monitoring's.
KEYS = InMemoryKeyStore()
MONITORING_KEY, _stored = new_key("monitoring", ["monitoring:read"], SCOPES)
KEYS.add(_stored)
OTHER_KEY, _stored = new_key("metrics", ["metrics:read"], SCOPES)
KEYS.add(_stored)


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
    return load_settings("order", environment="test", overrides={"auth": {"mode": "on"}})


@pytest.fixture
def healthy_url(settings: Settings) -> Iterator[str]:
    yield from serve(create_service_app(settings, "order", {"mongo": lambda: None}, keys=KEYS))


@pytest.fixture
def degraded_url(settings: Settings) -> Iterator[str]:
    yield from serve(create_service_app(settings, "order", {"mongo": failing, "kafka": lambda: None}, keys=KEYS))


@pytest.fixture
def slow_url(settings: Settings) -> Iterator[str]:
    # The sleep is the slow dependency under test: its check outlasts the probe's timeout.
    yield from serve(create_service_app(settings, "order", {"mongo": lambda: time.sleep(2)}, keys=KEYS))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_healthy_service_is_up_with_its_dependencies(healthy_url: str):
    health = HttpHealthProbe(2, api_key=MONITORING_KEY).check("order", healthy_url)
    assert (health.status, health.http_status, health.error) == ("up", 200, None)
    assert health.dependencies["mongo"]["status"] == "up"
    assert health.latency_ms is not None


def test_a_service_with_a_broken_dependency_is_degraded(degraded_url: str):
    health = HttpHealthProbe(2, api_key=MONITORING_KEY).check("order", degraded_url)
    assert (health.status, health.http_status) == ("degraded", 503)
    assert health.error == "dependencies down: mongo"
    # The service names the failing dependency's kind, never the exception's text.
    assert health.dependencies["mongo"]["error"] == "ConnectionError"
    assert all("mongo went away" not in str(dep) for dep in health.dependencies.values())


@pytest.mark.parametrize("key", [None, OTHER_KEY])
def test_a_probe_without_monitoring_read_sees_the_service_down_and_says_why(healthy_url: str, key: str | None):
    health = HttpHealthProbe(2, api_key=key).check("order", healthy_url)
    assert health.status == "down"
    assert health.http_status in (401, 403)
    assert "service key was refused" in health.error


def test_a_service_nobody_answers_for_is_down():
    health = HttpHealthProbe(1).check("order", f"http://127.0.0.1:{free_port()}")
    assert health.status == "down"
    assert health.http_status is None
    assert "ConnectionError" in health.error


def test_a_service_slower_than_the_timeout_is_down(slow_url: str):
    health = HttpHealthProbe(0.3, api_key=MONITORING_KEY).check("order", slow_url)
    assert health.status == "down"
    assert "Timeout" in health.error
