"""The short chaos run that guards main in CI: 200 orders, every service killed once, one broker restart."""

from __future__ import annotations

import pytest

from tests.chaos.run import main


@pytest.mark.e2e
def test_the_system_keeps_its_invariants_through_crashes_and_a_broker_restart():
    assert main(["--orders", "200", "--rate", "8", "--order-timeout", "120", "--seed", "7", "--drain", "60"]) == 0
