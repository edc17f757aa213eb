"""HttpCardVault against the real payment API served over HTTP (in-memory stores, keys checked)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from werkzeug.serving import make_server

from services.order.domain import PaymentVaultUnavailable
from services.order.vault import HttpCardVault
from services.payment.app import bootstrap, create_app
from shared.apikeys import InMemoryKeyStore, KeyCache, new_key
from shared.auth import SCOPES, Authenticator
from shared.config import Settings
from tests.unit.monitoring.test_health_probe import serve
from tests.unit.payment.fakes import VAULT_KEY, InMemoryPaymentRepository, InMemoryStoredCardRepository

KEYS = InMemoryKeyStore()
ORDER_KEY, _stored = new_key("order", ["payments:vault"], SCOPES)
KEYS.add(_stored)
READER_KEY, _stored = new_key("reader", ["payments:read"], SCOPES)
KEYS.add(_stored)


@pytest.fixture
def cards() -> InMemoryStoredCardRepository:
    return InMemoryStoredCardRepository()


def payment_api(
    make_settings: Callable[..., Settings], cards: InMemoryStoredCardRepository, key: str | None
) -> Iterator[str]:
    settings = make_settings("payment", auth={"mode": "on"}, payment={"vault_key": key})
    app = create_app(settings, service=bootstrap(settings, payments=InMemoryPaymentRepository(), cards=cards))
    app.extensions["authenticator"] = Authenticator(settings.auth, KeyCache(KEYS, 5))
    yield from serve(app)


@pytest.fixture
def url(make_settings, cards) -> Iterator[str]:
    yield from payment_api(make_settings, cards, VAULT_KEY.get_secret_value())


@pytest.fixture
def url_without_vault_key(make_settings, cards) -> Iterator[str]:
    yield from payment_api(make_settings, cards, None)


def test_the_card_goes_to_the_vault_and_only_token_brand_and_last_four_come_back(url, cards) -> None:
    card = HttpCardVault(url, ORDER_KEY, timeout_s=5).store("5555555555554444")
    assert (card.brand, card.last4) == ("mastercard", "4444")
    assert list(cards.cards) == [card.token]


@pytest.mark.parametrize("key", [READER_KEY, None])
def test_a_key_without_the_vault_scope_makes_the_vault_unavailable_and_says_so(url, cards, key, caplog) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(PaymentVaultUnavailable):
        HttpCardVault(url, key, timeout_s=5).store("4242424242424242")
    assert cards.cards == {}
    assert "HTTP 40" in caplog.text and "4242424242424242" not in caplog.text


def test_a_payment_service_without_a_vault_key_makes_the_vault_unavailable(url_without_vault_key) -> None:
    with pytest.raises(PaymentVaultUnavailable, match="503"):
        HttpCardVault(url_without_vault_key, ORDER_KEY, timeout_s=5).store("4242424242424242")


def test_a_payment_service_that_does_not_answer_makes_the_vault_unavailable() -> None:
    server = make_server("127.0.0.1", 0, lambda environ, start: [])
    port = server.server_port
    server.server_close()  # nothing listens there any more
    with pytest.raises(PaymentVaultUnavailable, match="did not answer"):
        HttpCardVault(f"http://127.0.0.1:{port}", ORDER_KEY, timeout_s=2).store("4242424242424242")
