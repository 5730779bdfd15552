"""Switching a leg to TLS in the middle of the MySQL handshake.

MySQL negotiates TLS in-band: the client sends a short SSLRequest packet and starts the
TLS handshake right behind it. A client usually writes its ClientHello immediately, so
the read that brought the SSLRequest may already hold the first TLS bytes.
``loop.start_tls`` cannot be told about bytes already read, so :func:`upgrade` hands
them to the TLS protocol right after ``start_tls`` has installed it (before any newer
socket read can reach it); without this a fast client would hang in its handshake.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any


async def upgrade(transport: asyncio.Transport, protocol: asyncio.BaseProtocol,
                  context: ssl.SSLContext, *, server_side: bool, leftover: bytes = b"",
                  timeout: float | None = None) -> asyncio.Transport:
    """``loop.start_tls`` that first replays ``leftover`` (bytes read past the SSLRequest)."""
    loop = asyncio.get_running_loop()
    task = loop.create_task(loop.start_tls(
        transport, protocol, context, server_side=server_side,
        ssl_handshake_timeout=timeout,
    ))
    if leftover:
        # The task's first step (next loop iteration) swaps the transport's protocol
        # and queues the TLS protocol's connection_made and resume_reading. This
        # callback runs in that same iteration, after the step, and queues the replay
        # behind those two: all three then run in one iteration, before the socket
        # is read again, so the TLS bytes stay in order.
        def replay() -> None:
            tls_protocol: Any = transport.get_protocol()
            if tls_protocol is protocol or not hasattr(tls_protocol, "buffer_updated"):
                transport.close()  # start_tls did not take over: cannot go on safely
                return
            data = memoryview(leftover)
            while data:
                buf = tls_protocol.get_buffer(len(data))
                n = min(len(buf), len(data))
                buf[:n] = data[:n]
                tls_protocol.buffer_updated(n)
                data = data[n:]

        loop.call_soon(loop.call_soon, replay)
    try:
        new_transport = await task
    except asyncio.CancelledError:
        task.cancel()
        raise
    assert new_transport is not None
    return new_transport
