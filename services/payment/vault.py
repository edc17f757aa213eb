"""CardVault: card numbers kept encrypted by the payment service, behind tokens, while a saga needs them.

The order API hands a card number to ``POST /payment-methods`` and keeps only the token, brand and
last four digits; events and the saga carry those. The payment worker reveals the number by its
token to charge, and forgets it once the payment is settled or the order has failed. What nobody
forgets (an idempotent retry's unused entry, a crash) expires after ``payment.vault_ttl_s``.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from services.payment.domain import StoredCard, VaultUnavailable, card_brand, now_ms
from services.payment.ports import StoredCardRepository

logger = logging.getLogger(__name__)

NO_KEY = "the card vault has no usable key (PAYMENT_VAULT_KEY)"


def new_token() -> str:
    return f"pm_{secrets.token_urlsafe(24)}"


class CardVault:
    """Store, reveal and forget card numbers by token, encrypted with the vault key (Fernet)."""

    def __init__(
        self,
        cards: StoredCardRepository,
        key: SecretStr | None,
        *,
        ttl_s: float,
        clock: Callable[[], datetime] = now_ms,
        new_id: Callable[[], str] = new_token,
    ) -> None:
        self._cards = cards
        self._fernet = _fernet(key)
        self._ttl = timedelta(seconds=ttl_s)
        self._clock = clock
        self._new_id = new_id

    def store(self, card_number: str) -> StoredCard:
        """Keep ``card_number`` encrypted under a new token; raise VaultUnavailable without a key."""
        if self._fernet is None:
            logger.error("refusing to store a card: %s", NO_KEY)
            raise VaultUnavailable(NO_KEY)
        now = self._clock()
        card = StoredCard(
            token=self._new_id(),
            encrypted_number=self._fernet.encrypt(card_number.encode()).decode(),
            brand=card_brand(card_number),
            last4=card_number[-4:],
            created_at=now,
            expires_at=now + self._ttl,
        )
        self._cards.add(card)
        return card

    def reveal(self, tokens: Iterable[str]) -> dict[str, str]:
        """Return the card numbers of these tokens that the vault still holds and has not let expire."""
        wanted = sorted(set(tokens))
        if not wanted:
            return {}
        if self._fernet is None:
            logger.error("cannot reveal %d card(s): %s", len(wanted), NO_KEY)
            return {}
        now = self._clock()
        numbers = {}
        for card in self._cards.get_all(wanted):
            if card.expires_at <= now:
                continue
            try:
                numbers[card.token] = self._fernet.decrypt(card.encrypted_number.encode()).decode()
            except InvalidToken:
                logger.error("card %s does not decrypt with the vault key (was the key changed?)", card.token)
        return numbers

    def forget(self, tokens: Iterable[str]) -> int:
        """Delete the cards of these tokens (gone already is fine); return how many were there."""
        wanted = sorted(set(tokens))
        return self._cards.delete(wanted) if wanted else 0

    def purge_expired(self) -> int:
        """Delete the cards past their expiry; return how many."""
        purged = self._cards.delete_expired(self._clock())
        if purged:
            logger.info("deleted %d expired card(s) from the vault", purged)
        return purged


def _fernet(key: SecretStr | None) -> Fernet | None:
    if key is None:
        logger.error("PAYMENT_VAULT_KEY is not set: POST /payment-methods answers 503 and payments by token fail")
        return None
    try:
        return Fernet(key.get_secret_value())
    except ValueError:
        logger.error("PAYMENT_VAULT_KEY is not a Fernet key (32 url-safe base64-encoded bytes); the vault is off")
        return None
