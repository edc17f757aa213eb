"""The simulated payment gateway: deterministic rules from settings, optional latency and failures."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from services.payment.domain import AMOUNT_OVER_LIMIT, CARD_DECLINED, GATEWAY_ERROR, ChargeResult
from shared.config import PaymentSettings

logger = logging.getLogger(__name__)

_REF_NAMESPACE = uuid.UUID("6f1c4a52-2f0e-4e8a-9a57-3f4c1f0d7b21")


class SimulatedGateway:
    """Answer charges by the configured rules; repeated idempotency keys get the first answer.

    Rules in order: a card in ``decline_cards`` is declined (``card_declined``); an amount over
    ``amount_limit`` is declined (``amount_over_limit``); with probability ``failure_rate`` the
    gateway errs (``gateway_error``); anything else, including no card or 4242..., is approved.
    Answers are remembered per key in this process (the last ``memory`` keys). The rules are
    deterministic, so after a restart a repeated key gets the same answer too unless
    ``failure_rate`` is above 0.
    """

    def __init__(
        self,
        settings: PaymentSettings,
        *,
        random_source: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
        memory: int = 10_000,
    ) -> None:
        self._decline = frozenset(settings.decline_cards)
        self._limit = settings.amount_limit
        self._latency_s = settings.latency_ms / 1000
        self._failure_rate = settings.failure_rate
        self._random = random_source
        self._sleep = sleep
        self._memory = memory
        self._answers: OrderedDict[str, ChargeResult] = OrderedDict()
        self._refunded: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def charge(
        self, amount: float, payment_method: str, card_number: str | None, *, idempotency_key: str
    ) -> ChargeResult:
        """Charge ``amount``, or return the answer already given for ``idempotency_key``."""
        with self._lock:
            if idempotency_key in self._answers:
                return self._answers[idempotency_key]
        if self._latency_s:
            self._sleep(self._latency_s)
        result = self._decide(amount, card_number, idempotency_key)
        with self._lock:
            result = self._answers.setdefault(idempotency_key, result)
            self._forget_oldest(self._answers)
        logger.info("simulated charge %s of %.2f via %s: %s", idempotency_key, amount, payment_method, result)
        return result

    def refund(self, amount: float, gateway_ref: str | None, *, idempotency_key: str) -> None:
        """Refund ``amount``; the simulation always accepts and ignores repeated keys."""
        with self._lock:
            if idempotency_key in self._refunded:
                return
            self._refunded[idempotency_key] = None
            self._forget_oldest(self._refunded)
        if self._latency_s:
            self._sleep(self._latency_s)
        logger.info("simulated refund %s of %.2f (charge %s)", idempotency_key, amount, gateway_ref)

    def _decide(self, amount: float, card_number: str | None, key: str) -> ChargeResult:
        if card_number is not None and card_number in self._decline:
            return ChargeResult(approved=False, reason=CARD_DECLINED)
        if amount > self._limit:
            return ChargeResult(approved=False, reason=AMOUNT_OVER_LIMIT)
        if self._failure_rate and self._random() < self._failure_rate:
            return ChargeResult(approved=False, reason=GATEWAY_ERROR)
        return ChargeResult(approved=True, gateway_ref=f"sim_{uuid.uuid5(_REF_NAMESPACE, key).hex}")

    def _forget_oldest(self, answers: OrderedDict[str, object]) -> None:
        while len(answers) > self._memory:
            answers.popitem(last=False)
