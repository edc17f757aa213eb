"""HttpCardVault: hand a card number to the payment service's vault (POST /payment-methods) for a token."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import requests

from services.order.domain import PaymentVaultUnavailable, VaultedCard

logger = logging.getLogger(__name__)

TOKEN = re.compile(r"^pm_[A-Za-z0-9_-]{1,100}$")
LAST4 = re.compile(r"^[0-9]{4}$")


class HttpCardVault:
    """The vault over HTTP, with the order service's own key (scope payments:vault)."""

    def __init__(self, base_url: str, api_key: str | None, timeout_s: float) -> None:
        self._url = f"{base_url.rstrip('/')}/payment-methods"
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout = timeout_s
        # A session per thread keeps connections open between orders; sessions are not shared safely.
        self._local = threading.local()

    def store(self, card_number: str) -> VaultedCard:
        try:
            response = self._session().post(
                self._url, json={"card_number": card_number}, headers=self._headers, timeout=self._timeout
            )
        except requests.RequestException as err:
            # requests' messages name the URL and the pool, never the body: nothing of the card.
            logger.warning("the payment vault did not answer: %s", type(err).__name__)
            raise PaymentVaultUnavailable("the payment service's vault did not answer") from None
        card = _card(response)
        if card is None:
            log = logger.error if response.status_code in (400, 401, 403) else logger.warning
            log("the payment vault refused a card: HTTP %s %s", response.status_code, _error_code(response))
            raise PaymentVaultUnavailable(f"the payment service's vault answered HTTP {response.status_code}")
        return card

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session


def _card(response: requests.Response) -> VaultedCard | None:
    if response.status_code != 201:
        return None
    body = _json(response)
    token, brand, last4 = (body.get(name) for name in ("token", "brand", "last4"))
    if not (isinstance(token, str) and TOKEN.fullmatch(token) and isinstance(last4, str) and LAST4.fullmatch(last4)):
        return None
    return VaultedCard(token, brand[:20] if isinstance(brand, str) and brand.isalpha() else "other", last4)


def _error_code(response: requests.Response) -> str:
    error = _json(response).get("error")
    return str(error.get("code"))[:50] if isinstance(error, dict) else ""


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
