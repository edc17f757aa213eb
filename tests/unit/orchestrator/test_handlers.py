"""The Kafka handlers of the orchestrator."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.orchestrator.app import bootstrap
from services.orchestrator.handlers import HANDLERS
from services.orchestrator.transitions import TRANSITIONS
from shared.config import Settings
from shared.events import TOPIC_BY_EVENT
from shared.kafka_utils import PermanentError, bind_handlers
from tests.unit.orchestrator.fakes import FakeClock, InMemorySagaRepository, order_created, reply


@pytest.fixture
def repo() -> InMemorySagaRepository:
    return InMemorySagaRepository()


@pytest.fixture
def handlers(make_settings: Callable[..., Settings], repo: InMemorySagaRepository) -> dict:
    return bind_handlers(HANDLERS, bootstrap(make_settings("orchestrator"), sagas=repo, clock=FakeClock()))


def test_every_event_the_saga_reacts_to_has_a_handler() -> None:
    assert set(HANDLERS) == set(TRANSITIONS)
    assert set(HANDLERS) <= set(TOPIC_BY_EVENT)


def test_handlers_drive_the_saga(handlers: dict, repo: InMemorySagaRepository) -> None:
    handlers["OrderCreated"](order_created("o-1"))
    handlers["InventoryReserved"](reply("InventoryReserved", "o-1"))

    assert repo.get("o-1").state == "awaiting_payment"


def test_a_reply_that_breaks_the_contract_is_dead_lettered_at_once(handlers: dict) -> None:
    handlers["OrderCreated"](order_created("o-1"))

    with pytest.raises(PermanentError):
        handlers["InventoryReservationFailed"](reply("InventoryReservationFailed", "o-1", reason="gremlins"))


def test_a_foreign_reply_for_an_unknown_order_is_dropped_quietly(handlers: dict, repo: InMemorySagaRepository) -> None:
    handlers["InventoryReleased"](reply("InventoryReleased", "someone-else"))

    assert repo.sagas == {}
