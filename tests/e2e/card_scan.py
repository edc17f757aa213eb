"""Find card numbers in text: runs of 13 to 19 digits that pass the Luhn check."""

from __future__ import annotations

import re

# A run of digits standing on its own: not part of a longer word (a hex digest, a token) and not the
# fraction of a decimal number (float noise such as 0.30000000000000004).
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z.])[0-9]{13,19}(?![0-9A-Za-z])")


def luhn_valid(digits: str) -> bool:
    """Tell whether a string of digits passes the Luhn check (every card number does)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def card_numbers_in(text: str) -> list[str]:
    """Every run of 13 to 19 digits in ``text`` that passes the Luhn check."""
    return [run for run in _DIGIT_RUN.findall(text) if luhn_valid(run)]
