"""Credentials: customer tokens (HS256 and JWKS), API keys (cache, revocation) and the route check."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify

from shared.apikeys import KEY_PATTERN, InMemoryKeyStore, KeyCache, new_key
from shared.auth import CUSTOMER_SCOPES, SCOPES, Authenticator, AuthError, current_principal, install, public, requires
from shared.config import AuthSettings, Settings

SECRET = "s" * 48
ISSUER, AUDIENCE = "test-issuer", "test-audience"


def auth_settings(make_settings: Callable[..., Settings], **auth: Any) -> AuthSettings:
    fields = {"mode": "on", "jwt_secret": SECRET, "issuer": ISSUER, "audience": AUDIENCE, **auth}
    return make_settings(auth=fields).auth


def token(sub: Any = "c-1", secret: str = SECRET, algorithm: str = "HS256", **claims: Any) -> str:
    now = datetime.now(UTC)
    payload = {"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + timedelta(minutes=5), **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, secret, algorithm=algorithm)


@pytest.fixture
def authenticator(make_settings: Callable[..., Settings]) -> Authenticator:
    return Authenticator(auth_settings(make_settings), None)


def test_a_customer_token_names_the_customer_and_grants_customer_scopes(authenticator: Authenticator) -> None:
    principal = authenticator.authenticate(f"Bearer {token('c-1')}", None)
    assert (principal.kind, principal.customer_id, principal.scopes) == ("customer", "c-1", CUSTOMER_SCOPES)
    assert principal.may("orders:read", "orders:read:any", "c-1")
    assert not principal.may("orders:read", "orders:read:any", "c-2")


def test_a_token_cannot_grant_more_than_a_customer_has(authenticator: Authenticator) -> None:
    principal = authenticator.authenticate(f"Bearer {token(scope='orders:read admin orders:read:any')}", None)
    assert principal.scopes == {"orders:read"}
    assert not principal.has("admin")


@pytest.mark.parametrize(
    ("presented", "why"),
    [
        (token(exp=datetime.now(UTC) - timedelta(minutes=5)), "expired"),
        (token(aud="someone-else"), "audience"),
        (token(iss="someone-else"), "issuer"),
        (token(secret="x" * 48), "signature"),
        (token(exp=None), "no expiry"),
        (token(sub=""), "empty subject"),
        (token(sub="a\x00b"), "control character in subject"),
        (jwt.encode({"sub": "c-1", "iss": ISSUER, "aud": AUDIENCE, "exp": 9999999999}, None, algorithm="none"), "none"),
        ("not.a.token", "garbage"),
    ],
)
def test_bad_tokens_are_refused(authenticator: Authenticator, presented: str, why: str) -> None:
    with pytest.raises(AuthError) as refused:
        authenticator.authenticate(f"Bearer {presented}", None)
    assert refused.value.status == 401, why
    assert 'error="invalid_token"' in refused.value.challenge


def test_an_hs256_token_is_refused_where_only_asymmetric_algorithms_are_accepted(
    make_settings: Callable[..., Settings],
) -> None:
    strict = Authenticator(auth_settings(make_settings, algorithms=["RS256"]), None)
    with pytest.raises(AuthError):
        strict.authenticate(f"Bearer {token()}", None)


def test_missing_and_malformed_credentials_are_401(authenticator: Authenticator) -> None:
    for authorization in (None, "", "Basic dXNlcjpwYXNz", "Bearer ", "Bearer"):
        with pytest.raises(AuthError) as refused:
            authenticator.authenticate(authorization, None)
        assert refused.value.status == 401


@pytest.fixture
def jwks_url() -> Iterator[tuple[str, Any]]:
    """An identity provider's JWKS endpoint serving one RSA public key (kid "k1")."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    body = json.dumps({"keys": [{**public_jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            return None

    server = HTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/.well-known/jwks.json", private
    finally:
        server.shutdown()
        server.server_close()


