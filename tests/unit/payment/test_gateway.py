"""The simulated gateway answers by the configured rules, the same way every time."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.payment.domain import card_digits
from services.payment.gateway import SimulatedGateway
from shared.config import Settings

DECLINED_CARD = "4000000000000002"
GOOD_CARD = "4242424242424242"


@pytest.mark.parametrize(
    ("amount", "card", "approved", "reason"),
    [
        (10.0, DECLINED_CARD, False, "card_declined"),
        (999999.99, DECLINED_CARD, False, "card_declined"),
        (10000.01, GOOD_CARD, False, "amount_over_limit"),
        (10000.01, None, False, "amount_over_limit"),
        (10000.00, GOOD_CARD, True, None),
        (25.0, GOOD_CARD, True, None),
        (25.0, None, True, None),
        (25.0, "5555555555554444", True, None),
    ],
)
def test_the_default_rules_decide_each_charge(
    settings: Settings, amount: float, card: str | None, approved: bool, reason: str | None
) -> None:
    gateway = SimulatedGateway(settings.payment, random_source=lambda: 0.0)
    result = gateway.charge(amount, "credit_card", card, idempotency_key="k")
    assert (result.approved, result.reason) == (approved, reason)
    assert (result.gateway_ref is not None) == approved


def test_the_failure_rate_fails_charges_whose_random_draw_falls_below_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings("payment", payment={"failure_rate": 0.3})
    draws = iter([0.29, 0.31])
    gateway = SimulatedGateway(settings.payment, random_source=lambda: next(draws))
    first = gateway.charge(5.0, "credit_card", GOOD_CARD, idempotency_key="a")
    second = gateway.charge(5.0, "credit_card", GOOD_CARD, idempotency_key="b")
    assert (first.approved, first.reason) == (False, "gateway_error")
    assert (second.approved, second.reason) == (True, None)


def test_a_zero_failure_rate_never_draws_a_random_number(settings: Settings) -> None:
    def no_draws() -> float:
        raise AssertionError("random source used")

    gateway = SimulatedGateway(settings.payment, random_source=no_draws)
    assert gateway.charge(5.0, "credit_card", None, idempotency_key="a").approved


def test_a_repeated_idempotency_key_gets_the_first_answer(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings("payment", payment={"failure_rate": 0.5})
    draws = iter([0.1, 0.9])
    gateway = SimulatedGateway(settings.payment, random_source=lambda: next(draws))
    first = gateway.charge(5.0, "credit_card", GOOD_CARD, idempotency_key="pay_x")
    again = gateway.charge(5.0, "credit_card", GOOD_CARD, idempotency_key="pay_x")
    assert first == again
    assert first.reason == "gateway_error"


def test_approved_charges_get_a_reference_derived_from_their_key(settings: Settings) -> None:
    one = SimulatedGateway(settings.payment).charge(5.0, "credit_card", None, idempotency_key="pay_1")
    other = SimulatedGateway(settings.payment).charge(5.0, "credit_card", None, idempotency_key="pay_1")
    assert one.gateway_ref == other.gateway_ref


def test_latency_sleeps_the_configured_time(make_settings: Callable[..., Settings]) -> None:
    slept: list[float] = []
    settings = make_settings("payment", payment={"latency_ms": 250})
    gateway = SimulatedGateway(settings.payment, sleep=slept.append)
    gateway.charge(5.0, "credit_card", None, idempotency_key="a")
    gateway.refund(5.0, "ref", idempotency_key="r")
    assert slept == [0.25, 0.25]


def test_the_default_settings_never_sleep(settings: Settings) -> None:
    slept: list[float] = []
    SimulatedGateway(settings.payment, sleep=slept.append).charge(5.0, "x", None, idempotency_key="a")
    assert slept == []


@pytest.mark.parametrize("number", ["²" * 13, "٤٠٠٠٠٠٠٠٠٠٠٠٠٠٠٢", "4000 0000 0000 000x"])
def test_card_numbers_take_ascii_digits_only(number):
    with pytest.raises(ValueError):
        card_digits(number)


def test_card_numbers_may_be_grouped_with_spaces_or_dashes():
    assert card_digits("4000-0000 0000-0002") == "4000000000000002"
