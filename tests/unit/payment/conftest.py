"""Fixtures of the payment unit tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from shared.config import Settings
from tests.unit.payment.fakes import InMemoryPaymentRepository


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings("payment")


@pytest.fixture
def repo() -> InMemoryPaymentRepository:
    return InMemoryPaymentRepository()
