"""Fixtures of the order service's unit tests: the service over an in-memory repository."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from services.order.app import bootstrap, create_app
from services.order.service import OrderService
from shared.config import Settings
from tests.unit.order.fakes import FakeCardVault, InMemoryOrderRepository


@pytest.fixture
def repo() -> InMemoryOrderRepository:
    return InMemoryOrderRepository()


@pytest.fixture
def vault() -> FakeCardVault:
    return FakeCardVault()


@pytest.fixture
def service(
    make_settings: Callable[..., Settings], repo: InMemoryOrderRepository, vault: FakeCardVault
) -> OrderService:
    return bootstrap(make_settings("order"), orders=repo, vault=vault)


@pytest.fixture
def client(make_settings: Callable[..., Settings], service: OrderService) -> FlaskClient:
    return create_app(make_settings("order"), service=service).test_client()
