"""One client connection: backend choice, handshake, login relay, then relay or script.

The login is relayed packet by packet with the codec (the server's scramble, the
client's answer: the proxy never knows a password, except in the one case below); then
the connection either hands both sockets to :mod:`chassis_proxy.relay` (no script: the
flat hot path) or runs :mod:`chassis_proxy.scripted`'s command loop.

Sequence ids are kept per leg: the client leg and the server leg can differ by one
when only one of them did an SSLRequest, so every forwarded login packet gets the next
id of the leg it goes to.

caching_sha2_password full authentication needs the password itself. A client on a
secure leg (TLS or unix socket) sends it in clear text; a client on plain TCP asks for
the server's RSA key and sends it encrypted. When the two legs differ in security the
proxy converts, in memory, for that one packet (see :mod:`chassis_proxy.sha2`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import socket
from dataclasses import replace
from typing import TYPE_CHECKING

from chassis_mysql.commands import ComChangeUser
from chassis_mysql.constants import Capability, Command
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import Packet
from chassis_mysql.handshake import (
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    SSLRequest,
    is_ssl_request,
)
from chassis_mysql.packets import ERR, err_packet, ok_packet

from chassis_proxy import relay, scripted, tls
from chassis_proxy.backends import Backend
from chassis_proxy.channel import ChannelClosed, ChannelTimeout, PacketChannel
from chassis_proxy.hooks import (
    AddressInfo,
    BackendState,
    BackendView,
    ConnectionHooks,
    Decision,
    InjectionQueue,
    Outcome,
    PeerInfo,
    ScriptLoadError,
)
from chassis_proxy.pool import PROFILE_CAPABILITIES, PoolError, ServerLink

if TYPE_CHECKING:
    from chassis_proxy.service import ProxyService

log = logging.getLogger("chassis.proxy")

#: Largest packet accepted during the login (a login packet is a few hundred bytes; this
#: stops a client that sends garbage from making us wait for megabytes).
LOGIN_MAX_PAYLOAD = 1 << 20

#: Capabilities never offered to clients: the relay cannot decompress.
MASKED_CAPABILITIES = Capability.COMPRESS | Capability.ZSTD_COMPRESSION_ALGORITHM

#: Capabilities that change the shape of results, masked when a script is loaded: the
#: proxy then reads results itself and scripts build answers in the classic format
#: (EOF packets, full metadata), as MySQL Proxy 0.8's scripts expect.
SCRIPTED_MASKED_CAPABILITIES = (
    Capability.DEPRECATE_EOF
    | Capability.MARIADB_CLIENT_CACHE_METADATA
    | Capability.MARIADB_CLIENT_EXTENDED_METADATA
    | Capability.MARIADB_CLIENT_COM_MULTI
    | Capability.MARIADB_CLIENT_STMT_BULK_OPERATIONS
    | Capability.MARIADB_CLIENT_BULK_UNIT_RESULTS
    | Capability.MARIADB_CLIENT_PROGRESS
)

CACHING_SHA2 = "caching_sha2_password"

# Error codes the proxy itself sends (names from MySQL's mysqld_error.h).
ER_CON_COUNT_ERROR = 1040
ER_HANDSHAKE_ERROR = 1043
ER_ACCESS_DENIED_ERROR = 1045
ER_UNKNOWN_ERROR = 1105

_MULTI_STATEMENTS = int(Capability.MULTI_STATEMENTS)
_MULTI_STATEMENTS_ON, _MULTI_STATEMENTS_OFF = 0, 1  # COM_SET_OPTION's argument
ER_NET_PACKET_TOO_LARGE = 1153
CR_SSL_CONNECTION_ERROR = 2026


def accept(service: ProxyService) -> PacketChannel:
    """Protocol factory of the listener: the connection starts when the socket is made."""
    return PacketChannel(LOGIN_MAX_PAYLOAD, on_made=lambda ch: ProxyConnection(service, ch).start())


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


def _tune(transport: asyncio.BaseTransport, keepalive: bool = False) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family == socket.AF_UNIX:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if keepalive:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


def mysqld_version(version: str) -> int:
    """``"5.5.5-10.11.6-MariaDB"`` -> 50505, as MySQL Proxy computes it."""
    head = version.split("-", 1)[0]
    parts = [*head.split("."), "0", "0"][:3]
    try:
        major, minor, patch = (int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)
    except ValueError:
        return 0
    return major * 10000 + minor * 100 + patch


class LoginFailed(Exception):
    """The login ended (the server's ERR or a script's answer was sent): close quietly."""


class ConnectionGone(Exception):
    """Stop serving this client; the message is the log line (already sent to the client)."""


class ProxyConnection:
    """A client connection and its server connection; also the scripts' ``proxy.connection``."""

    def __init__(self, service: ProxyService, client_ch: PacketChannel) -> None:
        self.service = service
        self.settings = service.settings
        self.connection_id = service.next_connection_id()
        self.client_ch = client_ch
        self.server_ch: PacketChannel | None = None
        self.backend: Backend | None = None
        self.hooks: ConnectionHooks | None = None
        # ConnectionView
        self.client = PeerInfo()
        self.server: PeerInfo | None = None
        self._backend_ndx = 0
        self.connection_close = False
        # the server connection (also what the pool keeps); see chassis_proxy.pool
        self.link: ServerLink | None = None
        self.pool_user = ""  # the user the server accepted (the pool's key for this client)
        self.client_charset = 0
        self.login_profile: tuple[int, int] = (0, 0)  # what the pool matches for this client
        self._choosing = False  # connect_server is running
        self.queries = InjectionQueue()
        # login state
        self.client_secure = False  # TLS or unix socket: clients send clear passwords here
        self.server_secure = False
        self.server_handshake: HandshakeV10 | None = None
        self.client_capabilities = 0  # what the client asked for (after our masking)
        self.plugin = ""
        self.scramble = b""
        self.cseq = 0
        self.sseq = 0
        self.client_leg: relay.RelayLeg | None = None
        self.server_leg: relay.RelayLeg | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.counted = False
        self.in_commands = False  # scripted command phase (the login is over)
        self.session: scripted.ScriptedSession | None = None
        # Admin counters: the scripted loop adds here, the relay legs count themselves.
        self.bytes_in = 0
        self.bytes_out = 0
        self.commands = 0
        self._folded = (0, 0, 0)
        self._activity: tuple[object, object] = (None, None)
        self._active_at = 0.0
        self._paused_since: float | None = None

    # ConnectionView --------------------------------------------------------------

    @property
    def backends(self) -> list[BackendView]:
        return list(self.service.backends.items)

    @property
    def backend_ndx(self) -> int:
        """The backend of the attached server connection (1-based), 0 for none.

        In ``connect_server`` it is the backend chosen so far (where to connect).
        """
        return self._backend_ndx

    @backend_ndx.setter
    def backend_ndx(self, n: int) -> None:
        """``proxy.connection.backend_ndx = n`` (reference 7.5): 0 parks the server
        connection in its backend's pool; N takes an idle connection of backend N for
        this client's user, parking the current one. In ``connect_server`` N is where
        to connect, or whose idle connection (of any user with more than
        ``min_idle_connections``) to keep with ``PROXY_IGNORE_RESULT``.
        """
        n = int(n)
        if self._choosing:
            self._choose(n)
        elif n == 0:
            self.park_server()
        else:
            self._switch(n)

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

    # start and stop --------------------------------------------------------------

    def start(self) -> None:
        transport = self.client_ch.transport
        assert transport is not None
        _tune(transport)
        self.client.src = peer_address(transport, "peername")
        self.client.dst = peer_address(transport, "sockname")
        sock = transport.get_extra_info("socket")
        self.client_secure = sock is not None and sock.family == socket.AF_UNIX
        if not self.service.accepting or self.service.over_limit():
            why = "Too many connections" if self.service.accepting else "proxy is shutting down"
            self.client_ch.send(err_packet(ER_CON_COUNT_ERROR, why, "08004"), 0)
            self.client_ch.close()
            log.warning("conn %d: refused client %s: %s (--proxy-max-connections=%d)",
                        self.connection_id, self.name, why, self.settings.max_connections)
            self.service.stats.errors += 1
            return
        self.service.stats.connections += 1
        self.service.register(self)
        self.client_ch.on_lost = self._channel_lost
        self.task = asyncio.get_running_loop().create_task(self._run())

    def close(self, reason: str | None = None) -> None:
        """Close both sides (idempotent); written data is flushed first."""
        if self.closed:
            return
        self.closed = True
        if reason:
            log.debug("conn %d: closing: %s", self.connection_id, reason)
        if self.client_ch.transport is not None:
            self.client_ch.transport.close()
        self.fold_counters()
        if self.hooks is not None:
            try:
                self.hooks.disconnect_client()  # may park the server connection
            except Exception:
                log.exception("conn %d: disconnect_client failed", self.connection_id)
        self._close_server()
        self.service.unregister(self)
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def _close_server(self) -> None:
        """Close the server connection still attached (a script did not pool it)."""
        ch = self.server_ch
        if ch is not None and ch.transport is not None:
            if self.session is not None and not ch.closed and self._at_rest():
                ch.send(bytes((Command.QUIT,)), 0)  # a polite goodbye: no "aborted" count
            ch.transport.close()
        if self.counted and self.backend is not None:
            self.backend.connected_clients -= 1
            self.counted = False

    def _channel_lost(self, ch: PacketChannel, exc: BaseException | None) -> None:
        """A leg closed while a coroutine owns the connection: wake or stop it."""
        if self.closed:
            return
        if ch is self.client_ch:
            # Whatever the coroutine awaits (a backend, a result), the client is gone.
            log.info("conn %d: client %s went away%s", self.connection_id, self.name,
                     f" ({exc})" if exc else "")
            self.close()
        elif ch is self.server_ch and self.in_commands:
            # Scripted command phase: whatever the coroutine awaits, the server is gone.
            log.warning("conn %d: backend %s closed the connection%s; closing client %s "
                        "(it sees a lost connection)", self.connection_id, self._backend_name(),
                        f" ({exc})" if exc else "", self.name)
            self.close()
        # Otherwise (login) the coroutine's read wakes up with ChannelClosed.

    def relay_lost(self, leg: relay.RelayLeg, exc: BaseException | None) -> None:
        """A relayed leg closed: close the other one too, with one log line."""
        if self.closed:
            return
        quit_sent = self.client_leg is not None and \
            self.client_leg.last.endswith(relay.COM_QUIT_PACKET)
        cause = f" ({exc})" if exc else ""
        if quit_sent:
            log.debug("conn %d: client %s quit", self.connection_id, self.name)
        elif leg.is_client:
            log.info("conn %d: client %s went away without COM_QUIT%s; closing its server "
                     "connection", self.connection_id, self.name, cause)
        else:
            log.warning("conn %d: backend %s closed the connection%s; closing client %s "
                        "(it sees a lost connection)", self.connection_id,
                        self.backend.addr if self.backend else "?", cause, self.name)
        self.close()

    def fold_counters(self) -> None:
        """Add what happened since the last fold to the worker's and the backend's counters."""
        cl, sl = self.client_leg, self.server_leg
        if cl is not None and sl is not None:
            now = (cl.nbytes, sl.nbytes, cl.commands)
        else:
            now = (self.bytes_in, self.bytes_out, self.commands)
        before = self._folded
        if now == before:
            return
        self._folded = now
        for counters in (self.service.stats, self.backend.stats if self.backend else None):
            if counters is not None:
                counters.bytes_in += now[0] - before[0]
                counters.bytes_out += now[1] - before[1]
                counters.queries += now[2] - before[2]

    def check_timeouts(self, now: float) -> None:
        """Called by the service's sweeper: --proxy-read/write-timeout after the login."""
        cl, sl, session = self.client_leg, self.server_leg, self.session
        if self.closed:
            return
        if cl is not None and sl is not None:
            seen: tuple[object, object] = (cl.last, sl.last)
            paused = cl.paused or sl.paused
        elif session is not None:
            seen = (session.client_seen, session.server_seen)
            paused = self.client_ch.write_paused or bool(
                self.server_ch is not None and self.server_ch.write_paused)
        else:
            return  # the login has its own timeouts
        if self._active_at == 0.0:
            self._active_at = now
        if seen[0] is not self._activity[0] or seen[1] is not self._activity[1]:
            self._activity = seen
            self._active_at = now
        elif now - self._active_at > self.settings.read_timeout:
            log.warning("conn %d: no data for %.3g s (--proxy-read-timeout); closing client %s",
                        self.connection_id, now - self._active_at, self.name)
            self.close()
            return
        if paused:
            if self._paused_since is None:
                self._paused_since = now
            elif now - self._paused_since > self.settings.write_timeout:
                log.warning("conn %d: a peer has not read for %.3g s (--proxy-write-timeout); "
                            "closing client %s", self.connection_id, now - self._paused_since,
                            self.name)
                self.close()
        else:
            self._paused_since = None

    # the connection's life ---------------------------------------------------------

    async def _run(self) -> None:
        relaying = False
        try:
            if self.service.script_host is not None:
                try:
                    self.hooks = self.service.script_host.open(self)
                except ScriptLoadError as e:
                    self._fail_greeting(ER_UNKNOWN_ERROR, str(e))
                    log.error("conn %d: script failed: %s", self.connection_id, e)
                    return
            greeting = await self._connect()
            if greeting is None:
                if self.hooks is not None and not self.closed and self.client_ch.transport:
                    await scripted.serve_without_backend(self)
                return
            if self.link is not None and self.link.authenticated:
                await self._login_pooled()  # connect_server kept a pooled connection
            else:
                await self._login(greeting)
            if self.hooks is None:
                self._start_relay()
                relaying = True
            else:
                self.in_commands = True
                await scripted.serve(self)
        except LoginFailed:
            self.service.stats.errors += 1
        except ConnectionGone as e:
            log.warning("conn %d: %s", self.connection_id, e)
        except ChannelClosed as e:
            if not self.closed:
                who = "client" if self.client_ch.closed else "backend"
                log.info("conn %d: %s closed the connection during login (%s)",
                         self.connection_id, who, e)
        except ChannelTimeout:
            log.warning("conn %d: login of client %s timed out (--proxy-read-timeout=%g)",
                        self.connection_id, self.name, self.settings.read_timeout)
            self._send_client_err(ER_UNKNOWN_ERROR, "(proxy) login timed out", "08S01")
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("conn %d: internal error; closing client %s", self.connection_id,
                          self.name)
        finally:
            if not relaying:
                self.close()

    # choosing and connecting a backend ---------------------------------------------

    async def _connect(self) -> bytes | None:
        """Connect a backend and read its greeting; None when no backend is used.

        Tries backends in turn (marking failures DOWN); with a script, ``connect_server``
        is asked again before every attempt. Sends the client an ERR itself when none
        is left.
        """
        backends = self.service.backends
        backends.revive()
        tried: list[str] = []
        exclude: set[int] = set()
        while True:
            backend: Backend | None = None
            if self.hooks is not None:
                self._backend_ndx = 0
                self._choosing = True
                try:
                    outcome = self.hooks.connect_server()
                finally:
                    self._choosing = False
                if self.link is not None:
                    if outcome.decision == Decision.IGNORE_RESULT:
                        log.debug("conn %d: client %s gets the pooled connection %s",
                                  self.connection_id, self.name, self.link.name)
                        self.link.backend.stats.connections += 1
                        return self.link.greeting
                    self._unchoose()  # not kept: back to the pool, connect as usual
                if outcome.decision == Decision.SEND_RESULT:
                    self._send_mock_greeting(outcome)
                    return None
                chosen = backends.by_index(self._backend_ndx)
                if chosen is not None and chosen.index not in exclude and \
                        chosen.state not in (BackendState.DOWN, BackendState.OFFLINE):
                    backend = chosen
            if backend is None:
                backend = backends.pick(exclude)
            if backend is None:
                listing = "; ".join(tried) if tried else backends.describe_down()
                message = f"(proxy) all backends are down: {listing}"
                log.warning("conn %d: client %s: %s", self.connection_id, self.name, message)
                self.service.stats.errors += 1
                self._fail_greeting(ER_UNKNOWN_ERROR, message)
                return None
            exclude.add(backend.index)
            try:
                greeting = await self._open(backend)
            except (OSError, TimeoutError, ChannelClosed, ChannelTimeout) as e:
                reason = _failure(e, self.settings.connect_timeout)
                tried.append(f"{backend.addr} ({reason})")
                backend.mark_down(reason)
                if self.server_ch is not None:
                    self.server_ch.abort()
                    self.server_ch = None
                continue
            backend.mark_up()
            self.backend = backend
            self._backend_ndx = backend.index
            backend.connected_clients += 1
            self.counted = True
            return greeting

    async def _open(self, backend: Backend) -> bytes:
        loop = asyncio.get_running_loop()
        timeout = self.settings.connect_timeout
        deadline = loop.time() + timeout
        ch = PacketChannel(LOGIN_MAX_PAYLOAD)
        self.server_ch = ch
        addr = backend.addr
        async with asyncio.timeout(timeout):
            if addr.path is not None:
                await loop.create_unix_connection(lambda: ch, addr.path)
            else:
                await loop.create_connection(lambda: ch, addr.host, addr.port)
        assert ch.transport is not None
        _tune(ch.transport, keepalive=True)
        ch.on_lost = self._channel_lost
        self.server_secure = addr.path is not None
        packet = await ch.read_packet(max(0.0, deadline - loop.time()))
        self.sseq = (packet.seq + 1) & 0xFF
        return packet.payload

    # the login -------------------------------------------------------------------

    async def _login(self, greeting: bytes) -> None:
        client_ch, server_ch = self.client_ch, self.server_ch
        assert server_ch is not None and self.backend is not None
        if greeting[:1] == b"\xff":
            self.client_ch.send(greeting, 0)
            message = _err_text(greeting)
            raise ConnectionGone(f"backend {self.backend.addr} refused the connection: {message}")
        try:
            hs = HandshakeV10.parse(greeting)
        except ProtocolError as e:
            self._fail_greeting(ER_HANDSHAKE_ERROR, f"(proxy) backend {self.backend.addr} sent "
                                f"a bad handshake: {e}", "08S01")
            raise ConnectionGone(f"backend {self.backend.addr} sent a bad handshake: {e}") from None
        self.server_handshake = hs
        self.scramble = hs.auth_plugin_data
        self.plugin = hs.auth_plugin_name
        scramble_buffer = hs.auth_plugin_data + (b"\x00" if hs.capabilities & Capability.PLUGIN_AUTH else b"")
        self.server = PeerInfo(
            src=peer_address(server_ch.transport, "sockname") if server_ch.transport else None,
            dst=self.backend.address,
            mysqld_version=mysqld_version(hs.server_version),
            thread_id=hs.connection_id,
            scramble_buffer=scramble_buffer,
            auth_plugin_name=hs.auth_plugin_name,
        )
        self.link = ServerLink(server_ch, self.backend, self.server, hs, greeting,
                               secure=self.server_secure)
        self.client.mysqld_version = self.server.mysqld_version
        self.client.thread_id = hs.connection_id
        self.client.scramble_buffer = scramble_buffer
        self.client.auth_plugin_name = hs.auth_plugin_name
        if self.hooks is not None:
            outcome = self.hooks.read_handshake()
            if outcome.decision == Decision.SEND_QUERY:  # MySQL Proxy's deprecated alias
                log.warning("conn %d: read_handshake returned proxy.PROXY_SEND_QUERY, a deprecated "
                            "alias of PROXY_SEND_RESULT", self.connection_id)
            if outcome.decision in (Decision.SEND_RESULT, Decision.SEND_QUERY):
                self._send_response(outcome, 0)
                raise LoginFailed
        backend_tls = self.settings.backend_tls
        if backend_tls is not None and not hs.capabilities & Capability.SSL:
            message = f"(proxy) backend {self.backend.addr} does not offer TLS, but --proxy-backend-ssl is set"
            self._fail_greeting(CR_SSL_CONNECTION_ERROR, message, "HY000")
            raise ConnectionGone(message)

        self.cseq = client_ch.send(self._offered(hs).encode(), 0)

        payload, login = await self.read_login()

        # What goes to the server: the client's packet with our leg's TLS bit.
        server_caps = int(login.capabilities) & ~int(MASKED_CAPABILITIES | Capability.SSL)
        if backend_tls is not None:
            server_caps |= int(Capability.SSL)
        to_server = _with_classic_capabilities(payload, server_caps)
        if self.hooks is not None:
            self.queries.reset()
            outcome = self.hooks.read_auth()
            if outcome.decision == Decision.SEND_RESULT:
                # The script answers the login itself; nothing goes to the server.
                self._send_response(outcome, self.cseq)
                if outcome.response and outcome.response[0][:1] == b"\x00":
                    self.drop_server("the script answered the login itself")
                    return
                raise LoginFailed
            if outcome.decision == Decision.SEND_QUERY and len(self.queries):
                to_server = self.queries.pop().packet
            self.queries.reset()
        if backend_tls is not None:
            request = SSLRequest(login.capabilities | Capability.SSL, login.max_packet, login.charset)
            self.sseq = server_ch.send(request.encode(), self.sseq)
            assert server_ch.transport is not None
            try:
                server_ch.transport = await tls.upgrade(
                    server_ch.transport, server_ch, backend_tls, server_side=False,
                    timeout=self.settings.connect_timeout,
                )
            except (OSError, TimeoutError) as e:
                message = f"TLS handshake with backend {self._backend_name()} failed: {_tls_error(e)}"
                self._send_client_err(CR_SSL_CONNECTION_ERROR, f"(proxy) {message}", "HY000")
                raise ConnectionGone(message) from None
            self.server_secure = True
        self._remember_login(to_server, login)
        self.sseq = server_ch.send(to_server, self.sseq)
        await self._auth_exchange()

    async def read_login(self) -> tuple[bytes, HandshakeResponse41]:
        """The client's login packet (after TLS when it asks for it), parsed."""
        client_ch = self.client_ch
        packet = await self._client_packet()
        payload = packet.payload
        self.cseq = (packet.seq + 1) & 0xFF
        if is_ssl_request(payload):
            if self.settings.client_tls is None:
                self._send_client_err(ER_HANDSHAKE_ERROR, "(proxy) TLS is not enabled on this proxy "
                                      "(start it with --proxy-ssl-cert and --proxy-ssl-key)", "08S01")
                raise ConnectionGone(f"client {self.name} asked for TLS, which is not configured")
            assert client_ch.transport is not None
            # Stop reading first: a ClientHello arriving between detach() and start_tls
            # taking over the transport would land in the packet reader and be lost.
            client_ch.transport.pause_reading()
            try:
                client_ch.transport = await tls.upgrade(
                    client_ch.transport, client_ch, self.settings.client_tls, server_side=True,
                    leftover=client_ch.detach(), timeout=min(self.settings.read_timeout, 60.0),
                )
            except (OSError, TimeoutError) as e:
                raise ConnectionGone(f"TLS handshake with client {self.name} failed: "
                                     f"{_tls_error(e)}") from None
            self.client_secure = True
            packet = await self._client_packet()
            payload = packet.payload
            self.cseq = (packet.seq + 1) & 0xFF
        try:
            login = HandshakeResponse41.parse(payload)
        except ProtocolError as e:
            self._send_client_err(ER_HANDSHAKE_ERROR, "Bad handshake", "08S01")
            raise ConnectionGone(f"bad handshake from client {self.name}: {e}") from None
        self.client.username = login.username.decode("utf-8", "replace")
        self.client.scrambled_password = login.auth_response
        self.client.default_db = (login.database or b"").decode("utf-8", "replace")
        if login.auth_plugin_name:
            self.plugin = login.auth_plugin_name
            self.client.auth_plugin_name = login.auth_plugin_name
        self.client_capabilities = int(login.capabilities)
        self.client_charset = login.charset
        self.login_profile = (int(login.capabilities) & PROFILE_CAPABILITIES, login.charset)
        return payload, login

    def drop_server(self, reason: str) -> None:
        """Close the server connection and go on without one (``proxy.connection.server`` nil)."""
        if self.server_ch is not None:
            log.debug("conn %d: closing the server connection: %s", self.connection_id, reason)
            self.server_ch.on_lost = None
            self.server_ch.close()
            self.server_ch = None
        self.server = None
        self.link = None
        if self.counted and self.backend is not None:
            self.backend.connected_clients -= 1
            self.counted = False

    async def _auth_exchange(self) -> None:
        """Relay the server's auth packets and the client's answers until OK or ERR."""
        client_ch, server_ch = self.client_ch, self.server_ch
        assert server_ch is not None
        timeout = self.settings.read_timeout
        while True:
            packet = await server_ch.read_packet(timeout)
            self.sseq = (packet.seq + 1) & 0xFF
            payload = packet.payload
            if not payload:
                raise ConnectionGone(f"backend {self._backend_name()} sent an empty auth packet")
            backend_name = self._backend_name()  # read_auth_result may pool the connection
            if payload[0] == 0x00:
                self._logged_in()  # before the hook, which may pool the connection
            if self.hooks is not None:
                outcome = self.hooks.read_auth_result(payload)
                if outcome.decision == Decision.SEND_RESULT and outcome.response:
                    self._send_response(outcome, self.cseq)
                    first = outcome.response[0][:1]
                    if first == b"\x00":
                        self._copy_login_to_server()
                        return
                    raise LoginFailed
            head = payload[0]
            if head == 0x00:
                self.cseq = client_ch.send(payload, self.cseq)
                self._copy_login_to_server()
                log.debug("conn %d: client %s logged in as %r via %s", self.connection_id,
                          self.name, self.client.username, backend_name)
                return
            if head == 0xFF:
                self.cseq = client_ch.send(payload, self.cseq)
                log.info("conn %d: login of %r from %s failed: %s", self.connection_id,
                         self.client.username, self.name, _err_text(payload))
                raise LoginFailed
            if head == 0xFE:
                switch = AuthSwitchRequest.parse(payload)
                if switch.plugin_name is not None:
                    self.plugin = switch.plugin_name
                    self.scramble = switch.scramble
                self.cseq = client_ch.send(payload, self.cseq)
                await self._client_to_server()
                continue
            if head == 0x01:
                self.cseq = client_ch.send(payload, self.cseq)
                if self.plugin == CACHING_SHA2 and payload == b"\x01\x03":
                    continue  # fast auth succeeded: the server's OK follows, the client waits
                if self.plugin == CACHING_SHA2 and payload == b"\x01\x04":
                    await self._sha2_full_auth()
                    continue
                await self._client_to_server()
                continue
            raise ConnectionGone(f"backend {self._backend_name()} sent an unexpected packet "
                                 f"(0x{head:02x}) during the login")

    async def _client_packet(self) -> Packet:
        """The client's next login packet; framing garbage ends the login with ERR 1043."""
        try:
            return await self.client_ch.read_packet(self.settings.read_timeout)
        except ProtocolError as e:
            self._send_client_err(ER_HANDSHAKE_ERROR, "Bad handshake", "08S01")
            raise ConnectionGone(f"bad handshake from client {self.name}: {e}") from None

    async def _client_to_server(self) -> bytes:
        assert self.server_ch is not None
        packet = await self._client_packet()
        self.cseq = (packet.seq + 1) & 0xFF
        self.sseq = self.server_ch.send(packet.payload, self.sseq)
        return packet.payload

    async def _sha2_full_auth(self) -> None:
        """caching_sha2_password full authentication across legs of different security."""
        assert self.server_ch is not None
        if self.client_secure == self.server_secure:
            await self._client_to_server()  # both speak the same way: plain relay
            return
        from chassis_proxy import sha2

        timeout = self.settings.read_timeout
        if self.client_secure:
            # Clear text from the client; the server wants it RSA-encrypted with its key.
            packet = await self._client_packet()
            self.cseq = (packet.seq + 1) & 0xFF
            password = packet.payload
            self.sseq = self.server_ch.send(b"\x02", self.sseq)  # request the public key
            key_packet = await self.server_ch.read_packet(timeout)
            self.sseq = (key_packet.seq + 1) & 0xFF
            if key_packet.payload[:1] != b"\x01":
                # An ERR (or anything else): the login is over.
                self.cseq = self.client_ch.send(key_packet.payload, self.cseq)
                raise LoginFailed
            try:
                encrypted = sha2.encrypt_password(password, self.scramble, key_packet.payload[1:])
            except sha2.Sha2Error as e:
                self._send_client_err(ER_UNKNOWN_ERROR, f"(proxy) {e}", "HY000")
                raise ConnectionGone(f"caching_sha2_password full authentication: {e}") from None
            self.sseq = self.server_ch.send(encrypted, self.sseq)
            return
        # Plain client, secure server: the client asks for a key; give it ours.
        packet = await self._client_packet()
        self.cseq = (packet.seq + 1) & 0xFF
        if packet.payload != b"\x02":
            # The client already had a public key (of the real server): cannot convert.
            self.sseq = self.server_ch.send(packet.payload, self.sseq)
            return
        try:
            key = sha2.proxy_key()
            self.cseq = self.client_ch.send(b"\x01" + key.public_pem, self.cseq)
            packet = await self._client_packet()
            self.cseq = (packet.seq + 1) & 0xFF
            password = key.decrypt_password(packet.payload, self.scramble)
        except sha2.Sha2Error as e:
            self._send_client_err(ER_UNKNOWN_ERROR, f"(proxy) {e}", "HY000")
            raise ConnectionGone(f"caching_sha2_password full authentication: {e}") from None
        self.sseq = self.server_ch.send(password, self.sseq)

    def _remember_login(self, sent: bytes, login: HandshakeResponse41) -> None:
        """What the server connection is logged in with (the pool matches on it)."""
        link = self.link
        if link is None:
            return
        try:
            login = HandshakeResponse41.parse(sent)  # a script may have replaced the packet
        except ProtocolError:
            pass
        link.username = login.username.decode("utf-8", "replace")
        link.login_response = login.auth_response
        link.capabilities = int(login.capabilities)
        link.charset = login.charset

    def _logged_in(self) -> None:
        """The server accepted the login: from now on the connection may be pooled."""
        self._copy_login_to_server()
        link = self.link
        if link is not None and link.channel is self.server_ch:
            link.authenticated = True
            link.secure = self.server_secure
            link.last_client = self.connection_id
            self.pool_user = link.username

    def _copy_login_to_server(self) -> None:
        if self.server is None:
            return
        self.server.username = self.client.username
        self.server.default_db = self.client.default_db
        self.server.scrambled_password = self.client.scrambled_password
        self.server.auth_plugin_name = self.plugin

    # the connection pool (chassis_proxy.pool) ---------------------------------------

    def _attach(self, link: ServerLink) -> None:
        """Make ``link`` this client's server connection."""
        self.fold_counters()  # what came before belongs to no backend
        self.link = link
        self.server_ch = link.channel
        self.server = link.peer
        self.backend = link.backend
        self._backend_ndx = link.backend.index
        self.server_secure = link.secure
        link.channel.on_lost = self._channel_lost
        link.backend.connected_clients += 1
        self.counted = True
        self._check_ready(link)
        if self.session is not None:
            link.channel.reader.max_payload = None
            self.session.server = link.channel

    def _detach(self) -> ServerLink | None:
        """Take the server connection away from this client; it stays open."""
        link = self.link
        if link is None:
            return None
        self.fold_counters()  # the bytes so far belong to this backend
        if self.counted and self.backend is not None:
            self.backend.connected_clients -= 1
            self.counted = False
        link.channel.on_lost = None
        self.link = None
        self.server_ch = None
        self.server = None
        self.backend = None
        self._backend_ndx = 0
        if self.session is not None:
            self.session.server = None
        return link

    def _at_rest(self) -> bool:
        """Whether the server connection is logged in and owes no response (only then
        may it change hands)."""
        link = self.link
        if link is None or not link.authenticated or link.busy or link.channel.closed:
            return False
        session = self.session
        return session is None or session.at_rest()

    def park_server(self) -> None:
        """``backend_ndx = 0``: the server connection goes to its backend's pool."""
        link = self.link
        if link is None:
            self._backend_ndx = 0
            return
        if not self._at_rest():
            why = ("its login is not finished" if not link.authenticated
                   else "a command on it is not finished")
            # At disconnect the connection is closed anyway: no need to shout.
            log.log(logging.DEBUG if self.closed else logging.WARNING,
                    "conn %d: backend_ndx = 0 ignored: the server connection %s cannot be "
                    "pooled, %s", self.connection_id, link.name, why)
            return
        self._detach()
        pool = link.backend.pool
        if pool.park(link):
            log.debug("conn %d: pooled the server connection %s (user %r; %d idle there)",
                      self.connection_id, link.name, link.username, pool.idle_count)

    def _choose(self, n: int) -> None:
        """``backend_ndx = n`` in connect_server: where to connect, or an idle connection
        to keep (any user's with more than min_idle_connections idle: the user is not
        known yet)."""
        self._unchoose()
        self._backend_ndx = n
        backend = self.service.backends.by_index(n)
        if backend is None or backend.state in (BackendState.DOWN, BackendState.OFFLINE):
            return
        link = backend.pool.take("", self.connection_id, None, any_user=True)
        if link is not None:
            self._attach(link)

    def _unchoose(self) -> None:
        """An idle connection taken in connect_server but not used goes back, untouched."""
        link = self.link
        if link is not None and link.authenticated and not link.busy:
            ndx = self._backend_ndx
            self._detach()
            link.backend.pool.park(link)
            self._backend_ndx = ndx

    def _switch(self, n: int) -> None:
        """``backend_ndx = N`` after the login: take an idle connection of backend N."""
        link = self.link
        if link is not None and link.backend.index == n:
            return
        if link is not None and not self._at_rest():
            why = ("the login is not finished" if not link.authenticated
                   else "a command is not finished")
            log.warning("conn %d: backend_ndx = %d ignored: %s", self.connection_id, n, why)
            return
        if not self.pool_user:
            log.warning("conn %d: backend_ndx = %d ignored: no server accepted this client's "
                        "login yet", self.connection_id, n)
            return
        backend = self.service.backends.by_index(n)
        if backend is None or backend.state in (BackendState.DOWN, BackendState.OFFLINE):
            log.debug("conn %d: backend_ndx = %d ignored: the backend is down or offline",
                      self.connection_id, n)
            return
        taken = backend.pool.take(self.pool_user, self.connection_id, self.login_profile,
                                  any_user=False)
        if taken is None:
            # A new connection cannot log in for this client: the proxy never learns its
            # password, and every server sends its own challenge.
            log.debug("conn %d: backend_ndx = %d: no idle connection of user %r on %s; %s",
                      self.connection_id, n, self.pool_user, backend.addr,
                      f"staying on {link.name}" if link is not None else "no server connection")
            return
        self.park_server()
        if taken.last_client != self.connection_id:
            taken.reset_pending = True  # another client's: reset before its first command
        taken.last_client = self.connection_id
        self._attach(taken)
        log.debug("conn %d: now on %s%s", self.connection_id, taken.name,
                  " (to be reset)" if taken.reset_pending else "")

    def _check_ready(self, link: ServerLink) -> None:
        """Whether ``link`` must be prepared before this client's next command on it."""
        link.unready = link.reset_pending or bool(
            (link.capabilities ^ self.client_capabilities) & _MULTI_STATEMENTS)

    async def prepare_server(self) -> None:
        """Make a pooled connection this client's before its next command.

        COM_RESET_CONNECTION when another client had it: that client's transaction,
        temporary tables, user variables, locks and prepared statements go. The default
        database stays (the server keeps it), and so does ``server.default_db``. Then
        COM_SET_OPTION when the connection's multi-statement setting is not what this
        client logged in with (the only login capability that can change later).
        """
        link, ch = self.link, self.server_ch
        assert link is not None and ch is not None
        link.busy = True
        try:
            if link.reset_pending:
                reply = await self._server_command(bytes((Command.RESET_CONNECTION,)))
                if reply[:1] != b"\x00":
                    raise PoolError(f"the server refused to reset the pooled connection "
                                    f"{link.name}: {_err_text(reply)}")
                link.reset_pending = False
                log.debug("conn %d: reset %s", self.connection_id, link.name)
            wanted = self.client_capabilities & _MULTI_STATEMENTS
            if link.capabilities & _MULTI_STATEMENTS != wanted:
                option = _MULTI_STATEMENTS_ON if wanted else _MULTI_STATEMENTS_OFF
                reply = await self._server_command(
                    bytes((Command.SET_OPTION,)) + option.to_bytes(2, "little"))
                if reply[:1] == b"\xff":
                    raise PoolError(f"the server refused to switch multi-statements on the "
                                    f"pooled connection {link.name}: {_err_text(reply)}")
                link.capabilities ^= _MULTI_STATEMENTS
        except (ChannelClosed, ChannelTimeout, ProtocolError) as e:
            raise PoolError(f"preparing the pooled connection {link.name} failed: "
                            f"{e or type(e).__name__}") from None
        finally:
            link.busy = False
        link.unready = False

    async def _server_command(self, payload: bytes) -> bytes:
        """One command of the proxy's own whose answer is one packet (OK, EOF or ERR)."""
        ch = self.server_ch
        assert ch is not None
        ch.send(payload, 0)
        return (await ch.read_packet(self.settings.read_timeout)).payload

    async def _login_pooled(self) -> None:
        """A new client logs in on the pooled connection connect_server kept.

        The server connection is logged in already. By default the client's login is
        sent as COM_CHANGE_USER: the server checks the password (its new challenge
        reaches the client as an auth switch) and resets the session. The client is
        shown a fresh random challenge, never the one the connection's first client
        answered. With --proxy-pool-no-change-user the client gets that original
        challenge instead and must send what the first login sent (same user, same
        password); the session is then reset with COM_RESET_CONNECTION.
        """
        link = self.link
        hooks = self.hooks
        assert link is not None and hooks is not None
        no_change_user = self.settings.pool_no_change_user
        hs = link.handshake
        if not no_change_user:
            hs = replace(hs, auth_plugin_data=_fresh_scramble(len(hs.auth_plugin_data)))
        self.server_handshake = hs
        self.scramble = hs.auth_plugin_data
        self.plugin = hs.auth_plugin_name
        scramble_buffer = hs.auth_plugin_data + (
            b"\x00" if hs.capabilities & Capability.PLUGIN_AUTH else b"")
        link.peer.scramble_buffer = scramble_buffer
        self.client.mysqld_version = link.peer.mysqld_version
        self.client.thread_id = hs.connection_id
        self.client.scramble_buffer = scramble_buffer
        self.client.auth_plugin_name = hs.auth_plugin_name
        touched = False
        try:
            outcome = hooks.read_handshake()
            if outcome.decision in (Decision.SEND_RESULT, Decision.SEND_QUERY):
                self._send_response(outcome, 0)
                raise LoginFailed
            self.cseq = self.client_ch.send(self._offered(hs).encode(), 0)
            _payload, login = await self.read_login()
            self.queries.reset()
            outcome = hooks.read_auth()
            if outcome.decision == Decision.SEND_RESULT:
                self._send_response(outcome, self.cseq)
                if outcome.response and outcome.response[0][:1] == b"\x00":
                    self._unchoose()  # the script logged the client in: no server needed
                    self._backend_ndx = 0
                    return
                raise LoginFailed
            if outcome.decision == Decision.SEND_QUERY and len(self.queries):
                try:
                    login = HandshakeResponse41.parse(self.queries.pop().packet)
                except ProtocolError as e:
                    log.critical("conn %d: read_auth queued a login packet that does not parse "
                                 "(%s); the client's own is used", self.connection_id, e)
            self.queries.reset()
            if no_change_user:
                self._check_first_login(login)
                touched = True
                await self._reset_for_login(login)
            else:
                touched = True
                await self._change_user(login)
        except BaseException:
            if not touched:
                self._unchoose()  # nothing was sent on it: back to the pool as it was
            raise
        link.last_client = self.connection_id

    def _offered(self, hs: HandshakeV10) -> HandshakeV10:
        """The server's handshake as clients get it: capabilities we cannot relay masked."""
        caps = int(hs.capabilities) & ~int(MASKED_CAPABILITIES | Capability.SSL)
        if self.hooks is not None:
            caps &= ~int(SCRIPTED_MASKED_CAPABILITIES)
        if self.settings.client_tls is not None:
            caps |= int(Capability.SSL)
        return hs.with_capabilities(caps)

    async def _change_user(self, login: HandshakeResponse41) -> None:
        link, ch = self.link, self.server_ch
        assert link is not None and ch is not None
        command = ComChangeUser(
            username=login.username,
            auth_response=login.auth_response,
            database=login.database or b"",
            charset=login.charset,
            auth_plugin_name=login.auth_plugin_name or self.plugin,
            connect_attrs=login.connect_attrs,
        )
        try:
            packet = command.encode(link.capabilities)
        except ProtocolError as e:
            self._send_client_err(ER_HANDSHAKE_ERROR, f"(proxy-pool) {e}", "08S01")
            raise ConnectionGone(f"cannot log client {self.name} in on a pooled connection: "
                                 f"{e}") from None
        link.authenticated = False  # until the server accepts the new login
        link.username = login.username.decode("utf-8", "replace")
        link.charset = login.charset
        link.reset_pending = False  # COM_CHANGE_USER resets the session
        self.sseq = ch.send(packet, 0)
        log.debug("conn %d: client %s logs in as %r on %s (COM_CHANGE_USER)",
                  self.connection_id, self.name, link.username, link.name)
        await self._auth_exchange()
        if self.link is link:
            self._check_ready(link)  # its multi-statement setting may not be the client's

    def _check_first_login(self, login: HandshakeResponse41) -> None:
        """--proxy-pool-no-change-user: the same user and password as the first login."""
        link = self.link
        assert link is not None
        user = login.username.decode("utf-8", "replace")
        same_user = hmac.compare_digest(user.encode(), link.username.encode())
        same_answer = hmac.compare_digest(login.auth_response, link.login_response)
        if same_user and same_answer:
            return
        log.info("conn %d: login of %r from %s on the pooled connection %s failed: not the "
                 "user and password of its first login (--proxy-pool-no-change-user)",
                 self.connection_id, user, self.name, link.name)
        self.service.stats.errors += 1
        self._send_client_err(ER_ACCESS_DENIED_ERROR, "(proxy-pool) login failed", "28000")
        raise LoginFailed

    async def _reset_for_login(self, login: HandshakeResponse41) -> None:
        """--proxy-pool-no-change-user: reset the session, select the client's database,
        then answer the login as the server would have."""
        link, ch = self.link, self.server_ch
        assert link is not None and ch is not None and self.hooks is not None
        link.reset_pending = True
        try:
            await self.prepare_server()
        except PoolError as e:
            self._send_client_err(ER_UNKNOWN_ERROR, f"(proxy-pool) {e}", "HY000")
            raise ConnectionGone(str(e)) from None
        db = self.client.default_db
        if db and db != link.peer.default_db:
            link.busy = True
            try:
                ch.send(bytes((Command.INIT_DB,)) + db.encode("utf-8", "surrogateescape"), 0)
                reply = (await ch.read_packet(self.settings.read_timeout)).payload
            finally:
                link.busy = False
            if reply[:1] != b"\x00":
                self.cseq = self.client_ch.send(reply, self.cseq)  # e.g. unknown database
                raise LoginFailed
            link.peer.default_db = db
        ok = ok_packet(status=self.server_handshake.status if self.server_handshake else 2,
                       capabilities=self.client_capabilities)
        self._logged_in()
        outcome = self.hooks.read_auth_result(ok)
        if outcome.decision == Decision.SEND_RESULT and outcome.response:
            self._send_response(outcome, self.cseq)
            if outcome.response[0][:1] != b"\x00":
                raise LoginFailed
            return
        self.cseq = self.client_ch.send(ok, self.cseq)

    def _start_relay(self) -> None:
        assert self.server_ch is not None
        ct, st = self.client_ch.transport, self.server_ch.transport
        assert ct is not None and st is not None
        if self.client_ch.closed or self.server_ch.closed:
            raise ConnectionGone("a peer closed the connection right after the login")
        self._active_at = asyncio.get_running_loop().time()
        self.client_leg, self.server_leg = relay.start(
            self, ct, st, self.client_ch.detach(), self.server_ch.detach()
        )

    # sending the client things ------------------------------------------------------

    def _backend_name(self) -> str:
        return str(self.backend.addr) if self.backend is not None else "?"

    def _fail_greeting(self, code: int, message: str, state: str = "HY000") -> None:
        """An ERR in place of the server greeting (sequence id 0)."""
        self.client_ch.send(ERR(code, message, state).encode(), 0)

    def _send_client_err(self, code: int, message: str, state: str) -> None:
        self.cseq = self.client_ch.send(err_packet(code, message, state), self.cseq)

    def _send_response(self, outcome: Outcome, seq: int) -> int:
        for payload in outcome.response or ():
            seq = self.client_ch.send(payload, seq)
        self.cseq = seq
        return seq

    def _send_mock_greeting(self, outcome: Outcome) -> None:
        """connect_server answered itself: remember a handshake it sent as our challenge."""
        packets = outcome.response or []
        if packets and packets[0][:1] == b"\x0a":
            try:
                hs = HandshakeV10.parse(packets[0])
            except ProtocolError:
                hs = None
            if hs is not None:
                self.server_handshake = hs
                self.scramble = hs.auth_plugin_data
                self.client.scramble_buffer = hs.auth_plugin_data + b"\x00"
                self.client.mysqld_version = mysqld_version(hs.server_version)
                self.client.thread_id = hs.connection_id
        self._send_response(outcome, 0)


