"""Fixtures for every tier; the tier marker follows the folder a test lives in."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared.config import Settings, load_settings

TESTS = Path(__file__).parent
# Seconds per test for the tiers that need more than pyproject's 120: an e2e session starts the
# six services during its first test, and a chaos run lasts minutes. A test's own
# @pytest.mark.timeout wins.
TIER_TIMEOUTS = {"e2e": 600, "chaos": 1800}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = Path(str(item.fspath)).relative_to(TESTS).parts[0]
        if tier == "integration":
            item.add_marker(pytest.mark.integration)
        elif tier == "e2e":
            item.add_marker(pytest.mark.e2e)
        if tier in TIER_TIMEOUTS and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(TIER_TIMEOUTS[tier]))


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Build test settings for a service without touching any server.

    Credentials are off unless a test asks for them (``auth={"mode": "on", ...}``): tests of a
    route's behaviour use fakes without keys or tokens; tests/unit/test_route_access.py checks every
    route with credentials on, and the e2e stack runs with them on."""

    def make(service: str | None = None, **overrides: Any) -> Settings:
        overrides["auth"] = {"mode": "off", **overrides.get("auth", {})}
        return load_settings(service, environment="test", overrides=overrides)

    return make
