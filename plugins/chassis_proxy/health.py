"""Background health checks: a DOWN backend is probed on an interval, not only when a
client happens to connect (MySQL Proxy's only retry).

A probe opens a connection and reads the server's greeting: a Handshake v10 means the
server is back (UP); a refused or silent connection, or an ERR greeting ("Too many
connections", "Host is blocked"), keeps it DOWN with that reason. The probe closes
before logging in, which the server counts as an aborted connect; since probes only
run while a backend is DOWN and stop at its first success, that stays far below
``max_connect_errors``. OFFLINE backends (set by an operator) are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import PacketReader
from chassis_mysql.login import LoginEvent, LoginTracker

from chassis.listen import Address
from chassis_proxy.backends import Backends
from chassis_proxy.hooks import BackendState

log = logging.getLogger("chassis.proxy.health")


async def probe(addr: Address, timeout: float, header: bytes | None = None) -> str | None:
    """None when a MySQL server greets us at ``addr``, else why not. ``header``: the
    PROXY protocol LOCAL header sent first (--proxy-backend-proxy-protocol), for a
    server that waits for one before greeting."""
    writer: asyncio.StreamWriter | None = None
    packets = PacketReader()
    try:
        async with asyncio.timeout(timeout):
            if addr.path is not None:
                reader, writer = await asyncio.open_unix_connection(addr.path)
            else:
                reader, writer = await asyncio.open_connection(addr.host, addr.port)
            if header is not None:
                writer.write(header)
            while (greeting := packets.next_packet()) is None:
                data = await reader.read(65536)
                if not data:
                    return "closed the connection before its greeting"
                packets.feed(data)
        # The codec says whether it is a greeting or an ERR in its place.
        login = LoginTracker()
        if login.server_packet(greeting.payload) == LoginEvent.ERR:
            assert login.error is not None
            return f"greeted with error {login.error.error_code}: {login.error.message}"
        return None
    except TimeoutError:
        return f"no greeting within {timeout:g} s"
    except ProtocolError as e:
        return f"not a MySQL greeting: {e}"
    except OSError as e:
        return e.strerror or str(e)
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def check_down_backends(backends: Backends, timeout: float, header: bytes | None = None) -> None:
    """Probe every DOWN backend once, concurrently; mark the ones that answer UP."""
    down = [b for b in backends if b.state == BackendState.DOWN and b.admin_state is None]
    reasons = await asyncio.gather(*(probe(b.addr, timeout, header) for b in down))
    for backend, reason in zip(down, reasons, strict=True):
        if backend.state != BackendState.DOWN:
            continue  # changed meanwhile (a client connected, an operator)
        if reason is None:
            backend.set_state(BackendState.UP, "health check: the server greets again")
        elif reason != backend.down_reason:
            log.info("backend %s still down: %s", backend.addr, reason)
            backend.down_reason = reason


async def run(backends: Backends, interval: float, timeout: float, header: bytes | None = None) -> None:
    """Check DOWN backends every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await check_down_backends(backends, timeout, header)
        except Exception:  # a bug here must not end the checks for good
            log.exception("health check failed")
