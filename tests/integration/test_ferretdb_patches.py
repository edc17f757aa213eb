"""The local FerretDB finds documents by _id through its index, also under extra filter conditions.

Unpatched FerretDB 1.24 scans the whole table for every update by _id (see shared/local_infra.py).
"""

from __future__ import annotations

import pytest


def test_lookups_by_id_with_extra_conditions_use_the_id_index(mongo_db):
    if "ferretdbVersion" not in mongo_db.client.admin.command("buildInfo"):
        pytest.skip("the server is MongoDB, whose _id lookups always use the index")
    mongo_db["docs"].insert_many([{"_id": f"doc-{n}", "version": 1} for n in range(50)])
    for query in ({"_id": "doc-7"}, {"_id": "doc-7", "version": {"$gte": 1}}):
        plan = mongo_db.command("explain", {"find": "docs", "filter": query})["queryPlanner"]["Plan"]
        assert any("USING INDEX" in step for step in plan), plan
