"""The start-up atomicity probe on the real store: it passes, and each process runs it once.

Its refusal of a store that loses updates is tested in tests/unit/shared/test_atomicity_probe.py
(and on a stock FerretDB 1.24 build by hand: "lost N of M concurrent conditional updates").
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from prometheus_client import REGISTRY
from pymongo.database import Database

from shared import runtime
from shared.config import Settings
from shared.mongo import ATOMICITY_PROBE, check_atomic_updates


def _probe_updates() -> float:
    labels = {"command": "update", "collection": ATOMICITY_PROBE}
    return REGISTRY.get_sample_value("mongo_commands_total", labels) or 0.0


def test_the_store_applies_racing_conditional_updates_atomically(mongo_db: Database) -> None:
    started = time.monotonic()
    check_atomic_updates(mongo_db[ATOMICITY_PROBE], writers=16, rounds=10)  # twice the start-up race

    assert time.monotonic() - started < 5  # a start-up cost: about 0.1 s at the default size
    assert mongo_db[ATOMICITY_PROBE].count_documents({}) == 0


def test_a_process_probes_its_store_when_it_first_connects_and_then_no_more(
    service_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "_atomic_stores", set())  # as in a process that has just started
    settings = service_settings("order")
    before = _probe_updates()

    first = runtime.connect(settings)
    probed = _probe_updates()
    second = runtime.connect(service_settings("payment"))

    assert probed - before == 8 * 8  # the default race: 8 writers, 8 rounds each
    assert _probe_updates() == probed
    assert first.db[ATOMICITY_PROBE].count_documents({}) == 0
    for clients in (first, second):
        clients.mongo.close()
