"""The simulated payment gateway: deterministic rules from settings, optional latency and failures."""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from services.payment.domain import AMOUNT_OVER_LIMIT, CARD_DECLINED, GATEWAY_ERROR, ChargeResult
from services.payment.ledger import CHARGE, REFUND, GatewayLedger
from shared.config import PaymentSettings

logger = logging.getLogger(__name__)

_REF_NAMESPACE = uuid.UUID("6f1c4a52-2f0e-4e8a-9a57-3f4c1f0d7b21")


class SimulatedGateway:
    """Answer charges by the configured rules; repeated idempotency keys get the first answer.

    Rules in order: a card in ``decline_cards`` is declined (``card_declined``); an amount over
    ``amount_limit`` is declined (``amount_over_limit``); with probability ``failure_rate`` the
    gateway errs (``gateway_error``); anything else, including no card or 4242..., is approved.
    Answers are remembered per key (the last ``memory`` keys). With a ``ledger`` every charge
    attempt and refund is also written to it, and the answers other processes wrote are read
    back first: like a real gateway's, an answer then holds across processes and restarts, and
    the ledger is a record of the money moved that our own stores do not write.
    """

    def __init__(
        self,
        settings: PaymentSettings,
        *,
        random_source: Callable[[], float] = random.random,
        sleep: Callable[[float], None] = time.sleep,
        memory: int = 10_000,
        ledger: GatewayLedger | None = None,
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
        self._ledger = ledger
        if ledger is not None:
            with ledger.session() as entries:
                self._learn(entries)

    def charge(
        self,
        amount: float,
        payment_method: str,
        card_number: str | None,
        *,
        idempotency_key: str,
        order_id: str | None = None,
    ) -> ChargeResult:
        """Charge ``amount``, or return the answer already given for ``idempotency_key``."""
        entry = {"op": CHARGE, "key": idempotency_key, "order_id": order_id, "amount": amount}
        with self._books():
            if (known := self._known(entry)) is not None:
                return known
        if self._latency_s:
            self._sleep(self._latency_s)
        decided = self._decide(amount, card_number, idempotency_key)
        with self._books():
            if (known := self._known(entry)) is not None:  # another thread or process answered meanwhile
                return known
            self._record(entry, decided)
        logger.info("simulated charge %s of %.2f via %s: %s", idempotency_key, amount, payment_method, decided)
        return decided

    def refund(
        self, amount: float, gateway_ref: str | None, *, idempotency_key: str, order_id: str | None = None
    ) -> None:
        """Refund ``amount``; the simulation always accepts and ignores repeated keys."""
        entry = {"op": REFUND, "key": idempotency_key, "order_id": order_id, "amount": amount, "ref": gateway_ref}
        with self._books():
            if idempotency_key in self._refunded:
                self._write(entry, None, replay=True)
                return
            self._record(entry, None)
        if self._latency_s:
            self._sleep(self._latency_s)
        logger.info("simulated refund %s of %.2f (charge %s)", idempotency_key, amount, gateway_ref)

    @contextlib.contextmanager
    def _books(self) -> Iterator[None]:
        """Hold this gateway's memory (and the ledger, with what others wrote to it since) for one decision."""
        with self._lock:
            if self._ledger is None:
                yield
                return
            with self._ledger.session() as entries:
                self._learn(entries)
                yield

    def _record(self, entry: dict[str, Any], result: ChargeResult | None) -> None:
        if result is None:
            self._refunded[entry["key"]] = None
            self._forget_oldest(self._refunded)
        else:
            self._answers[entry["key"]] = result
            self._forget_oldest(self._answers)
        self._write(entry, result, replay=False)

    def _known(self, entry: dict[str, Any]) -> ChargeResult | None:
        """The answer already given for this charge's key (the repeat is written down too), or None."""
        answer = self._answers.get(entry["key"])
        if answer is not None:
            self._write(entry, answer, replay=True)
        return answer

    def _write(self, entry: dict[str, Any], result: ChargeResult | None, *, replay: bool) -> None:
        if self._ledger is None:
            return
        if result is not None:
            entry = {**entry, "approved": result.approved, "reason": result.reason, "ref": result.gateway_ref}
        self._ledger.append({"at": datetime.now(UTC).isoformat(), **entry, "replay": replay})

    def _learn(self, entries: list[dict[str, Any]]) -> None:
        """Take the first answers that other processes (or this one before a restart) wrote."""
        for entry in entries:
            if entry.get("replay"):
                continue
            if entry["op"] == CHARGE:
                result = ChargeResult(
                    approved=entry["approved"], reason=entry.get("reason"), gateway_ref=entry.get("ref")
                )
                self._answers.setdefault(entry["key"], result)
                self._forget_oldest(self._answers)
            else:
                self._refunded.setdefault(entry["key"], None)
                self._forget_oldest(self._refunded)

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
