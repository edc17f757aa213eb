"""Who is calling and what they may do: principals, scopes and the check every route goes through.

Customers present a JWT (``sub`` is their customer id): HS256 with ``JWT_SECRET`` for local use, or
RS256/ES256 verified against an identity provider's JWKS. Operators, admins, back ends and the
services themselves present API keys (shared/apikeys.py). Both come as ``Authorization: Bearer``;
a key may also come as ``X-API-Key``. Credentials are read from headers only, never from cookies,
so a page on another site cannot make a browser act with them.

Every view declares its rule with ``requires(...)`` or ``public``; a view without one is refused
(fail closed), and a unit test walks every app's URL map so none is left out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import jwt
from flask import Flask, Response, g, request

from shared.apikeys import KeyCache, looks_like_key
from shared.config import AuthSettings

logger = logging.getLogger(__name__)

# The scope table of the README. "own" scopes act on the caller's own customer id only.
SCOPES: dict[str, str] = {
    "orders:read": "read the caller's own orders",
    "orders:write": "place orders for the caller's own customer id",
    "orders:cancel": "cancel the caller's own orders",
    "orders:read:any": "read and list any customer's orders",
    "orders:write:any": "place orders for any customer (a checkout back end)",
    "orders:cancel:any": "cancel any customer's order",
    "inventory:read": "read the catalogue and stock",
    "inventory:write": "create, reprice and restock products",
    "inventory:reserve": "hold and release stock over REST",
    "payments:read": "read payments",
    "payments:write": "charge a card over REST",
    "payments:refund": "refund a payment",
    "payments:vault": "put a card into the payment service's vault for a token (the order service)",
    "notifications:read": "read notifications",
    "notifications:write": "send a notification",
    "sagas:read": "read the orchestrator's sagas and timelines",
    "monitoring:read": "the dashboard, monitoring's reads and every /health/detailed",
    "dlq:replay": "replay a dead letter",
    "audit:read": "read the audit trail of every service",
    "metrics:read": "scrape /metrics",
    "admin": "everything above",
}
# What a customer's token grants when it names no scopes, and the most it can ever grant.
CUSTOMER_SCOPES = frozenset({"orders:read", "orders:write", "orders:cancel", "inventory:read"})
REALM = 'Bearer realm="kafka-ecommerce"'
INVALID_TOKEN = f'{REALM}, error="invalid_token"'
CUSTOMER_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")

View = TypeVar("View", bound=Callable[..., Any])
PUBLIC: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Principal:
    kind: Literal["customer", "key", "development"]
    id: str  # the customer id, the key id, or "anonymous"
    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def may(self, own_scope: str, any_scope: str, customer_id: str) -> bool:
        """May act on ``customer_id``'s things: with the any-scope, or as that customer with the own-scope."""
        return self.has(any_scope) or (self.kind == "customer" and self.id == customer_id and self.has(own_scope))

    @property
    def customer_id(self) -> str | None:
        return self.id if self.kind == "customer" else None


DEVELOPMENT = Principal("development", "anonymous", "AUTH_MODE=off", frozenset({"admin"}))


class AuthError(Exception):
    def __init__(self, status: int, code: str, message: str, challenge: str = REALM) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.challenge = status, code, message, challenge


