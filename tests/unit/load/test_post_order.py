"""Posting an order: 503 with Retry-After is retried after the wait, a bounded number of times."""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from load.bench import post_order


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
    body: object = None

    def json(self) -> object:
        if self.body is None:
            raise ValueError("no JSON")
        return self.body


@dataclass
class ScriptedSession:
    """Answers each POST with the next scripted answer (or raises it)."""

    answers: list[Answer | Exception]
    posts: int = 0

    def post(self, url: str, *, json: dict, timeout: float) -> Answer:
        self.posts += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


SHED = Answer(503, {"Retry-After": "5"}, {"error": "overloaded"})
CREATED = Answer(201, {}, {"order_id": "o-1"})


def test_a_shed_post_is_posted_again_after_its_retry_after():
    slept: list[float] = []
    session = ScriptedSession([SHED, SHED, CREATED])
    posted = post_order(session, "http://order/orders", {}, shed_retries=5, sleep=slept.append)
    assert (posted.order_id, posted.shed, posted.refusal) == ("o-1", 2, None)
    assert slept == [5.0, 5.0]


def test_a_post_shed_more_times_than_allowed_is_finally_refused():
    session = ScriptedSession([SHED, SHED, SHED, CREATED])
    posted = post_order(session, "http://order/orders", {}, shed_retries=2, sleep=lambda _s: None)
    assert posted.order_id is None
    assert posted.refusal == "status 503 after 2 retries"
    assert session.posts == 3


def test_a_503_without_retry_after_and_other_errors_are_refused_at_once():
    for answer, refusal in [
        (Answer(503, {}), "status 503"),
        (Answer(500), "status 500"),
        (Answer(422, {}, {"error": "invalid"}), "status 422"),
        (Answer(201, {}, {"status": "pending"}), "status 201 without an order_id"),
        (requests.ConnectionError("refused"), "ConnectionError"),
    ]:
        session = ScriptedSession([answer, CREATED])
        posted = post_order(session, "http://order/orders", {}, shed_retries=5, sleep=lambda _s: None)
        assert (posted.order_id, posted.refusal, session.posts) == (None, refusal, 1)
