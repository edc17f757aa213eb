"""The saga writer's batch report: only sagas whose write did not land are handed back to decide again."""

from __future__ import annotations

from datetime import timedelta

from services.orchestrator import saga, transitions
from services.orchestrator.ports import Timer
from services.orchestrator.saga import Context, Timeouts
from services.orchestrator.writer import Decided, SagaWriter
from tests.unit.orchestrator.fakes import T0, ConflictingSagaRepository, order_created, reply

TIMEOUTS = Timeouts(payment=timedelta(seconds=60), order=timedelta(seconds=300))
CTX = Context(T0, TIMEOUTS)


def test_a_batch_reports_only_the_writes_that_did_not_land_and_resyncs_the_redelivered() -> None:
    repo = ConflictingSagaRepository(conflicts=0)
    writer = SagaWriter(repo, TIMEOUTS, lambda: CTX, max_attempts=10)
    for oid in ("lost", "landed", "redelivered"):
        writer.write(oid, lambda _current, ctx, oid=oid: saga.start(order_created(oid), ctx), assume_new=True)
    repo.clear_timer("redelivered")  # its first delivery died between the saga write and the timer write

    def reserved(oid: str) -> Decided:
        stored = repo.get(oid)
        outcome = transitions.apply(stored, reply("InventoryReserved", oid), CTX)
        return Decided(stored, [outcome.saga], list(outcome.events))

    repo.conflicts_left = 1  # the first update of the bulk write loses to another writer
    decided = [reserved("lost"), reserved("landed"), Decided(repo.get("redelivered"), redelivered=True)]

    assert writer.write_many(decided) == [False, True, True]
    assert repo.bulk_writes == 1
    assert (repo.get("lost").state, repo.timers["lost"].kind) == ("reserving", "order")
    assert repo.get("landed").state == "awaiting_payment"
    assert repo.timers["landed"] == Timer("landed", T0 + timedelta(seconds=60), "payment")
    assert repo.timers["redelivered"].kind == "order"