class Authenticator:
    """Turns the credentials of a request into a principal, or refuses them."""

    def __init__(self, settings: AuthSettings, keys: KeyCache | None) -> None:
        self._settings = settings
        self._keys = keys
        self._secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else None
        self._jwks = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5) if settings.jwks_url else None
        )

    def authenticate(self, authorization: str | None, api_key: str | None) -> Principal:
        token = api_key
        if token is None and authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "unauthorized", "use Authorization: Bearer <token or API key>")
            token = token.strip()
        if not token:
            raise AuthError(401, "unauthorized", "credentials required: a bearer token or an API key")
        return self._key(token) if looks_like_key(token) else self._customer(token)

    def _key(self, presented: str) -> Principal:
        stored = self._keys.check(presented) if self._keys else None
        if stored is None:
            raise AuthError(401, "invalid_key", "unknown, revoked or malformed API key", INVALID_TOKEN)
        return Principal("key", stored.key_id, stored.name, frozenset(stored.scopes))

    def _customer(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._verification_key(token),
                algorithms=list(self._settings.algorithms),
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.clock_skew_s,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except (jwt.PyJWTError, ValueError) as err:
            raise AuthError(401, "invalid_token", f"token refused: {err}", INVALID_TOKEN) from None
        subject = claims["sub"]
        if not isinstance(subject, str) or not CUSTOMER_ID.fullmatch(subject):
            raise AuthError(401, "invalid_token", "token refused: sub is not a customer id", INVALID_TOKEN)
        return Principal("customer", subject, subject, _claimed_scopes(claims))

    def _verification_key(self, token: str) -> Any:
        algorithm = jwt.get_unverified_header(token).get("alg")
        if algorithm not in self._settings.algorithms:
            raise jwt.InvalidAlgorithmError(f"algorithm {algorithm!r} is not accepted")
        if algorithm.startswith("HS"):
            if self._secret is None:
                raise jwt.InvalidKeyError("no JWT secret is configured")
            return self._secret
        if self._jwks is None:
            raise jwt.InvalidKeyError("no JWKS URL is configured")
        return self._jwks.get_signing_key_from_jwt(token).key


def _claimed_scopes(claims: dict[str, Any]) -> frozenset[str]:
    claimed = claims.get("scope", claims.get("scp"))
    if claimed is None:
        return CUSTOMER_SCOPES
    names = claimed.split() if isinstance(claimed, str) else claimed if isinstance(claimed, list) else []
    return CUSTOMER_SCOPES & {name for name in names if isinstance(name, str)}


def requires(*any_of: str) -> Callable[[View], View]:
    """Let a view be called by a principal holding any of these scopes (``admin`` holds all)."""
    unknown = set(any_of) - set(SCOPES)
    if unknown or not any_of:
        raise ValueError(f"unknown or no scopes: {sorted(unknown)}")

    def mark(view: View) -> View:
        view.required_scopes = frozenset(any_of)  # type: ignore[attr-defined]
        return view

    return mark


def public(view: View) -> View:
    """Let anyone call a view: only liveness and the dashboard's static sign-in shell."""
    view.required_scopes = PUBLIC  # type: ignore[attr-defined]
    return view


def rule_of(view: Callable[..., Any] | None) -> frozenset[str] | None:
    return getattr(view, "required_scopes", None)


def current_principal() -> Principal:
    """The principal of the request being served (set before any view runs)."""
    return g.principal


def install(app: Flask, authenticator: Authenticator | None, mode: Literal["on", "off"]) -> None:
    """Check every request against its view's rule before the view runs."""
    app.extensions["authenticator"] = authenticator
    if mode == "off":
        logger.warning(
            "AUTH_MODE=off: %s answers every caller as an admin. Development only; never expose it.",
            app.extensions.get("service_name", app.name),
        )

    @app.before_request
    def authorize() -> tuple[Response, int] | None:
        if request.endpoint is None:
            return None  # no such route: Flask answers 404/405
        if request.method == "OPTIONS":
            return None  # Flask's own answer (and a CORS preflight, which carries no credentials)
        rule = rule_of(app.view_functions.get(request.endpoint))
        if rule is PUBLIC:
            return None
        if rule is None:
            logger.error("refusing %s %s: its view declares no access rule", request.method, request.path)
            return _refusal(AuthError(403, "forbidden", "this route declares no access rule"))
        try:
            principal = (
                DEVELOPMENT
                if mode == "off"
                else _authenticator(app).authenticate(
                    request.headers.get("Authorization"), request.headers.get("X-API-Key")
                )
            )
        except AuthError as err:
            return _refusal(err)
        g.principal = principal
        if not any(principal.has(scope) for scope in rule):
            needed = " ".join(sorted(rule))
            return _refusal(
                AuthError(
                    403,
                    "insufficient_scope",
                    f"this needs one of the scopes: {needed}",
                    f'{REALM}, error="insufficient_scope", scope="{needed}"',
                )
            )
        return None


def _authenticator(app: Flask) -> Authenticator:
    authenticator = app.extensions.get("authenticator")
    if authenticator is None:
        raise AuthError(401, "unauthorized", "this service has no way to check credentials")
    return authenticator


def _refusal(err: AuthError) -> tuple[Response, int]:
    from shared.web import error_body  # shared.web installs this module's hook

    response, status = error_body(err.status, err.code, err.message)
    response.headers["WWW-Authenticate"] = err.challenge
    return response, status
