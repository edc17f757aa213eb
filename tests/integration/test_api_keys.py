"""API keys in the real store: what is kept of a key, revocation, and `python main.py keys`."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pymongo.database import Database

from shared.apikeys import KEY_PATTERN, KeyCache, MongoKeyStore, new_key
from shared.auth import SCOPES
from shared.config import ROOT, load_settings, process_env
from shared.mongo import make_mongo_client


@pytest.fixture
def database() -> Iterator[tuple[str, Database]]:
    name = f"test_auth_{uuid.uuid4().hex[:8]}"
    settings = load_settings(environment="test")
    client = make_mongo_client(settings.mongo)
    try:
        yield name, client[name]
    finally:
        client.drop_database(name)
        client.close()


def test_the_store_keeps_only_a_hash_and_revocation_is_seen_once_the_cache_expires(
    database: tuple[str, Database],
) -> None:
    _, db = database
    store = MongoKeyStore(db["api_keys"])
    whole, stored = new_key("checkout backend", ["orders:write:any", "orders:read:any"], SCOPES)
    store.add(stored)

    [doc] = list(db["api_keys"].find())
    secret = KEY_PATTERN.fullmatch(whole).group(2)
    assert secret not in str(doc)
    assert doc["_id"] == stored.key_id and doc["scopes"] == ["orders:write:any", "orders:read:any"]

    fresh = KeyCache(store, ttl_s=0)
    assert fresh.check(whole) == store.get(stored.key_id)
    assert store.revoke(stored.key_id, datetime.now(UTC))
    assert not store.revoke(stored.key_id, datetime.now(UTC))  # once
    assert fresh.check(whole) is None
    assert [k.key_id for k in store.all()] == [stored.key_id]
    assert store.all()[0].revoked_at is not None


def run_keys(database_name: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**process_env(), "AUTH_DATABASE": database_name, "ENVIRONMENT": "test"}
    return subprocess.run(
        [sys.executable, "main.py", "keys", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_keys_are_created_listed_and_revoked_from_the_command_line(database: tuple[str, Database]) -> None:
    name, db = database
    created = run_keys(name, "create", "--name", "ops team", "--scopes", "monitoring:read", "dlq:replay")
    assert created.returncode == 0, created.stderr
    header, whole = created.stdout.strip().splitlines()
    assert whole.startswith("ek_") and "only time the key is shown" in created.stderr
    key_id = header.split()[2]

    listed = run_keys(name, "list")
    assert key_id in listed.stdout and "active" in listed.stdout and "monitoring:read dlq:replay" in listed.stdout
    assert KEY_PATTERN.fullmatch(whole).group(2) not in listed.stdout

    assert run_keys(name, "revoke", key_id).returncode == 0
    assert "revoked" in run_keys(name, "list").stdout
    assert run_keys(name, "revoke", key_id).returncode == 1
    assert KeyCache(MongoKeyStore(db["api_keys"]), 0).check(whole) is None

    refused = run_keys(name, "create", "--name", "x", "--scopes", "orders:everything")
    assert refused.returncode == 2 and "invalid choice" in refused.stderr
