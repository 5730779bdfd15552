"""One server connection as the pool and the hand-over see it: :class:`ServerLink`.

Imported by :mod:`chassis_proxy.pool`, which :mod:`chassis_proxy.backends` imports: the
one direction link <- pool <- backends. What a link needs of its backend is the
:class:`LinkBackend` protocol, so this module imports neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field
from typing import Protocol

from chassis_mysql.constants import Capability
from chassis_mysql.handshake import HandshakeV10

from chassis.listen import Address
from chassis_proxy.channel import PacketChannel
from chassis_proxy.hooks import AddressInfo, PeerInfo
from chassis_proxy.stats import Counters


def keepalive(transport: asyncio.BaseTransport) -> None:
    """TCP keepalive on a new TCP server connection (TCP_NODELAY: asyncio and uvloop set it
    on every TCP transport already)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


class LinkPool(Protocol):
    """The idle connections of a backend (:class:`chassis_proxy.pool.Pool`)."""

    @property
    def idle_count(self) -> int: ...
    def park(self, link: ServerLink) -> bool: ...
    def take(self, username: str, client_id: int, profile: tuple[int, int] | None,
             any_user: bool, tls: bool | None = None,
             origin: str | None = None) -> ServerLink | None: ...


class LinkBackend(Protocol):
    """What a server connection needs of its backend (:class:`chassis_proxy.backends.Backend`)."""

    index: int
    connected_clients: int
    stats: Counters

    @property
    def pool(self) -> LinkPool: ...
    @property
    def addr(self) -> Address: ...
    @property
    def address(self) -> AddressInfo: ...


#: Login capabilities that change what the server does for the session (result shapes,
#: affected-row counts, LOCAL INFILE). COM_RESET_CONNECTION keeps the ones of the first
#: login, so a logged-in client only takes another client's connection whose login
#: asked for the same ones (and the same character set). Multi-statements differ freely:
#: COM_SET_OPTION switches them when the connection changes hands.
PROFILE_CAPABILITIES = int(
    Capability.FOUND_ROWS
    | Capability.IGNORE_SPACE
    | Capability.LOCAL_FILES
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.SESSION_TRACK
    | Capability.DEPRECATE_EOF
)


@dataclass(eq=False)
class ServerLink:
    """One server connection and what handing it to another client needs.

    ``peer`` is what scripts see as ``proxy.connection.server`` while a client holds
    it. ``username``, ``capabilities`` and ``charset`` are those of the login the
    server accepted; ``login_response`` is the first login's auth response (for
    ``--proxy-pool-no-change-user``'s comparison, never logged).
    """

    channel: PacketChannel
    backend: LinkBackend
    peer: PeerInfo
    handshake: HandshakeV10
    greeting: bytes
    secure: bool = False
    #: The leg is TLS. A connection is only handed to a client whose backend leg calls
    #: for the same (chassis_proxy.tls.pool_filter): a plaintext client must never get
    #: a TLS leg under --proxy-backend-ssl-mode=as_client, nor a TLS client a plain one.
    tls: bool = False
    username: str = ""
    login_response: bytes = field(default=b"", repr=False)
    capabilities: int = 0
    charset: int = 0
    authenticated: bool = False
    #: The proxy itself is talking to the server on it (a reset): not at rest.
    busy: bool = False
    #: Connection id of the last client that used it (0: none yet).
    last_client: int = 0
    #: Must be reset (COM_RESET_CONNECTION) before its next command: another client
    #: had it. Stays set until the reset is done, however often it changes hands.
    reset_pending: bool = False
    #: The client holding it must prepare it before its next command (a reset, or its
    #: multi-statement setting): see chassis_proxy.handover.Handover.prepare.
    unready: bool = False
    parked_at: float = 0.0
    #: The client IP the server was told in a PROXY header (--proxy-backend-proxy-protocol;
    #: None without): only a client of that IP may take it. Set when it is parked: a
    #: connection only ever changes hands between clients of one origin.
    origin: str | None = None

    @property
    def profile(self) -> tuple[int, int]:
        return self.capabilities & PROFILE_CAPABILITIES, self.charset

    @property
    def name(self) -> str:
        return f"{self.backend.addr} thread {self.peer.thread_id}"

    def close(self) -> None:
        self.channel.on_lost = None
        self.channel.sink = None
        self.channel.close()


