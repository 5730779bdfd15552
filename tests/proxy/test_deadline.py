"""chassis_proxy.deadline: asyncio.timeout()'s behaviour on a loop the caller holds."""

from __future__ import annotations

import asyncio

import pytest
import uvloop
from chassis_proxy.deadline import Deadline


def run(coro_fn):  # type: ignore[no-untyped-def]
    return uvloop.run(coro_fn())


def test_time_up_is_a_timeout_error() -> None:
    async def main() -> str:
        loop = asyncio.get_running_loop()
        with pytest.raises(TimeoutError):
            async with Deadline(loop, 0.01):
                await asyncio.Event().wait()
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0  # the cancellation was taken back
        return "went on"

    assert run(main) == "went on"


def test_a_block_that_ends_in_time_leaves_no_timer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with Deadline(loop, 0.05):
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)  # the timer, were it left, would cancel this

    run(main)


def test_none_is_no_limit() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        async with Deadline(loop, None) as deadline:
            assert deadline._handle is None
            await asyncio.sleep(0.01)
        return 1

    assert run(main) == 1


def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        entered = asyncio.Event()

        async def body() -> None:
            async with Deadline(loop, 10):
                entered.set()
                await asyncio.Event().wait()

        task = loop.create_task(body())
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()

    run(main)


def test_outside_cancellation_after_expiry_is_not_swallowed() -> None:
    """The time runs out, and the proxy stops the task too: it ends cancelled, as with
    asyncio.timeout(), not with a TimeoutError the caller would take for the login's."""
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def body() -> None:
            async with Deadline(loop, 0.01):
                task = asyncio.current_task()
                assert task is not None
                try:
                    await asyncio.Event().wait()
                except asyncio.CancelledError:
                    task.cancel()  # a second request, from elsewhere, while it unwinds
                    raise

        task = loop.create_task(body())
        with pytest.raises(asyncio.CancelledError):
            await task

    run(main)

