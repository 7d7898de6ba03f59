"""`shared.service.every`: the background loop that writes late work (audit's trail heads, referral's day counts)."""

import asyncio

from shared.service import every


async def test_the_step_runs_every_interval_survives_a_failure_and_runs_once_more_at_shutdown():
    calls = []

    async def step():
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("database away (simulated)")

    task = asyncio.create_task(every(0.01, step, "test_step", at_stop=True)())
    while len(calls) < 4:
        await asyncio.sleep(0.005)
    task.cancel()
    before = len(calls)
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert len(calls) == before + 1  # what was gathered since the last round is written as the service stops


async def test_a_loop_may_start_at_once_and_stop_without_a_last_step():
    calls = []

    async def step():
        calls.append(asyncio.get_running_loop().time())

    task = asyncio.create_task(every(60, step, "test_step", at_start=True)())
    while not calls:
        await asyncio.sleep(0.005)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    assert len(calls) == 1  # once at start (not after a minute), and nothing more as it stopped
