"""A socket leg while the proxy still needs to read whole packets from it.

During the handshake and the login (and for every command when a script is loaded) the
connection code awaits packets one by one: :class:`PacketChannel` is an asyncio
``Protocol`` that frames incoming bytes with the codec's :class:`PacketReader` and
wakes the waiting coroutine. Once the login is done and no script needs to see
packets, the connection swaps the transport over to :mod:`chassis_proxy.relay`'s
protocols and takes the unread bytes with :meth:`PacketChannel.detach`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from chassis_mysql.framing import Packet, PacketReader, frame, frame_next_seq


class ChannelClosed(ConnectionError):
    """The peer closed the connection (or it broke) while we waited for a packet."""


class ChannelTimeout(TimeoutError):
    """No complete packet arrived within the timeout."""


class PacketChannel(asyncio.Protocol):
    """One leg (client side or server side) that yields whole logical packets."""

    def __init__(self, max_payload: int | None = None,
                 on_made: Callable[[PacketChannel], None] | None = None,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        #: The event loop, when the creator knows it (else looked up when needed: see
        #: chassis_proxy.deadline for why that costs).
        self.loop = loop
        self.reader = PacketReader(max_payload)
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.closed = False
        self.error: BaseException | None = None
        self._on_made = on_made
        self.on_lost: Callable[[PacketChannel, BaseException | None], None] | None = None
        #: When set, incoming bytes go to this callback (the scripted mode's command
        #: loop and response pumps) instead of :attr:`reader` and a waiting coroutine.
        self.sink: Callable[[bytes], None] | None = None
        #: Called when the write buffer drained below the low-water mark.
        self.on_resume: Callable[[], None] | None = None

    # asyncio callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if self._on_made is not None:
            self._on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
            return
        self.reader.feed(data)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def eof_received(self) -> bool:
        return False  # close the transport: a half-closed MySQL connection is useless

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        self.error = exc
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)
        if self.on_lost is not None:
            self.on_lost(self, exc)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self.on_resume is not None:
            self.on_resume()
        drain = self._drain_waiter
        if drain is not None and not drain.done():
            drain.set_result(None)

    # used by the connection code -------------------------------------------------

    async def read_packet(self, timeout: float | None = None) -> Packet:
        """The next logical packet; raises ChannelClosed, ChannelTimeout or ProtocolError."""
        packet = self.reader.next_packet()
        if packet is not None:
            return packet
        loop = self.event_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self.closed:
                raise ChannelClosed(self._closed_reason())
            waiter = self._waiter = loop.create_future()
            handle = None
            if deadline is not None:
                handle = loop.call_at(deadline, _expire, waiter)
            try:
                await waiter
            finally:
                self._waiter = None
                if handle is not None:
                    handle.cancel()
            packet = self.reader.next_packet()
            if packet is not None:
                return packet

    @property
    def write_paused(self) -> bool:
        """True while the transport's write buffer is above its high-water mark."""
        return self._paused

    def _closed_reason(self) -> str:
        if self.error is not None:
            return f"connection lost: {self.error}"
        return "connection closed by the peer"

    def event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop the creator gave, else the running one (a lookup that costs a system
        call on CPython 3.11: see chassis_proxy.deadline)."""
        return self.loop or asyncio.get_running_loop()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def send(self, payload: bytes, seq: int) -> int:
        """Frame and write one logical payload; returns the next sequence id."""
        self.write(frame(payload, seq))
        return frame_next_seq(len(payload), seq)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        while self._paused and not self.closed:
            self._drain_waiter = self.event_loop().create_future()
            try:
                await self._drain_waiter
            finally:
                self._drain_waiter = None

    def detach(self) -> bytes:
        """Hand over: return the raw bytes read but not consumed, and forget them."""
        return self.reader.drain()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(ChannelTimeout())
