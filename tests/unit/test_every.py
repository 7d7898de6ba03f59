"""`shared.service.every`: the background loop that writes late work (audit's trail heads, referral's day counts)."""

import asyncio

from shared.service import every


async def test_the_step_runs_every_interval_survives_a_failure_and_runs_once_more_at_shutdown():
    calls = []

    async def step():
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("database away (simulated)")

    task = asyncio.create_task(every(0.01, step, "test_step")())
    while len(calls) < 4:
        await asyncio.sleep(0.005)
    task.cancel()
    before = len(calls)
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert len(calls) == before + 1  # what was gathered since the last round is written as the service stops
