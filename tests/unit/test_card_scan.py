"""The card number scanner of the e2e test: Luhn-valid runs of 13 to 19 digits, wherever they are."""

from __future__ import annotations

import pytest

from tests.e2e.card_scan import card_numbers_in, luhn_valid


@pytest.mark.parametrize(
    "number", ["4242424242424242", "4000000000000002", "5555555555554444", "378282246310005", "4111111111111111"]
)
def test_test_cards_pass_the_luhn_check(number: str) -> None:
    assert luhn_valid(number)


@pytest.mark.parametrize("number", ["4242424242424241", "4000000000000001", "1234567890123"])
def test_a_changed_digit_fails_the_luhn_check(number: str) -> None:
    assert not luhn_valid(number)


def test_finds_a_card_number_embedded_in_json_and_log_text() -> None:
    text = '{"card_details":{"number":"4000000000000002"}} charging card=4242424242424242, ok [378282246310005]'
    assert card_numbers_in(text) == ["4000000000000002", "4242424242424242", "378282246310005"]


def test_ignores_runs_that_fail_the_luhn_check_or_are_too_short_or_too_long() -> None:
    text = "order 4242424242424241 at 1733462400124 amount 424242424242 id 42424242424242424242"
    assert card_numbers_in(text) == []


def test_ignores_digits_inside_words_and_decimal_fractions() -> None:
    # A hex digest, a token and float noise may hold long digit runs; none of them is a card number.
    text = "sha 4242424242424242abc token pm_x4242424242424242 total 0.4242424242424242 ****4242"
    assert card_numbers_in(text) == []
