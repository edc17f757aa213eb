"""Kafka in: the saga's payment commands, and failed orders whose vaulted cards can go."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated, TypeVar

from pydantic import AfterValidator, BaseModel, StrictFloat, StringConstraints, ValidationError

from services.payment.domain import ChargeRequest, InvalidPayment, card_digits, to_cents
from services.payment.service import PaymentService
from shared.events import Envelope
from shared.kafka_utils import PermanentError

Data = TypeVar("Data", bound=BaseModel)
Text = Annotated[str, StringConstraints(min_length=1, max_length=150)]
Token = Annotated[str, StringConstraints(pattern=r"^pm_[A-Za-z0-9_-]{1,100}$")]


class CardData(BaseModel):
    number: Annotated[str, StringConstraints(max_length=40), AfterValidator(card_digits)]


class PaymentRequestedData(BaseModel):
    payment_id: Text
    # No upper bound here: an amount over the gateway limit must be declined, not dead-lettered.
    amount: Annotated[StrictFloat, AfterValidator(partial(to_cents, cap=None))]
    payment_method: Annotated[str, StringConstraints(min_length=1, max_length=50)]
    # The card in the vault. card_details (the number) came from earlier versions of the orchestrator:
    # a command of theirs still in flight is charged as it was.
    payment_method_token: Token | None = None
    card_last4: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")] | None = None
    card_details: CardData | None = None
    customer_id: Text | None = None


class OrderFailedData(BaseModel):
    payment_method_token: Token | None = None


class RefundRequestedData(BaseModel):
    payment_id: Text
    reason: Annotated[str, StringConstraints(max_length=200)] = "refund_requested"


def payment_requested(service: PaymentService, event: Envelope) -> None:
    """Charge for the order once and reply PaymentCompleted or PaymentFailed."""
    try:
        service.process_payment_request(_charge_request(event), event)
    except InvalidPayment as err:
        raise PermanentError(str(err)) from err


def handle_batch(service: PaymentService, events: Sequence[Envelope]) -> dict[str, PermanentError]:
    """Handle fetched commands in order, each run of PaymentRequested in a few bulk writes;
    return the unusable ones by event id."""
    refused: dict[str, PermanentError] = {}
    run: list[tuple[ChargeRequest, Envelope]] = []
    ended: list[str] = []

    def charge_run() -> None:
        if not run:
            return
        for event_id, err in service.process_payment_requests(run).items():
            refused[event_id] = PermanentError(str(err))
        run.clear()

    for event in events:
        try:
            if event.event_type == "PaymentRequested":
                run.append((_charge_request(event), event))
                continue
            if event.event_type == "OrderFailed":
                # Forgotten together after the charges: a payment a failed saga still asks for is
                # refunded anyway, or fails for want of its card.
                ended.extend(_ended_card(event))
                continue
            charge_run()
            HANDLERS[event.event_type](service, event)
        except PermanentError as err:
            refused[event.event_id] = err
    charge_run()
    service.vault.forget(ended)
    return refused


def _charge_request(event: Envelope) -> ChargeRequest:
    data = _parse(PaymentRequestedData, event)
    return ChargeRequest(
        order_id=event.order_id,
        amount=data.amount,
        payment_method=data.payment_method,
        card_number=data.card_details.number if data.card_details else None,
        customer_id=data.customer_id or event.customer_id,
        payment_id=data.payment_id,
        payment_method_token=data.payment_method_token,
        card_last4=data.card_last4,
    )


def refund_requested(service: PaymentService, event: Envelope) -> None:
    """Refund a completed payment and reply PaymentRefunded; anything else is a no-op."""
    data = _parse(RefundRequestedData, event)
    service.process_refund_request(data.payment_id, data.reason or "refund_requested", event)


def order_failed(service: PaymentService, event: Envelope) -> None:
    """Forget the vaulted card of an order that failed (before its payment, or by it)."""
    service.vault.forget(_ended_card(event))


def _ended_card(event: Envelope) -> list[str]:
    token = _parse(OrderFailedData, event).payment_method_token
    return [token] if token else []


def _parse(model: type[Data], event: Envelope) -> Data:
    try:
        return model.model_validate(event.data)
    except ValidationError as err:
        raise PermanentError(f"{event.event_type} data is invalid: {err}") from err


HANDLERS = {"PaymentRequested": payment_requested, "RefundRequested": refund_requested, "OrderFailed": order_failed}
