"""Development credentials: a JWT secret, API keys and a demo customer's token for a local stack.

``python -m devstack.credentials`` (run by ``make run``) writes two files under ``.local/``, each
created with mode 600:

- ``auth.env``: what the services read (JWT_SECRET, the payment vault's key, the order and
  monitoring services' own keys), as defaults beside ``infra.env``;
- ``tokens.env``: what a person uses (``source .local/tokens.env``): ADMIN_KEY, OPERATOR_KEY,
  CHECKOUT_KEY, METRICS_KEY, CUSTOMER_ID and CUSTOMER_TOKEN.

Keys still valid in the store are kept, and so are the JWT secret and the vault key (a new vault key
would leave the cards in the vault unreadable); the customer token is minted again on every run.
Test and benchmark stacks call ``provision`` for credentials of their own.
"""

from __future__ import annotations

import argparse
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.fernet import Fernet

from shared.apikeys import KeyCache, MongoKeyStore, new_key
from shared.auth import SCOPES
from shared.config import LOCAL_DIR, Settings, load_settings, process_env, read_env_file
from shared.mongo import make_mongo_client

AUTH_ENV_FILE = LOCAL_DIR / "auth.env"
TOKENS_FILE = LOCAL_DIR / "tokens.env"
DEMO_CUSTOMER = "customer-demo"
CUSTOMER_TOKEN_TTL = timedelta(hours=12)

# The keys a local stack gets: name -> scopes. The services' own keys carry only what they call.
KEYS: dict[str, tuple[str, ...]] = {
    "ADMIN_KEY": ("admin",),
    "OPERATOR_KEY": (
        "monitoring:read",
        "sagas:read",
        "orders:read:any",
        "inventory:read",
        "payments:read",
        "notifications:read",
        "metrics:read",
        "dlq:replay",
    ),
    "CHECKOUT_KEY": ("orders:write:any", "orders:read:any", "orders:cancel:any", "inventory:read"),
    "METRICS_KEY": ("metrics:read",),
    "MONITORING_API_KEY": ("monitoring:read",),
    # The order API hands card numbers to the payment service's vault.
    "ORDER_API_KEY": ("payments:vault",),
}
SERVICE_SIDE = ("MONITORING_API_KEY", "ORDER_API_KEY")


@dataclass(frozen=True)
class Credentials:
    jwt_secret: str
    keys: dict[str, str]  # env name -> the whole key
    issuer: str
    audience: str
    vault_key: str  # PAYMENT_VAULT_KEY: the Fernet key of the payment service's card vault

    def customer_token(self, customer_id: str, ttl: timedelta = CUSTOMER_TOKEN_TTL, **claims: object) -> str:
        return mint_customer_token(self.jwt_secret, customer_id, self.issuer, self.audience, ttl, **claims)

    @property
    def service_env(self) -> dict[str, str]:
        """What the services' processes need: the JWT secret, the vault key and their own keys."""
        return {
            "JWT_SECRET": self.jwt_secret,
            "PAYMENT_VAULT_KEY": self.vault_key,
            **{name: self.keys[name] for name in SERVICE_SIDE},
        }

    def headers(self, key_name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[key_name]}"}


def mint_customer_token(
    secret: str, customer_id: str, issuer: str, audience: str, ttl: timedelta, **claims: object
) -> str:
    """An HS256 token for ``customer_id``, as a development identity provider would issue it."""
    now = datetime.now(UTC)
    payload = {"sub": customer_id, "iss": issuer, "aud": audience, "iat": now, "exp": now + ttl, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def provision(
    settings: Settings,
    *,
    jwt_secret: str | None = None,
    vault_key: str | None = None,
    keep: dict[str, str] | None = None,
) -> Credentials:
    """Make the keys of a stack in ``settings.auth.database`` (keeping those in ``keep`` that are still
    valid there), a JWT secret and a vault key (``jwt_secret`` and ``vault_key`` if given)."""
    client = make_mongo_client(settings.mongo)
    try:
        store = MongoKeyStore(client[settings.auth.database]["api_keys"])
        check = KeyCache(store, ttl_s=0)
        keys = {}
        for env_name, scopes in KEYS.items():
            kept = (keep or {}).get(env_name)
            stored = check.check(kept) if kept else None
            if kept and stored is not None and set(stored.scopes) == set(scopes):
                keys[env_name] = kept
                continue
            whole, stored = new_key(f"local {env_name.lower().removesuffix('_key').replace('_', ' ')}", scopes, SCOPES)
            store.add(stored)
            keys[env_name] = whole
    finally:
        client.close()
    return Credentials(
        jwt_secret or secrets.token_urlsafe(48),
        keys,
        settings.auth.issuer,
        settings.auth.audience,
        vault_key or Fernet.generate_key().decode(),
    )


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a file readable by its owner only from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    partial.replace(path)


def local(settings: Settings) -> Credentials:
    """The local stack's credentials: kept from the last run where still valid, written to .local/."""
    previous = {**read_env_file(AUTH_ENV_FILE), **read_env_file(TOKENS_FILE)}
    credentials = provision(
        settings, jwt_secret=previous.get("JWT_SECRET"), vault_key=previous.get("PAYMENT_VAULT_KEY"), keep=previous
    )
    service_side = "\n".join(f"{name}={value}" for name, value in credentials.service_env.items())
    write_private(
        AUTH_ENV_FILE,
        "# Written by `python -m devstack.credentials` (make run): what the local services read.\n"
        + service_side
        + "\n",
    )
    token = credentials.customer_token(DEMO_CUSTOMER)
    person = {**{n: v for n, v in credentials.keys.items() if n not in SERVICE_SIDE}}
    lines = [f"export {name}={value}" for name, value in person.items()]
    lines += [f"export CUSTOMER_ID={DEMO_CUSTOMER}", f"export CUSTOMER_TOKEN={token}"]
    write_private(
        TOKENS_FILE,
        "# Written by `make run`. Use: source .local/tokens.env\n"
        f"# CUSTOMER_TOKEN is {DEMO_CUSTOMER}'s and expires in {CUSTOMER_TOKEN_TTL}; `make run` mints a new one.\n"
        + "\n".join(lines)
        + "\n",
    )
    return credentials


def from_local_files() -> Credentials:
    """The credentials `make run` wrote to .local/, for tools run against that stack (bench, locust)."""
    values = {**read_env_file(AUTH_ENV_FILE), **read_env_file(TOKENS_FILE)}
    if "JWT_SECRET" not in values or "ADMIN_KEY" not in values:
        raise SystemExit(f"no local credentials in {AUTH_ENV_FILE} and {TOKENS_FILE}: start the stack with `make run`")
    settings = load_settings(env=process_env())
    keys = {name: values[name] for name in KEYS if name in values}
    return Credentials(
        values["JWT_SECRET"], keys, settings.auth.issuer, settings.auth.audience, values.get("PAYMENT_VAULT_KEY", "")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    settings = load_settings(env=process_env())
    if settings.auth.mode == "off":
        print("AUTH_MODE=off: no credentials needed (every caller is an admin); not writing any")
        return 0
    local(settings)
    print(f'credentials: {TOKENS_FILE} (source it; then curl -H "Authorization: Bearer $CUSTOMER_TOKEN" ...)')
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
