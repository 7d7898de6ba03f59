"""The consumer's retry and dead-letter policy, with fakes for the apply step and the dead-letter publisher."""

import logging

import pytest
from pymongo.errors import AutoReconnect

import structlog

from shared import topics
from shared.consumer import EventConsumer, consume_batch
from shared.consumer import lanes as consume_lanes
from shared.contracts.envelope import Envelope
from shared.contracts import intake
from shared.contracts.envelope import ContractError
from shared.logging import configure_logging, describe
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
    assert headers[topics.DLQ_ERROR].startswith("RuntimeError at tests/unit/test_consumer.py:")
    assert headers["event-type"] == "case.reported"


NIK, NAME = "3603115507050001", "Siti Aminah"


@pytest.fixture
def service_logging():
    configure_logging("verification")  # JSON lines on the stdout pytest captures now
    yield
    structlog.reset_defaults()  # that stdout closes with the test


async def test_an_exception_quoting_opened_personal_data_reaches_neither_logs_nor_dead_letter_headers(
        service_logging, capsys):
    dlq = Recorder()

    async def failing(event):
        if event.data["narrative"] == "validation":  # a validation error quotes its input
            intake.Person.model_validate({"person_id": "p", "role": "stranger", "name": NAME, "nik": NIK})
        raise ValueError(f"no case for NIK {NIK} ({NAME})")

    consumer = EventConsumer(name="verification", apply=failing, dead_letter=dlq, attempts=2, backoff_s=0)
    for narrative in ("validation", "plain"):
        assert await _consume(consumer, case_reported(narrative=narrative).to_json().encode()) == "dead_lettered"
    structlog.get_logger().warning("lookup_failed", exc_info=ValueError(f"NIK {NIK}"))
    logged = capsys.readouterr().out
    headers = repr([headers for *_, headers in dlq.sent])
    for secret in (NIK, NAME):
        assert secret not in logged and secret not in headers
    assert "ValidationError at " in headers and "ValueError at tests/unit/test_consumer.py:" in headers
    assert '"exception": "ValueError"' in logged


def test_a_library_logging_a_traceback_logs_no_exception_text(capsys, service_logging):
    try:
        intake.Person.model_validate({"person_id": "p", "role": "stranger", "name": NAME, "nik": NIK})
    except ValueError:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application", exc_info=True)
    logged = capsys.readouterr().err
    assert "Exception in ASGI application (ValidationError at " in logged
    assert NIK not in logged and NAME not in logged and "Traceback" not in logged


def test_contract_errors_keep_their_text_which_names_fields_not_values():
    error = ContractError("case.reported payload invalid: persons.0.role: Input should be 'witness'")
    assert describe(error) == f"ContractError: {error}"


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


class Record:
    def __init__(self, topic, partition, offset, key, value):
        self.topic, self.partition, self.offset, self.key, self.value, self.headers = \
            topic, partition, offset, key, value, ()


def _event_record(offset, case_id, topic=topics.INTAKE, partition=0):
    event = case_reported().model_copy(update={"case_id": case_id})
    return Record(topic, partition, offset, case_id.encode(), event.to_json().encode())


def test_a_batch_is_split_into_lanes_by_case_keeping_each_case_in_order():
    records = [_event_record(0, "c-1"), _event_record(1, "c-2"), _event_record(2, "c-1"),
               _event_record(0, "a-1", topic=topics.IDENTITY), _event_record(1, "a-2", topic=topics.IDENTITY),
               Record(topics.INTAKE, 4, 7, None, b"{}"), Record(topics.INTAKE, 4, 8, b"", b"{}")]
    lanes = consume_lanes(records, serial_topics=(topics.IDENTITY,))
    assert [[(r.topic, r.offset) for r in lane] for lane in lanes] == [
        [(topics.INTAKE, 0), (topics.INTAKE, 2)],           # c-1's events in order
        [(topics.INTAKE, 1)],                               # c-2 beside it
        [(topics.IDENTITY, 0), (topics.IDENTITY, 1)],       # a serial topic: one lane, whatever the key
        [(topics.INTAKE, 7), (topics.INTAKE, 8)],           # no key: with its partition
    ]


