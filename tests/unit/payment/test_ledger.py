"""The simulated gateway's ledger: one line per charge attempt and refund, shared and kept across restarts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from services.payment.gateway import SimulatedGateway
from services.payment.ledger import GatewayLedger, money_by_order, read_ledger
from shared.config import Settings


def gateway_on(path: Path, settings: Settings, draw: float = 0.9) -> SimulatedGateway:
    return SimulatedGateway(settings.payment, ledger=GatewayLedger(path), random_source=lambda: draw)


def test_every_attempt_is_written_and_a_repeat_is_marked_as_one(tmp_path: Path, settings: Settings) -> None:
    gateway = gateway_on(tmp_path / "ledger.jsonl", settings)
    gateway.charge(12.5, "credit_card", None, idempotency_key="pay_o-1", order_id="o-1")
    gateway.charge(12.5, "credit_card", None, idempotency_key="pay_o-1", order_id="o-1")
    entries = read_ledger(tmp_path / "ledger.jsonl")
    assert [(e["op"], e["key"], e["order_id"], e["approved"], e["replay"]) for e in entries] == [
        ("charge", "pay_o-1", "o-1", True, False),
        ("charge", "pay_o-1", "o-1", True, True),
    ]
    assert money_by_order(entries)["o-1"] == {
        "charges": 1,
        "refunds": 0,
        "charged": 12.5,
        "refunded": 0.0,
        "net": 12.5,
    }


def test_another_process_gets_the_first_answer_for_a_key(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings("payment", payment={"failure_rate": 0.5})
    first = gateway_on(tmp_path / "ledger.jsonl", settings, draw=0.1)  # errs
    second = gateway_on(tmp_path / "ledger.jsonl", settings, draw=0.9)  # would approve
    answer = first.charge(5.0, "credit_card", None, idempotency_key="pay_o-2", order_id="o-2")
    again = second.charge(5.0, "credit_card", None, idempotency_key="pay_o-2", order_id="o-2")
    assert answer == again
    assert answer.reason == "gateway_error"
    assert money_by_order(read_ledger(tmp_path / "ledger.jsonl"))["o-2"]["charges"] == 0


def test_answers_survive_a_restart(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings("payment", payment={"failure_rate": 0.5})
    before = gateway_on(tmp_path / "ledger.jsonl", settings, draw=0.9)
    approved = before.charge(5.0, "credit_card", None, idempotency_key="pay_o-3", order_id="o-3")
    after = gateway_on(tmp_path / "ledger.jsonl", settings, draw=0.1)  # a new process on the same books
    assert after.charge(5.0, "credit_card", None, idempotency_key="pay_o-3", order_id="o-3") == approved
    after.refund(5.0, approved.gateway_ref, idempotency_key="refund_pay_o-3", order_id="o-3")
    gateway_on(tmp_path / "ledger.jsonl", settings).refund(
        5.0, approved.gateway_ref, idempotency_key="refund_pay_o-3", order_id="o-3"
    )
    book = money_by_order(read_ledger(tmp_path / "ledger.jsonl"))["o-3"]
    assert (book["charges"], book["refunds"], book["net"]) == (1, 1, 0.0)


def test_two_charges_under_different_keys_show_as_two(tmp_path: Path, settings: Settings) -> None:
    gateway = gateway_on(tmp_path / "ledger.jsonl", settings)
    gateway.charge(7.0, "credit_card", None, idempotency_key="pay_o-4", order_id="o-4")
    gateway.charge(7.0, "credit_card", None, idempotency_key="pay_key_other", order_id="o-4")
    book = money_by_order(read_ledger(tmp_path / "ledger.jsonl"))["o-4"]
    assert (book["charges"], book["net"]) == (2, 14.0)


def test_a_line_torn_by_a_crash_is_skipped(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "ledger.jsonl"
    gateway_on(path, settings).charge(3.0, "credit_card", None, idempotency_key="pay_o-5", order_id="o-5")
    with path.open("ab") as ledger:
        ledger.write(b'{"op": "charge", "key": "pay_o-6"')  # killed mid-write
    restarted = gateway_on(path, settings)
    assert restarted.charge(3.0, "credit_card", None, idempotency_key="pay_o-5", order_id="o-5").approved
    assert [e["key"] for e in read_ledger(path)] == ["pay_o-5", "pay_o-5"]
