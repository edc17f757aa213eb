"""Every service's OpenAPI document, fuzzed by schemathesis against the running stack.

With an admin key no operation may answer a server error or anything its document does not
describe (status, media type, error body); without credentials every operation but the public
ones answers 401. The file runs last in the tier (its name), since the fuzzer leaves odd products,
orders and notifications behind.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from shared.config import SERVICE_NAMES


@pytest.fixture(params=SERVICE_NAMES)
def api_schema(request, stack):
    service = request.param
    document = requests.get(stack.url(service, "/openapi.json"), timeout=10).json()
    document["servers"] = [{"url": stack.url(service)}]
    return schemathesis.openapi.from_dict(document)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_to_its_document_with_credentials(case, stack):
    case.call_and_validate(headers=stack.credentials.headers("ADMIN_KEY"), timeout=30)


@schema.parametrize()
@settings(max_examples=3, deadline=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
def test_every_guarded_operation_answers_401_without_credentials(case):
    response = case.call(timeout=30)
    if case.operation.definition.raw.get("security") == []:  # public: liveness and the document itself
        assert response.status_code < 500
    else:
        assert response.status_code == 401, (case.method, case.path, response.status_code, response.text[:200])