def test_lanes_holding_an_urgent_report_come_first_and_the_rest_keep_their_order():
    records = [_event_record(i, f"c-{i}") for i in range(5)]
    records[3].headers = ((topics.HEADER_URGENT, b"1"), (topics.HEADER_EVENT_TYPE, b"case.reported"))
    records.append(_event_record(5, "c-1"))
    assert [[r.offset for r in lane] for lane in consume_lanes(records)] == [[3], [0], [1, 5], [2], [4]]


async def test_an_urgent_report_is_applied_before_a_queue_of_others_that_fill_every_slot():
    import asyncio

    seen = []

    async def apply(event):
        await asyncio.sleep(0.01)  # a recruiter's report taking its turn
        seen.append(event.case_id)

    consumer = EventConsumer(name="verification", apply=apply, dead_letter=Recorder(), backoff_s=0)
    records = [_event_record(i, f"c-{i}") for i in range(12)]
    records[10].headers = ((topics.HEADER_URGENT, b"1"),)
    await consume_batch(consumer, records, concurrency=2)
    assert seen.index("c-10") < 2 and len(seen) == 12


async def test_a_batch_applies_cases_side_by_side_and_each_case_in_order():
    import asyncio

    running, most, seen = 0, 0, []

    async def apply(event):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        seen.append((event.case_id, event.event_id))
        running -= 1

    consumer = EventConsumer(name="verification", apply=apply, dead_letter=Recorder(), backoff_s=0)
    records = [_event_record(i, f"c-{i % 5}") for i in range(20)]
    await consume_batch(consumer, records, concurrency=3)
    assert len(seen) == 20
    assert most == 3  # never more cases at once than allowed, and more than one
    for case in {r.key.decode() for r in records}:
        expected = [Envelope.from_bytes(r.value).event_id for r in records if r.key.decode() == case]
        assert [e for c, e in seen if c == case] == expected


async def test_a_batch_returns_only_after_a_bad_record_is_dead_lettered():
    dlq, applied = Recorder(), []

    async def apply(event):
        applied.append(event.case_id)

    consumer = EventConsumer(name="verification", apply=apply, dead_letter=dlq, backoff_s=0)
    await consume_batch(consumer, [Record(topics.INTAKE, 0, 5, b"c-9", b"not json"), _event_record(6, "c-9")],
                        concurrency=4)
    assert applied == ["c-9"] and len(dlq.sent) == 1
    assert dlq.sent[0][3][topics.DLQ_SOURCE_OFFSET] == "5"


async def test_what_a_batch_leaves_for_its_end_runs_once_per_key_after_every_record_and_at_once_outside():
    from shared.consumer import at_batch_end

    done = []

    async def apply(event):
        done.append(("applied", event.case_id))
        await at_batch_end(("week", "2026-W48"), lambda: _note(done, "touched 2026-W48"))
        await at_batch_end(("week", event.case_id[-1]), lambda: _note(done, f"touched {event.case_id[-1]}"))

    consumer = EventConsumer(name="audit", apply=apply, dead_letter=Recorder(), backoff_s=0)
    await consume_batch(consumer, [_event_record(i, f"c-{i % 2}") for i in range(6)], concurrency=4)
    assert [d for d in done if d[0] == "applied"] == done[:6]  # every record first
    assert sorted(done[6:]) == ["touched 0", "touched 1", "touched 2026-W48"]  # then each key once
    await at_batch_end(("week", "x"), lambda: _note(done, "now"))  # no batch: at once
    assert done[-1] == "now"


async def test_an_action_left_for_the_batch_end_waits_out_a_database_outage():
    calls = []

    async def touch():
        calls.append(1)
        if len(calls) < 3:
            raise AutoReconnect("database unreachable (simulated)")

    async def apply(event):
        from shared.consumer import at_batch_end
        await at_batch_end("touch", touch)

    consumer = EventConsumer(name="audit", apply=apply, dead_letter=Recorder(), backoff_s=0)
    await consume_batch(consumer, [_event_record(0, "c-1")], concurrency=1)  # returns once the touch is done
    assert len(calls) == 3


async def _note(done, what):
    done.append(what)
