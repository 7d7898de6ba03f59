"""A dead letter is never dropped: refused as it is, it is stored as a raw copy; refused even so, it is retried
(unacknowledged) and counted on /readyz. The database is replaced by a recorder that refuses what the test says."""

import asyncio
import base64
import json
from datetime import UTC, datetime

from services.audit import domain
from services.audit.handlers import DeadLettersWaiting, keep_dead_letter
from shared import topics


def _dead_letter():
    return domain.dead_letter(topic=topics.DEADLETTER, partition=2, offset=7, key=b"case-1",
                              headers={topics.DLQ_SOURCE_TOPIC: topics.INTAKE, topics.DLQ_CONSUMER: "verification"},
                              body=b'{"oops"', now=datetime(2026, 11, 30, tzinfo=UTC))


class Refusing:
    def __init__(self, refuse):
        self.refuse, self.calls, self.stored = refuse, 0, []

    async def __call__(self, doc):
        self.calls += 1
        if self.refuse(doc):
            raise ValueError("refused by the database")
        self.stored.append(doc)
        return True


async def test_a_dead_letter_the_database_refuses_is_stored_as_a_raw_copy():
    db, waiting = Refusing(lambda doc: "raw" not in doc), DeadLettersWaiting()
    how = await keep_dead_letter(db, _dead_letter(), attempts=3, backoff_s=0, waiting=waiting)
    [stored] = db.stored
    assert how == "recorded_raw" and db.calls == 4
    assert stored["_id"] == "2:7"  # the error is described (shared.logging), never quoted: it may hold the message
    assert stored["record_error"].startswith("ValueError at tests/unit/test_dead_letter_keeping.py:")
    assert "refused by the database" not in stored["record_error"]  # an error's text may quote personal data
    kept = json.loads(base64.b64decode(stored["raw"]))
    assert kept["body"] == '{"oops"' and kept["headers"][topics.DLQ_CONSUMER] == "verification"
    assert waiting.count == 0


async def test_a_dead_letter_that_cannot_be_stored_at_all_is_retried_and_counted_not_dropped():
    db, waiting = Refusing(lambda doc: True), DeadLettersWaiting()
    task = asyncio.create_task(keep_dead_letter(db, _dead_letter(), attempts=2, backoff_s=0, waiting=waiting))

    async def counted():
        while not (waiting.count == 1 and db.calls > 5):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(counted(), 10)
    assert not task.done()  # still trying: the message is not acknowledged
    assert await waiting.details() == {"deadletters_not_recorded": 1}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert waiting.count == 0
