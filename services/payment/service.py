"""Payment use cases: charge (REST and saga), refund, and look-ups.

One successful charge per order: a charge claims the order in ``order_charges`` (``_id`` =
order id) before it calls the gateway, so money never moves for an order whose claim another
payment holds, even when a crash cuts that payment short mid-charge (it stays ``processing`` and
keeps the claim). A REST charge first checks that claim and answers ``already_paid``; a charge
that loses the claim race is not made (a saga charge then replies PaymentFailed with reason
``already_paid``); a declined charge gives its claim back.
A saga charge uses the saga's deterministic payment id, so a redelivered PaymentRequested
finds its payment and either does nothing (the reply is already in the outbox) or, when a
crash left it ``processing``, repeats the charge with the payment id as idempotency key.
A saga charge names its card by the vault's token: the number is revealed for the charge and the
card forgotten once the payment is settled (so a charge repeated after a crash still has it).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime

from prometheus_client import Counter

from services.payment.domain import (
    ALREADY_PAID,
    COMPLETED,
    HOLDS_CHARGE,
    PAYMENT_METHOD_UNAVAILABLE,
    PROCESSING,
    AlreadyPaid,
    ChargeRequest,
    ChargeResult,
    DuplicatePayment,
    IdempotencyConflict,
    InvalidPayment,
    NotRefundable,
    Payment,
    PaymentNotFound,
    now_ms,
)
from services.payment.ports import PaymentGateway, PaymentRepository, PaymentUpdate
from services.payment.vault import CardVault
from shared.events import Envelope

logger = logging.getLogger(__name__)

SOURCE = "payment"
PAYMENTS = Counter("payments_total", "Charges settled, by outcome", ["outcome"])
PAYMENT_AMOUNT = Counter("payment_amount_total", "Amount charged successfully")
REFUNDS = Counter("refunds_total", "Payments refunded")


def new_payment_id() -> str:
    return f"pay_{uuid.uuid4().hex}"


class PaymentService:
    def __init__(
        self,
        payments: PaymentRepository,
        gateway: PaymentGateway,
        *,
        vault: CardVault,
        charges_per_write: int,
        clock: Callable[[], datetime] = now_ms,
        new_id: Callable[[], str] = new_payment_id,
    ) -> None:
        self._payments = payments
        self._gateway = gateway
        self.vault = vault
        # A batch is charged this many at a time, each group's replies written before the next group
        # is charged: with a slow gateway, a whole batch's first reply would otherwise wait for every charge.
        self._charges_per_write = charges_per_write
        self._clock = clock
        self._new_id = new_id

    def charge(self, request: ChargeRequest, idempotency_key: str | None = None) -> Payment:
        """Charge an order directly (REST); return the payment, completed or failed.

        With an idempotency key the payment id comes from the key: a retry returns the same
        payment, and a retry after a crash mid-charge finishes that charge instead of making another.
        """
        payment_id = rest_payment_id(idempotency_key) if idempotency_key else self._new_id()
        if idempotency_key and (existing := self._payments.get(payment_id)) is not None:
            if (existing.order_id, existing.amount) != (request.order_id, request.amount):
                raise IdempotencyConflict(payment_id)
            if existing.status != PROCESSING:
                return existing
            logger.warning("payment %s was interrupted mid-charge; finishing it", payment_id)
            payment = existing
        else:
            holder = self._paid_by(request.order_id)
            if holder:
                raise AlreadyPaid(request.order_id, holder)
            payment = Payment.start(payment_id, request, self._clock())
            try:
                self._payments.add(payment)
            except DuplicatePayment:  # the same key at the same moment: answer as its twin will
                return self.charge(request, idempotency_key)
        lost_to = self._charge(payment, request, {})
        self._payments.update(payment, expected_status=PROCESSING)
        self._count(payment)
        if lost_to:
            raise AlreadyPaid(request.order_id, lost_to)
        return payment

    def process_payment_request(self, request: ChargeRequest, cause: Envelope) -> None:
        """Charge for the saga once per payment id and queue PaymentCompleted or PaymentFailed."""
        if not request.payment_id:
            raise InvalidPayment("a saga payment needs its payment_id")
        payment = Payment.start(request.payment_id, request, self._clock())
        try:
            self._payments.add(payment)
        except DuplicatePayment:
            payment = self._existing(request.payment_id, request.order_id)
            if payment.status != PROCESSING:
                logger.info("payment %s is already %s; its reply was sent", payment.payment_id, payment.status)
                self._forget_cards([request])  # a crash may have come between the settling and this
                return
            logger.warning("payment %s was interrupted mid-charge; finishing it", payment.payment_id)
        # No pre-check of the order's claim here: a crash may have left this charge made but
        # unclaimed, and only charging (idempotently) then claiming settles that case correctly.
        self._charge(payment, request, self._reveal_cards([request]))
        if self._payments.update(payment, expected_status=PROCESSING, events=[self._reply(payment, cause)]):
            self._count(payment)
        self._forget_cards([request])

    def process_payment_requests(self, requests: Sequence[tuple[ChargeRequest, Envelope]]) -> dict[str, InvalidPayment]:
        """Charge for many saga commands as ``process_payment_request`` would one by one,
        ``charges_per_write`` at a time, each group in three writes: the new payments, the claims of
        the approved ones, the settled payments with their replies.

        A payment id already stored (a redelivery, or twice in the batch) goes through the single
        path after the rest, which then finds it settled or finishes it. Return the requests that
        break the contract, by event id.
        """
        refused: dict[str, InvalidPayment] = {}
        step = self._charges_per_write
        for start in range(0, len(requests), step):
            refused.update(self._process_group(requests[start : start + step]))
        return refused

    def _process_group(self, requests: Sequence[tuple[ChargeRequest, Envelope]]) -> dict[str, InvalidPayment]:
        refused: dict[str, InvalidPayment] = {}
        valid = []
        for request, cause in requests:
            if request.payment_id:
                valid.append((request, cause))
            else:
                refused[cause.event_id] = InvalidPayment("a saga payment needs its payment_id")
        now = self._clock()
        payments = [Payment.start(request.payment_id or "", request, now) for request, _cause in valid]
        added = self._payments.add_all(payments)
        fresh = [(p, request, cause) for p, (request, cause), ok in zip(payments, valid, added, strict=True) if ok]
        revealed = self._reveal_cards([request for _payment, request, _cause in fresh])
        self._charge_all([(payment, request) for payment, request, _cause in fresh], revealed)
        updates = [PaymentUpdate(payment, PROCESSING, (self._reply(payment, cause),)) for payment, _r, cause in fresh]
        for update, stored in zip(updates, self._payments.update_all(updates), strict=True):
            if stored:
                self._count(update.payment)
        self._forget_cards([request for _payment, request, _cause in fresh])
        for (request, cause), ok in zip(valid, added, strict=True):
            if not ok:
                try:
                    self.process_payment_request(request, cause)
                except InvalidPayment as err:
                    refused[cause.event_id] = err
        return refused

    def refund(self, payment_id: str, reason: str, cause: Envelope | None = None) -> Payment:
        """Refund a completed payment in full and queue PaymentRefunded."""
        payment = self.get(payment_id)
        if payment.status != COMPLETED:
            raise NotRefundable(payment_id, payment.status)
        # The key makes a refund repeated after a crash (before the write below) harmless.
        self._gateway.refund(
            payment.amount, payment.gateway_ref, idempotency_key=f"refund_{payment_id}", order_id=payment.order_id
        )
        payment.refund(reason, self._clock())
        data = {"payment_id": payment_id, "amount": payment.amount}
        event = (
            cause.follow("PaymentRefunded", SOURCE, data)
            if cause
            else Envelope("PaymentRefunded", payment.order_id, SOURCE, data, customer_id=payment.customer_id)
        )
        if not self._payments.update(payment, expected_status=COMPLETED, events=[event]):
            raise NotRefundable(payment_id, self.get(payment_id).status)
        self._payments.release_order(payment.order_id, payment_id)
        REFUNDS.inc()
        return payment

    def process_refund_request(self, payment_id: str, reason: str, cause: Envelope) -> None:
        """Refund for the saga; unknown or not completed payments are left alone."""
        try:
            self.refund(payment_id, reason, cause)
        except PaymentNotFound:
            logger.warning("refund requested for unknown payment %s; ignoring it", payment_id)
        except NotRefundable as err:
            logger.info("refund of %s not needed: %s", payment_id, err)

    def get(self, payment_id: str) -> Payment:
        """Return the payment or raise ``PaymentNotFound``."""
        payment = self._payments.get(payment_id)
        if payment is None:
            raise PaymentNotFound(payment_id)
        return payment

    def list_for_order(self, order_id: str, limit: int = 50) -> list[Payment]:
        """Return the order's payments, newest first."""
        return self._payments.list_by_order(order_id, limit)

    def _charge(self, payment: Payment, request: ChargeRequest, revealed: dict[str, str]) -> str | None:
        """Claim the order, then call the gateway and settle ``payment`` in memory; return the
        payment holding the order when another one does (then no money moves)."""
        return self._charge_claimed(payment, request, revealed, self._claim(payment))

    def _charge_all(self, charges: Sequence[tuple[Payment, ChargeRequest]], revealed: dict[str, str]) -> None:
        """``_charge`` for many payments, with their claims in one write."""
        claimed = self._payments.claim_all([(payment.order_id, payment.payment_id) for payment, _request in charges])
        for (payment, request), recorded in zip(charges, claimed, strict=True):
            self._charge_claimed(payment, request, revealed, None if recorded else self._claim(payment))

    def _charge_claimed(
        self, payment: Payment, request: ChargeRequest, revealed: dict[str, str], lost_to: str | None
    ) -> str | None:
        if lost_to:
            logger.warning(
                "order %s is held by payment %s; not charging %s", payment.order_id, lost_to, payment.payment_id
            )
            payment.settle(ChargeResult(approved=False, reason=ALREADY_PAID), self._clock())
            return lost_to
        token = request.payment_method_token
        if token and token not in revealed:
            logger.warning(
                "payment %s fails: the vault no longer holds its card (expired or deleted)", payment.payment_id
            )
            result = ChargeResult(approved=False, reason=PAYMENT_METHOD_UNAVAILABLE)
        else:
            result = self._gateway_charge(payment, revealed[token] if token else request.card_number)
        payment.settle(result, self._clock())
        if payment.status != COMPLETED:
            self._payments.release_order(payment.order_id, payment.payment_id)  # declined: the order is free again
        return None

    def _gateway_charge(self, payment: Payment, card_number: str | None) -> ChargeResult:
        # The payment id is the idempotency key: a charge repeated after a crash moves no money.
        return self._gateway.charge(
            payment.amount,
            payment.payment_method,
            card_number,
            idempotency_key=payment.payment_id,
            order_id=payment.order_id,
        )

    def _reveal_cards(self, requests: Sequence[ChargeRequest]) -> dict[str, str]:
        return self.vault.reveal(r.payment_method_token for r in requests if r.payment_method_token)

    def _forget_cards(self, requests: Sequence[ChargeRequest]) -> None:
        """Delete the vaulted cards of settled payments: nothing charges them again."""
        self.vault.forget(r.payment_method_token for r in requests if r.payment_method_token)

    def _claim(self, payment: Payment) -> str | None:
        holder = self._payments.claim_order(payment.order_id, payment.payment_id)
        if holder != payment.payment_id and self._paid_by(payment.order_id) is None:
            # The claim was stale (its payment was declined or refunded) and is now released.
            holder = self._payments.claim_order(payment.order_id, payment.payment_id)
        return None if holder == payment.payment_id else holder

    def _paid_by(self, order_id: str) -> str | None:
        """Return the payment holding the order's charge; release a claim whose payment gave it back."""
        holder = self._payments.order_holder(order_id)
        if holder is None:
            return None
        held = self._payments.get(holder)
        if held is not None and held.status in HOLDS_CHARGE:
            return holder
        # A refund released its claim after its own write; a crash in between leaves this.
        self._payments.release_order(order_id, holder)
        return None

    def _existing(self, payment_id: str, order_id: str) -> Payment:
        payment = self.get(payment_id)
        if payment.order_id != order_id:
            raise InvalidPayment(f"payment {payment_id} belongs to order {payment.order_id}, not {order_id}")
        return payment

    def _reply(self, payment: Payment, cause: Envelope) -> Envelope:
        if payment.status == COMPLETED:
            return cause.follow(
                "PaymentCompleted", SOURCE, {"payment_id": payment.payment_id, "amount": payment.amount}
            )
        data = {"payment_id": payment.payment_id, "amount": payment.amount, "reason": payment.reason}
        return cause.follow("PaymentFailed", SOURCE, data)

    def _count(self, payment: Payment) -> None:
        PAYMENTS.labels("completed" if payment.status == COMPLETED else "failed").inc()
        if payment.status == COMPLETED:
            PAYMENT_AMOUNT.inc(payment.amount)


def rest_payment_id(idempotency_key: str) -> str:
    """The payment id a REST Idempotency-Key stands for (the key itself is not stored)."""
    return "pay_key_" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
