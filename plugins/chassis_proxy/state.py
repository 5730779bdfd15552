"""The plain state of one client connection, shared by every room that serves it.

:class:`ConnectionState` holds what the login, the hand-over, the command loop and the
pumps all read and write: both channels and their sequence ids, what each peer is
(``proxy.connection.client``/``server``), the negotiated capabilities and scramble, the
injection queue, the attached server connection, and the counters. It is also the
object scripts see as ``proxy.connection`` (:class:`chassis_proxy.hooks.ConnectionView`);
``backend_ndx = n`` is handed to whichever room owns that meaning at the time.

It owns no sockets' lifetimes and runs no coroutine: the rooms are handed this state
and the callbacks they need, never the connection object.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from chassis_mysql.handshake import HandshakeV10
from chassis_mysql.packets import ERR, err_packet

from chassis_proxy.channel import PacketChannel
from chassis_proxy.hooks import AddressInfo, BackendView, InjectionQueue, Outcome, PeerInfo
from chassis_proxy.link import LinkBackend, ServerLink

if TYPE_CHECKING:
    from chassis_proxy.settings import ProxySettings

log = logging.getLogger("chassis.proxy")


def peer_address(transport: asyncio.BaseTransport, which: str) -> AddressInfo | None:
    """``peername``/``sockname`` of a transport as the address object scripts see."""
    value = transport.get_extra_info(which)
    if value is None:
        return None
    if isinstance(value, str | bytes):
        path = value.decode() if isinstance(value, bytes) else value
        return AddressInfo(name=path, address=path, port=None, family=socket.AF_UNIX)
    host, port = value[0], value[1]
    if ":" in host:
        return AddressInfo(name=f"[{host}]:{port}", address=host, port=port, family=socket.AF_INET6)
    return AddressInfo(name=f"{host}:{port}", address=host, port=port, family=socket.AF_INET)


def ignore(*_args: object) -> None:
    """A callback that does nothing: what a closed connection's rooms are left holding
    instead of callbacks into it (no reference cycles, so it is freed at once)."""


class ConnectionState:
    """Everything one client connection's rooms share; the scripts' ``proxy.connection``."""

    def __init__(self, connection_id: int, client_ch: PacketChannel, settings: ProxySettings,
                 backends: Callable[[], list[BackendView]]) -> None:
        self.connection_id = connection_id
        self.settings = settings
        self._backends = backends
        #: Where ``proxy.connection.backend_ndx = n`` goes (the hand-over sets it).
        self.on_backend_ndx: Callable[[int], None] = self._ignore_backend_ndx
        # the two legs
        self.client_ch = client_ch
        self.server_ch: PacketChannel | None = None
        self.cseq = 0  # the next sequence id on the client leg (login)
        self.sseq = 0  # the next one on the server leg (login)
        self.client_secure = False  # TLS or unix socket: clients send clear passwords here
        self.server_secure = False
        # ConnectionView
        self.client = PeerInfo()
        self.server: PeerInfo | None = None
        self.backend_index = 0  # proxy.connection.backend_ndx as scripts read it
        self.connection_close = False
        self.queries = InjectionQueue()
        # the login
        self.server_handshake: HandshakeV10 | None = None
        self.client_capabilities = 0  # what the client asked for (after our masking)
        self.client_charset = 0
        self.plugin = ""
        self.scramble = b""
        # the server connection (also what the pool keeps); see chassis_proxy.handover
        self.link: ServerLink | None = None
        self.backend: LinkBackend | None = None
        self.counted = False  # counted in backend.connected_clients
        self.pool_user = ""  # the user the server accepted (the pool's key for this client)
        self.login_profile: tuple[int, int] = (0, 0)  # what the pool matches for this client
        # life
        self.closed = False
        self.in_commands = False  # scripted command phase (the login is over)
        # Admin counters: the scripted loop adds here, the relay legs count themselves.
        self.bytes_in = 0
        self.bytes_out = 0
        self.commands = 0
        # The latest buffers seen on each side in the scripted phase: the service's
        # sweeper watches them for --proxy-read-timeout, as it does for relays.
        self.client_seen = b""
        self.server_seen = b""

    # ConnectionView --------------------------------------------------------------

    @property
    def backends(self) -> list[BackendView]:
        return self._backends()

    @property
    def backend_ndx(self) -> int:
        """The backend of the attached server connection (1-based), 0 for none.

        In ``connect_server`` it is the backend chosen so far (where to connect).
        """
        return self.backend_index

    @backend_ndx.setter
    def backend_ndx(self, n: int) -> None:
        """``proxy.connection.backend_ndx = n`` (reference 7.5): see chassis_proxy.handover."""
        self.on_backend_ndx(int(n))

    def _ignore_backend_ndx(self, n: int) -> None:
        log.debug("conn %d: backend_ndx = %d ignored: no backend choice yet", self.connection_id, n)

    # names for log lines ----------------------------------------------------------

    @property
    def name(self) -> str:
        """The client's address for log lines (``unix:PATH`` for unix socket clients)."""
        src = self.client.src
        if src is None:
            return "?"
        if src.family == socket.AF_UNIX:
            dst = self.client.dst
            return f"unix:{dst.name if dst is not None else src.name}"
        return src.name

    def backend_name(self) -> str:
        return str(self.backend.addr) if self.backend is not None else "?"

    # replies to the client ---------------------------------------------------------

    def fail_greeting(self, code: int, message: str, sqlstate: str = "HY000") -> None:
        """An ERR in place of the server greeting (sequence id 0)."""
        self.client_ch.send(ERR(code, message, sqlstate).encode(), 0)

    def send_client_err(self, code: int, message: str, sqlstate: str) -> None:
        """An ERR at the client leg's next sequence id (during the login)."""
        self.cseq = self.client_ch.send(err_packet(code, message, sqlstate), self.cseq)

    def send_response(self, outcome: Outcome, seq: int) -> int:
        """A script's ``proxy.response`` packets from sequence id ``seq``."""
        for payload in outcome.response or ():
            seq = self.client_ch.send(payload, seq)
        self.cseq = seq
        return seq

    def copy_login_to_server(self) -> None:
        """``proxy.connection.server`` takes the client's login once the server has it."""
        if self.server is None:
            return
        self.server.username = self.client.username
        self.server.default_db = self.client.default_db
        self.server.scrambled_password = self.client.scrambled_password
        self.server.auth_plugin_name = self.plugin
