"""Settings shared by the Hypothesis models of the invariants (tests/unit/*/test_*_model.py)."""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings

# A fixed, bounded run in `make test`: the same examples every time, nothing remembered between runs.
MODELS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No explain phase: it reruns the shrunk case under a tracer, too slow for the suite's 120 s limit.
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
)


def model_settings(examples: int, steps: int = 25) -> settings:
    """``examples`` runs of up to ``steps`` steps each (steps count for state machines only)."""
    return settings(MODELS, max_examples=examples, stateful_step_count=steps)
