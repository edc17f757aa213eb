"""The card vault: numbers kept encrypted behind tokens, revealed for the saga's charge, forgotten once
the payment is settled or the order failed, and expired when nobody forgot them."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from flask.testing import FlaskClient
from pydantic import SecretStr

from services.payment.app import WORKER, bootstrap, create_app
from services.payment.domain import VaultUnavailable, card_brand
from services.payment.handlers import handle_batch
from services.payment.service import PaymentService
from shared.config import Settings
from shared.events import Envelope
from tests.unit.orchestrator.fakes import FakeClock
from tests.unit.payment.fakes import (
    VAULT_KEY,
    InMemoryPaymentRepository,
    InMemoryStoredCardRepository,
    ScriptedGateway,
    in_memory_vault,
)
from tests.unit.payment.support import DECLINED_CARD, GOOD_CARD, build, handle, requested

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("payment", payment={"vault_key": VAULT_KEY.get_secret_value()})


@pytest.fixture
def cards() -> InMemoryStoredCardRepository:
    return InMemoryStoredCardRepository()


def by_token(token: str, order_id: str = "o-1", last4: str = "4242") -> Envelope:
    """A PaymentRequested naming its card by the vault's token, as the orchestrator sends it."""
    return requested(order_id, card=None, payment_method_token=token, card_brand="visa", card_last4=last4)


def order_failed(token: str | None, order_id: str = "o-1", reason: str = "out_of_stock") -> Envelope:
    data = {"reason": reason, "detail": reason, **({"payment_method_token": token} if token else {})}
    return Envelope("OrderFailed", order_id, "orchestrator", data)


# -- the vault itself ---------------------------------------------------------------------------


def test_a_stored_card_is_kept_encrypted_with_its_brand_last_four_and_expiry(cards) -> None:
    vault = in_memory_vault(cards, clock=lambda: T0)
    stored = vault.store(GOOD_CARD)
    assert stored.token.startswith("pm_") and len(stored.token) > 20
    assert (stored.brand, stored.last4, stored.created_at) == ("visa", "4242", T0)
    assert stored.expires_at == T0 + timedelta(seconds=3600)
    kept = cards.cards[stored.token]
    assert GOOD_CARD not in repr(kept) and GOOD_CARD not in kept.encrypted_number
    assert Fernet(VAULT_KEY.get_secret_value()).decrypt(kept.encrypted_number.encode()).decode() == GOOD_CARD
    assert vault.reveal([stored.token]) == {stored.token: GOOD_CARD}


def test_every_card_gets_a_token_of_its_own(cards) -> None:
    vault = in_memory_vault(cards)
    assert len({vault.store(GOOD_CARD).token for _ in range(20)}) == 20


def test_an_unknown_or_forgotten_token_reveals_nothing(cards) -> None:
    vault = in_memory_vault(cards)
    token = vault.store(GOOD_CARD).token
    assert vault.reveal(["pm_unknown"]) == {}
    assert vault.forget([token, "pm_unknown"]) == 1
    assert vault.reveal([token]) == {}
    assert vault.forget([token]) == 0


def test_an_expired_card_is_not_revealed_and_the_purge_deletes_it(cards) -> None:
    clock = FakeClock(T0)
    vault = in_memory_vault(cards, clock=clock, ttl_s=60.0)
    old = vault.store(GOOD_CARD).token
    clock.advance(30)
    young = vault.store(DECLINED_CARD).token
    clock.advance(30)
    assert vault.reveal([old, young]) == {young: DECLINED_CARD}
    assert vault.purge_expired() == 1
    assert set(cards.cards) == {young}


def test_a_card_does_not_decrypt_under_another_key(cards) -> None:
    token = in_memory_vault(cards).store(GOOD_CARD).token
    other = in_memory_vault(cards, key=SecretStr(Fernet.generate_key().decode()))
    assert other.reveal([token]) == {}


@pytest.mark.parametrize("key", [None, SecretStr("not-a-fernet-key")])
def test_a_vault_without_a_usable_key_refuses_cards_and_says_why(cards, key, caplog) -> None:
    with caplog.at_level(logging.ERROR):
        vault = in_memory_vault(cards, key=key)
        with pytest.raises(VaultUnavailable):
            vault.store(GOOD_CARD)
    assert cards.cards == {}
    assert "PAYMENT_VAULT_KEY" in caplog.text


@pytest.mark.parametrize(
    ("number", "brand"),
    [
        ("4242424242424242", "visa"),
        ("5555555555554444", "mastercard"),
        ("2223003122003222", "mastercard"),
        ("378282246310005", "amex"),
        ("6011111111111117", "discover"),
        ("6500000000000002", "discover"),
        ("3530111333300000", "other"),
    ],
)
def test_the_brand_comes_from_the_leading_digits(number: str, brand: str) -> None:
    assert card_brand(number) == brand


# -- POST /payment-methods ------------------------------------------------------------------------


def api(settings: Settings, cards: InMemoryStoredCardRepository) -> FlaskClient:
    service = bootstrap(settings, payments=InMemoryPaymentRepository(), cards=cards)
    return create_app(settings, service=service).test_client()