def _fresh_scramble(length: int) -> bytes:
    """A random challenge for a client logging in on a pooled connection (printable, no NUL)."""
    return bytes(secrets.choice(_SCRAMBLE_CHARS) for _ in range(max(length, 20)))


_SCRAMBLE_CHARS = bytes(range(0x21, 0x7F))


def _failure(e: BaseException, connect_timeout: float) -> str:
    if isinstance(e, ChannelTimeout | TimeoutError):
        return f"timed out after {connect_timeout:g} s (--proxy-connect-timeout)"
    if isinstance(e, ChannelClosed):
        return "closed the connection before its handshake"
    if isinstance(e, OSError):
        return (e.strerror or str(e)).lower()
    return str(e)


def _tls_error(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    reason = getattr(e, "reason", None)
    text = getattr(e, "verify_message", None) or str(e) or type(e).__name__
    return f"{reason}: {text}" if reason and reason not in text else text


def _err_text(payload: bytes) -> str:
    try:
        err = ERR.parse(payload)
    except ProtocolError:
        return "malformed ERR packet"
    return f"{err.error_code} {err.message}"


def _with_classic_capabilities(payload: bytes, capabilities: int) -> bytes:
    """The client's login packet with its 4 classic capability bytes replaced.

    Patching in place keeps every other byte exactly as the client sent it.
    """
    return (capabilities & 0xFFFFFFFF).to_bytes(4, "little") + payload[4:]
