"""Every service's OpenAPI document, fuzzed by schemathesis against the running stack.

With an admin key no operation may answer a server error or anything its document does not
describe (status, media type, error body); without credentials every operation but the public
ones answers 401. The file runs last in the tier (its name), since the fuzzer leaves odd products,
orders and notifications behind.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shared.config import SERVICE_NAMES

# What "keeps to its document" means: no 5xx, and every status, media type, header and body the
# document describes. Not positive_data_acceptance: an order's total must add up and its prices
# match the catalogue, which no JSON schema says, so schema-valid bodies are refused with 400.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=25, deadline=None, phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck)
)
PROBE = settings(max_examples=3, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))


def operations(stack, service: str) -> list:
    document = requests.get(stack.url(service, "/openapi.json"), timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    found = [result.ok() for result in schema.get_all_operations()]
    assert found, f"{service} documents no operation"
    return found


def run_each(found: list, rules: settings, check: Callable) -> None:
    for operation in found:

        @rules
        @given(case=operation.as_strategy())
        def fuzz(case) -> None:
            check(case)

        fuzz()


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_operation_keeps_to_its_document_with_credentials(stack, service):
    admin = stack.credentials.headers("ADMIN_KEY")
    run_each(
        operations(stack, service),
        FUZZ,
        lambda case: case.call_and_validate(base_url=stack.url(service), headers=admin, checks=CHECKS, timeout=30),
    )


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_guarded_operation_answers_401_without_credentials(stack, service):
    def anonymous(case) -> None:
        response = case.call(base_url=stack.url(service), timeout=30)
        if case.operation.definition.raw.get("security") == []:  # public: liveness, the document
            assert response.status_code < 500
        else:
            assert response.status_code == 401, (case.method, case.path, response.status_code, response.text[:200])

    run_each(operations(stack, service), PROBE, anonymous)