def test_post_payment_methods_keeps_the_card_and_answers_only_token_brand_and_last_four(settings, cards) -> None:
    response = api(settings, cards).post("/payment-methods", json={"card_number": "5555 5555-5555 4444"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"token", "brand", "last4"}
    assert (body["brand"], body["last4"]) == ("mastercard", "4444")
    assert list(cards.cards) == [body["token"]]
    assert "5555555555554444" not in response.get_data(as_text=True)


@pytest.mark.parametrize("number", ["4242", "4242abcd42424242", "4" * 20, 4242424242424242])
def test_post_payment_methods_refuses_what_is_not_a_card_number(settings, cards, number) -> None:
    response = api(settings, cards).post("/payment-methods", json={"card_number": number})
    assert response.status_code == 400
    assert cards.cards == {}


def test_post_payment_methods_answers_503_when_the_vault_has_no_key(make_settings, cards, caplog) -> None:
    settings = make_settings("payment", payment={"vault_key": None})
    with caplog.at_level(logging.ERROR):
        response = api(settings, cards).post("/payment-methods", json={"card_number": GOOD_CARD})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "vault_unavailable"
    assert cards.cards == {}
    assert "refusing to store a card" in caplog.text


# -- the saga's payments by token -------------------------------------------------------------------


def service_with(settings: Settings, cards: InMemoryStoredCardRepository, gateway=None) -> PaymentService:
    return build(settings, InMemoryPaymentRepository(), gateway, cards)


@pytest.mark.parametrize(("card", "status"), [(GOOD_CARD, "completed"), (DECLINED_CARD, "failed")])
def test_a_payment_by_token_charges_the_vaulted_card_then_forgets_it(settings, cards, card, status) -> None:
    repo = InMemoryPaymentRepository()
    service = build(settings, repo, None, cards)
    token = service.vault.store(card).token
    handle(service, by_token(token, last4=card[-4:]))
    payment = repo.get("pay_o-1")
    assert (payment.status, payment.card_last4) == (status, card[-4:])
    assert cards.cards == {}


def test_a_token_the_vault_no_longer_holds_fails_the_payment_without_charging(settings, cards) -> None:
    repo, gateway = InMemoryPaymentRepository(), ScriptedGateway()
    service = build(settings, repo, gateway, cards)
    handle(service, by_token("pm_expired_or_deleted"))
    payment = repo.get("pay_o-1")
    assert (payment.status, payment.reason, gateway.calls) == ("failed", "payment_method_unavailable", 0)
    [reply] = repo.events
    assert (reply.event_type, reply.data["reason"]) == ("PaymentFailed", "payment_method_unavailable")
    assert repo.order_holder("o-1") is None


def test_a_charge_cut_short_by_a_crash_keeps_the_card_until_the_redelivery_settles_it(settings, cards) -> None:
    repo, gateway = InMemoryPaymentRepository(), ScriptedGateway(ConnectionError("gateway vanished"))
    service = build(settings, repo, gateway, cards)
    token = service.vault.store(GOOD_CARD).token
    with pytest.raises(ConnectionError):
        handle(service, by_token(token))
    assert list(cards.cards) == [token]
    handle(service, by_token(token))
    assert repo.get("pay_o-1").status == "completed"
    assert cards.cards == {}


def test_a_redelivered_request_of_a_settled_payment_forgets_a_card_left_behind(settings, cards) -> None:
    service = service_with(settings, cards)
    event = by_token(service.vault.store(GOOD_CARD).token)
    kept = dict(cards.cards)
    handle(service, event)
    cards.cards.update(kept)  # as if a crash had come between the settling and the delete
    handle(service, event)
    assert cards.cards == {}


def test_a_batch_reveals_and_forgets_every_card_of_its_payments(settings, cards) -> None:
    repo, gateway = InMemoryPaymentRepository(), ScriptedGateway()
    service = build(settings, repo, gateway, cards)
    events = [by_token(service.vault.store(card).token, f"o-{n}") for n, card in enumerate([GOOD_CARD, DECLINED_CARD])]
    events.append(by_token("pm_gone", "o-9"))
    assert handle_batch(service, events) == {}
    assert {p.order_id: p.reason for p in repo.payments.values()} == {
        "o-0": None,
        "o-1": None,  # the scripted gateway approves every card
        "o-9": "payment_method_unavailable",
    }
    assert cards.cards == {}
    assert gateway.calls == 2


def test_a_failed_order_forgets_its_card_one_by_one_and_in_a_batch(settings, cards) -> None:
    service = service_with(settings, cards)
    first, second, third = (service.vault.store(GOOD_CARD).token for _ in range(3))
    handle(service, order_failed(first))
    assert set(cards.cards) == {second, third}
    handle(service, order_failed(None))  # an order without a card
    assert handle_batch(service, [order_failed(second, "o-2"), order_failed(third, "o-3", "cancelled")]) == {}
    assert cards.cards == {}


def test_the_worker_purges_expired_cards_on_a_schedule(settings, cards) -> None:
    service = service_with(settings, cards)
    [(interval, job)] = WORKER.jobs(service, settings)
    assert interval == settings.payment.vault_ttl_s / 10
    assert job() == 0
