"""The generic worker entry (shared.runtime.run_service_worker) wires each service as its worker
ran before: the service's handlers and batch handler, its jobs, and its outbox relay registered on
the clients for run_worker to start with the recovery scan and stop at shutdown."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

from shared import runtime
from shared.config import Settings
from shared.runtime import Clients

# The payment worker purges expired vault cards every tenth of payment.vault_ttl_s (3600 s).
JOBS = {"order": [3600.0], "payment": [360.0], "inventory": [1.0], "notification": []}


@pytest.mark.parametrize("name", sorted(JOBS))
def test_run_service_worker_wires_the_handlers_the_batch_the_jobs_and_the_relay(
    name: str, service_settings: Callable[..., Settings], monkeypatch: Any
) -> None:
    app = importlib.import_module(f"services.{name}.app")
    handlers = importlib.import_module(f"services.{name}.handlers")
    assert importlib.util.find_spec(f"services.{name}.worker") is None  # main.py runs the generic entry
    wired: dict[str, Any] = {}

    def run_worker(clients: Clients, bound: Any, **kw: Any) -> None:
        wired.update(kw, clients=clients, handlers=bound)

    monkeypatch.setattr(runtime, "run_worker", run_worker)
    settings = service_settings(name, inventory={"expiry_interval_s": 1.0})
    runtime.run_service_worker(settings, app.bootstrap, app.WORKER)
    clients = wired["clients"]
    try:
        assert set(wired["handlers"]) == set(handlers.HANDLERS)
        assert [interval for interval, _job in wired["periodic"]] == JOBS[name]
        assert wired["batch_handler"]([]) == {}
        assert len(clients.relays) == 1
        assert "group_id" not in wired  # <service>-service, run_worker's default
    finally:
        clients.mongo.close()
