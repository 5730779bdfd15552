"""TLS on the admin port: the ``--admin-ssl-*`` options and the switch of a login to TLS.

The options, their checks and the context are the chassis's listener family
(:mod:`chassis.tls`), the same the proxy's ``--proxy-ssl-*`` use: one implementation,
two prefixes. What is the admin's own is MySQL's in-band request (the SSLRequest after
the greeting) on an asyncio *stream*: bytes the client sent right behind its request
may already sit in our buffers, and must reach the TLS layer first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, Protocol

import click
from chassis_mysql.constants import Capability, ErrorCode
from chassis_mysql.handshake import is_ssl_request
from chassis_mysql.packets import err_packet

from chassis import tls as chassis_tls
from chassis.config import Config
from chassis.tls import ListenerTLS, TLSMode

log = logging.getLogger("chassis.admin")

PREFIX = "admin-ssl"
#: An admin server's TLS before the options are read: none.
NO_TLS = ListenerTLS(TLSMode.DISABLED)
#: Seconds a client may take for its TLS handshake.
HANDSHAKE_TIMEOUT = 10.0


def options() -> list[click.Option]:
    return chassis_tls.listener_options(PREFIX, "admin clients")


def load(config: Config) -> ListenerTLS:
    return chassis_tls.load_listener(config, PREFIX)


def capabilities(settings: ListenerTLS) -> int:
    """What the greeting adds: CLIENT_SSL when TLS is offered."""
    return int(Capability.SSL) if settings.offered else 0


class LoginLeg(Protocol):
    """What the login's switch to TLS needs of an admin connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def send(self, *payloads: bytes) -> Awaitable[None]: ...
    def read_packet(self, limit: int = ...) -> Awaitable[bytes]: ...
    def buffered(self) -> bytes: ...


async def login_packet(conn: LoginLeg, settings: ListenerTLS, payload: bytes,
                       limit: int) -> bytes | None:
    """The client's login packet, read inside TLS when it asked for TLS; None when the
    login is refused (the ERR is sent): TLS asked for but not offered, or not asked for
    under ``--admin-ssl-mode=required`` (a unix socket counts as secure)."""
    if not is_ssl_request(payload):
        unix = not isinstance(conn.writer.get_extra_info("peername"), tuple)
        if settings.required and not unix:
            await conn.send(err_packet(ErrorCode.ACCESS_DENIED_ERROR, "connections without TLS are "
                                       "refused (--admin-ssl-mode=required): connect with TLS", "28000"))
            return None
        return payload
    if settings.context is None:
        await conn.send(err_packet(ErrorCode.ACCESS_DENIED_ERROR, "the admin port does not offer "
                                   "TLS (see --admin-ssl-cert)", "08004"))
        return None
    try:
        await _upgrade(conn, settings.context)
    except (OSError, TimeoutError) as e:  # ssl.SSLError is an OSError
        log.warning("admin: TLS handshake with %s failed: %s", conn.writer.get_extra_info("peername"),
                    getattr(e, "verify_message", None) or e or type(e).__name__)
        return None
    return await conn.read_packet(limit)


async def _upgrade(conn: LoginLeg, context: Any) -> None:
    """``StreamWriter.start_tls``, with the bytes read past the SSLRequest replayed.

    The stdlib's ``start_tls`` would lose them (a fast client's ClientHello comes in the
    same read as its SSLRequest); it is rebuilt here from the same steps, which is why
    two private stream attributes are touched, as the stdlib itself does.
    """
    writer, reader = conn.writer, conn.reader
    transport: Any = writer.transport  # uvloop's transports are no asyncio.Transport subclass
    transport.pause_reading()
    pending: Any = reader._buffer  # type: ignore[attr-defined]  # read but not consumed yet
    leftover = conn.buffered() + bytes(pending)
    pending.clear()
    protocol: Any = transport.get_protocol()
    new_transport = await chassis_tls.upgrade(transport, protocol, context, server_side=True,
                                              leftover=leftover, timeout=HANDSHAKE_TIMEOUT)
    writer._transport = new_transport  # type: ignore[attr-defined]
    protocol._replace_writer(writer)
