"""A time limit for a connection's coroutine, on the event loop the connection holds.

``asyncio.timeout()`` looks the running loop up on entry and again to arm its timer, and
CPython 3.11 makes a getpid(2) system call at every such lookup (its check for a fork).
A login sets two limits, the login's and the backend connect's, so the proxy takes the
loop it was given instead: no system call, and no state machine it does not need.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadline:
    """``async with Deadline(loop, seconds):`` is ``async with asyncio.timeout(seconds):``
    (None: no limit) for a task running on ``loop``: the block is cancelled when the time
    is up, and the cancellation leaves it as TimeoutError. A cancellation from elsewhere
    (the proxy stopping) stays a cancellation."""

    __slots__ = ("_cancelling", "_delay", "_expired", "_handle", "_loop", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float | None) -> None:
        self._loop = loop
        self._delay = delay
        self._task: asyncio.Task[object] | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._expired = False
        self._cancelling = 0

    async def __aenter__(self) -> Deadline:
        task = asyncio.current_task(self._loop)
        if task is None:
            raise RuntimeError("Deadline is for a coroutine running in a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self._delay is not None:
            self._handle = self._loop.call_later(self._delay, self._expire)
        return self

    def _expire(self) -> None:
        self._handle = None
        self._expired = True
        assert self._task is not None
        self._task.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired:
            assert self._task is not None
            # Ours, if no one else asked for a cancellation since we entered.
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
