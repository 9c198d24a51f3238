"""aaa.eager: a coroutine started now and awaited later behaves as if it had been awaited directly."""

from __future__ import annotations

import asyncio

import pytest

from aaa.eager import eager


async def test_the_coroutine_runs_up_to_its_first_suspension_at_once() -> None:
    steps: list[str] = []
    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def call() -> int:
        steps.append("sent")
        value = await reply
        steps.append("answered")
        return value * 2

    started = eager(call())
    assert steps == ["sent"]  # before anyone awaits it: the command is already queued
    asyncio.get_running_loop().call_soon(reply.set_result, 21)
    assert await started == 42 and steps == ["sent", "answered"]


async def test_a_coroutine_that_never_suspends_is_done_at_once() -> None:
    async def ready() -> str:
        return "done"

    assert await eager(ready()) == "done"


async def test_errors_reach_the_awaiting_code_before_and_after_the_suspension() -> None:
    async def fails_at_once() -> None:
        raise ValueError("before")

    started = eager(fails_at_once())  # nothing raised here
    with pytest.raises(ValueError, match="before"):
        await started

    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def fails_later() -> int:
        return await reply

    later = eager(fails_later())
    reply.set_exception(ConnectionError("after"))
    with pytest.raises(ConnectionError, match="after"):
        await later


async def test_several_suspensions_and_an_already_answered_future() -> None:
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()
    second: asyncio.Future[int] = loop.create_future()

    async def two_calls() -> int:
        a = await first
        await asyncio.sleep(0)  # a bare yield the task reschedules
        return a + await second

    started = eager(two_calls())
    first.set_result(1)  # answered before anyone awaits
    loop.call_later(0.01, second.set_result, 2)
    assert await started == 3


async def test_cancelling_the_awaiting_task_cancels_the_coroutine_inside() -> None:
    reply: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    cleaned: list[bool] = []

    async def call() -> int:
        try:
            return await reply
        finally:
            cleaned.append(True)

    started = eager(call())

    async def waiter() -> int:
        return await started

    task = asyncio.get_running_loop().create_task(waiter())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True] and reply.cancelled()
