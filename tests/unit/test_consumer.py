"""The consumer's retry and dead-letter policy, with fakes for the apply step and the dead-letter publisher."""

import pytest
from pymongo.errors import AutoReconnect

from shared import topics
from shared.consumer import EventConsumer
from tests.builders import case_reported


class Recorder:
    def __init__(self):
        self.sent = []

    async def __call__(self, topic, key, value, headers):
        self.sent.append((topic, key, value, headers))


async def _consume(consumer, body):
    return await consumer.consume("waspada.intake.v1", 3, 42, b"k", body, {"event-type": "case.reported"})


async def test_a_processing_failure_is_retried_then_dead_lettered_with_its_source():
    calls, dlq = [], Recorder()

    async def failing(event):
        calls.append(event.event_id)
        raise RuntimeError("bug")

    consumer = EventConsumer(name="verification", apply=failing, dead_letter=dlq, attempts=3, backoff_s=0)
    body = case_reported().to_json().encode()
    assert await _consume(consumer, body) == "dead_lettered"
    assert len(calls) == 3
    [(topic, key, value, headers)] = dlq.sent
    assert (topic, key, value) == (topics.DEADLETTER, b"k", body)
    assert headers[topics.DLQ_SOURCE_TOPIC] == "waspada.intake.v1"
    assert (headers[topics.DLQ_SOURCE_PARTITION], headers[topics.DLQ_SOURCE_OFFSET]) == ("3", "42")
    assert headers[topics.DLQ_CONSUMER] == "verification" and headers[topics.DLQ_ATTEMPTS] == "3"
    assert headers[topics.DLQ_ERROR] == "RuntimeError: bug" and headers["event-type"] == "case.reported"


async def test_an_unreachable_database_is_waited_for_not_dead_lettered(monkeypatch):
    import shared.consumer as module

    monkeypatch.setattr(module, "MAX_BACKOFF_S", 0)
    outages, dlq = iter([AutoReconnect("down")] * 5), Recorder()
    applied = []

    async def flaky(event):
        if (err := next(outages, None)) is not None:
            raise err
        applied.append(event.event_id)

    consumer = EventConsumer(name="verification", apply=flaky, dead_letter=dlq, attempts=2, backoff_s=0)
    event = case_reported()
    assert await _consume(consumer, event.to_json().encode()) == "applied"
    assert applied == [event.event_id] and dlq.sent == []


@pytest.mark.parametrize("body", [b"", b"null", b'{"type": "case.reported"}'])
async def test_a_message_that_is_no_envelope_is_dead_lettered_at_once(body):
    calls, dlq = [], Recorder()

    async def apply(event):
        calls.append(event)

    consumer = EventConsumer(name="audit", apply=apply, dead_letter=dlq, attempts=3, backoff_s=0)
    assert await _consume(consumer, body) == "dead_lettered"
    assert calls == [] and len(dlq.sent) == 1 and dlq.sent[0][3][topics.DLQ_ATTEMPTS] == "1"
