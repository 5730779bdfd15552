"""The heartbeat by which the angel notices a worker whose event loop is stuck.

The angel restarts a worker that dies, but a worker that hangs (a plugin's blocking call,
a long C call inside a Lua hook) keeps every client of its own waiting forever. With
``--keepalive`` each worker's loop writes the monotonic clock into a page shared with the
angel (an anonymous ``MAP_SHARED`` mapping made before the fork: no file, no syscall per
beat), as gunicorn's workers touch their temp file. The angel reads it in its loop; a
worker silent for ``--watchdog-timeout`` gets its tracebacks dumped (``SIGQUIT``, which
:mod:`chassis.logs` hands to faulthandler with ``--log-backtrace-on-crash``), then
SIGKILL, and the usual crash policy restarts it.
"""

from __future__ import annotations

import asyncio
import mmap
import signal
import struct
import time

#: Sent to a hung worker first when its tracebacks are wanted (faulthandler dumps them).
DUMP_SIGNAL = signal.SIGQUIT
#: Time the dump gets before the SIGKILL.
DUMP_GRACE = 1.0

_FORMAT = struct.Struct("d")


class Heartbeat:
    """One worker's last sign of life, shared between the angel and that worker."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, _FORMAT.size)  # anonymous and shared across fork
        self.beat()

    def beat(self) -> None:
        _FORMAT.pack_into(self._page, 0, time.monotonic())

    def silent_for(self) -> float:
        """Seconds since the last beat (CLOCK_MONOTONIC is the same in every process)."""
        (last,) = _FORMAT.unpack_from(self._page, 0)
        return max(0.0, time.monotonic() - float(last))

    def close(self) -> None:
        self._page.close()


def interval(timeout: float) -> float:
    """How often a worker beats: often enough that scheduling jitter is no false alarm."""
    return min(1.0, timeout / 4)


async def beat_forever(heartbeat: Heartbeat, every: float) -> None:
    """The worker's side: a beat each time its event loop gets round to it."""
    while True:
        heartbeat.beat()
        await asyncio.sleep(every)