def test_rs256_tokens_are_verified_against_the_jwks(
    make_settings: Callable[..., Settings], jwks_url: tuple[str, Any]
) -> None:
    url, private = jwks_url
    authenticator = Authenticator(
        auth_settings(make_settings, jwt_secret=None, jwks_url=url, algorithms=["RS256", "ES256"]), None
    )
    now = datetime.now(UTC)
    claims = {"sub": "c-9", "iss": ISSUER, "aud": AUDIENCE, "exp": now + timedelta(minutes=1)}
    good = jwt.encode(claims, private, algorithm="RS256", headers={"kid": "k1"})
    assert authenticator.authenticate(f"Bearer {good}", None).customer_id == "c-9"

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "k1"})
    with pytest.raises(AuthError):
        authenticator.authenticate(f"Bearer {forged}", None)
    # An HS256 token "signed" with the public key must not pass (algorithm confusion).
    with pytest.raises(AuthError):
        authenticator.authenticate(f"Bearer {token('c-9')}", None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_api_keys_are_checked_against_their_hash_and_revocation_bites_after_the_cache_time(
    make_settings: Callable[..., Settings],
) -> None:
    store, clock = InMemoryKeyStore(), Clock()
    whole, stored = new_key("ops", ["monitoring:read"], SCOPES)
    store.add(stored)
    authenticator = Authenticator(auth_settings(make_settings), KeyCache(store, ttl_s=5, clock=clock))

    principal = authenticator.authenticate(None, whole)  # X-API-Key
    assert (principal.kind, principal.name, principal.scopes) == ("key", "ops", {"monitoring:read"})
    assert authenticator.authenticate(f"Bearer {whole}", None).id == stored.key_id
    assert store.reads == 1  # the second came from the cache

    with pytest.raises(AuthError):
        authenticator.authenticate(None, whole[:-1] + ("A" if whole[-1] != "A" else "B"))

    store.revoke(stored.key_id, datetime.now(UTC))
    clock.now = 4.9
    assert authenticator.authenticate(None, whole).id == stored.key_id  # still cached
    clock.now = 5.1
    with pytest.raises(AuthError):
        authenticator.authenticate(None, whole)


def test_only_the_hash_of_a_key_is_stored() -> None:
    whole, stored = new_key("ops", ["admin"], SCOPES)
    secret = KEY_PATTERN.fullmatch(whole).group(2)
    assert secret not in repr(stored) and secret not in json.dumps(stored.public())
    assert stored.secret_sha256 != secret


@pytest.mark.parametrize(
    ("name", "scopes"), [("ops", []), ("ops", ["orders:everything"]), ("", ["admin"]), ("<b>", ["admin"])]
)
def test_keys_need_a_plain_name_and_known_scopes(name: str, scopes: list[str]) -> None:
    with pytest.raises(ValueError):
        new_key(name, scopes, SCOPES)


def guarded_app(make_settings: Callable[..., Settings], mode: str = "on") -> tuple[Flask, str]:
    store = InMemoryKeyStore()
    whole, stored = new_key("reader", ["orders:read:any"], SCOPES)
    store.add(stored)
    app = Flask(__name__)
    settings = auth_settings(make_settings, mode=mode)
    install(app, Authenticator(settings, KeyCache(store, 5)), settings.mode)

    @app.get("/open")
    @public
    def open_view() -> Any:
        return jsonify(ok=True)

    @app.get("/read")
    @requires("orders:read:any")
    def read_view() -> Any:
        return jsonify(who=current_principal().name)

    @app.get("/write")
    @requires("inventory:write")
    def write_view() -> Any:
        return jsonify(ok=True)

    @app.get("/forgotten")
    def forgotten_view() -> Any:
        return jsonify(ok=True)

    return app, whole


def test_the_route_check_answers_401_403_and_fails_closed(make_settings: Callable[..., Settings]) -> None:
    app, key = guarded_app(make_settings)
    client = app.test_client()
    assert client.get("/open").status_code == 200

    anonymous = client.get("/read")
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    assert anonymous.get_json()["error"]["code"] == "unauthorized"

    assert client.get("/read", headers={"Authorization": f"Bearer {key}"}).get_json() == {"who": "reader"}
    lacking = client.get("/write", headers={"X-API-Key": key})
    assert lacking.status_code == 403
    assert 'error="insufficient_scope"' in lacking.headers["WWW-Authenticate"]
    # A view nobody gave a rule is refused to everyone, an admin too.
    assert client.get("/forgotten", headers={"X-API-Key": key}).status_code == 403


def test_auth_mode_off_lets_every_caller_in_as_an_admin(make_settings: Callable[..., Settings]) -> None:
    app, _ = guarded_app(make_settings, mode="off")
    assert app.test_client().get("/write").status_code == 200


def test_auth_mode_off_is_refused_in_production(make_settings: Callable[..., Settings]) -> None:
    from shared.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="AUTH_MODE"):
        load_settings(environment="production", env={"AUTH_MODE": "off", "JWT_SECRET": SECRET})


class FailingStore(InMemoryKeyStore):
    down = False

    def get(self, key_id: str):
        if self.down:
            raise ConnectionError("store down")
        return super().get(key_id)


def test_a_key_read_before_an_outage_of_the_store_is_still_trusted_while_the_store_is_down() -> None:
    store, clock = FailingStore(), Clock()
    whole, stored = new_key("ops", ["monitoring:read"], SCOPES)
    store.add(stored)
    unseen, other = new_key("other", ["monitoring:read"], SCOPES)
    store.add(other)
    cache = KeyCache(store, ttl_s=5, clock=clock)
    assert cache.check(whole) == stored
    store.down, clock.now = True, 60.0
    assert cache.check(whole) == stored
    with pytest.raises(ConnectionError):
        cache.check(unseen)  # never read: cannot be checked (the API answers 503)
    clock.now = 10_000.0
    with pytest.raises(ConnectionError):
        cache.check(whole)  # too long ago to be trusted
