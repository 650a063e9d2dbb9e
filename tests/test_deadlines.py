"""CallDeadlines: one timer bounds every call in flight; only overdue calls time out."""

from __future__ import annotations

import asyncio

import pytest

from queue_core.deadlines import CallDeadlines


async def call(deadlines: CallDeadlines, seconds: float) -> str:
    with deadlines():
        await asyncio.sleep(seconds)
    return "done"


async def test_only_the_overdue_calls_time_out() -> None:
    deadlines = CallDeadlines(0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(
        call(deadlines, 0.05), call(deadlines, 1.0), call(deadlines, 0.1), return_exceptions=True
    )
    assert results[0] == "done" and results[2] == "done"
    assert isinstance(results[1], TimeoutError)
    assert 0.15 < loop.time() - started < 0.6
    # Later calls get their own full deadline from the same (re-armed) timer.
    await asyncio.sleep(0.15)
    assert await call(deadlines, 0.1) == "done"
    with pytest.raises(TimeoutError):
        await call(deadlines, 0.5)


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    deadlines = CallDeadlines(5.0)
    task = asyncio.ensure_future(call(deadlines, 1.0))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await call(deadlines, 0.01) == "done"  # nothing left behind


async def test_no_deadline_and_nested_calls() -> None:
    assert await call(CallDeadlines(None), 0.05) == "done"
    deadlines = CallDeadlines(0.1)
    # The outer deadline governs the inner call.
    with pytest.raises(TimeoutError), deadlines():
        await call(deadlines, 1.0)
