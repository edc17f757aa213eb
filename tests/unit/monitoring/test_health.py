"""Health polling: outcomes stored per service, failure streaks, overall status, inline first poll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.monitoring.domain import ServiceHealth, overall_status
from tests.unit.monitoring.conftest import World


def test_every_configured_service_is_polled_and_stored(world: World):
    world.service.poll_health()
    assert [h.service for h in world.health.all()] == sorted(world.settings.services)
    assert all(h.status == "up" for h in world.health.all())


def test_consecutive_failures_are_counted_and_reset_when_the_service_is_back(world: World):
    world.probe.statuses["payment"] = "down"
    world.service.poll_health()
    first_failure = world.clock.now
    world.clock.advance(5)
    world.service.poll_health()
    payment = world.health.health["payment"]
    assert (payment.consecutive_failures, payment.down_since) == (2, first_failure)
    world.probe.statuses["payment"] = "up"
    world.service.poll_health()
    payment = world.health.health["payment"]
    assert (payment.status, payment.consecutive_failures, payment.down_since) == ("up", 0, None)


def test_status_polls_inline_when_the_poller_has_never_run(world: World):
    overall, health, checked_at = world.service.status()
    assert overall == "healthy"
    assert len(health) == len(world.settings.services)
    assert checked_at == world.clock.now
    assert world.probe.checks == len(world.settings.services)


def test_status_reads_recent_polls_without_polling_again(world: World):
    world.service.poll_health()
    world.clock.advance(1)
    world.service.status()
    assert world.probe.checks == len(world.settings.services)


def test_status_polls_again_when_the_stored_outcomes_are_stale(world: World):
    world.service.poll_health()
    world.clock.advance(3 * world.settings.monitoring.health_poll_interval_s + 1)
    world.service.status()
    assert world.probe.checks == 2 * len(world.settings.services)


def test_overall_status_is_healthy_degraded_or_down():
    now = world_now = None  # noqa: F841 - timestamps do not matter here

    def h(status: str) -> ServiceHealth:
        return ServiceHealth("s", status, checked_at=datetime(2025, 1, 1, tzinfo=UTC))

    assert overall_status([h("up"), h("up")]) == "healthy"
    assert overall_status([h("up"), h("down")]) == "degraded"
    assert overall_status([h("up"), h("degraded")]) == "degraded"
    assert overall_status([h("down"), h("down")]) == "down"
    assert overall_status([]) == "down"


def test_health_of_services_no_longer_configured_is_not_reported(world: World):
    world.health.save(ServiceHealth("retired", "down", world.clock.now - timedelta(seconds=1)))
    world.service.poll_health()
    assert "retired" not in [h.service for h in world.service.current_health()]
