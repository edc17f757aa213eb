"""The short chaos run that guards main in CI: 200 orders; every service, the broker and the store kill -9-ed."""

from __future__ import annotations

import pytest

from tests.chaos.run import main


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_the_system_keeps_its_invariants_through_kill_9_of_everything():
    argv = ["--orders", "200", "--rate", "4", "--order-timeout", "120", "--seed", "7", "--drain", "60"]
    assert main(argv) == 0
