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
import logging
import socket
from typing import TYPE_CHECKING

from chassis_mysql.constants import Capability
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import Packet
from chassis_mysql.handshake import (
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    SSLRequest,
    is_ssl_request,
)
from chassis_mysql.packets import ERR, err_packet

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
ER_UNKNOWN_ERROR = 1105
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
        self.backend_ndx = 0
        self.connection_close = False
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
        for transport in self._transports():
            transport.close()
        self.fold_counters()
        if self.counted and self.backend is not None:
            self.backend.connected_clients -= 1
            self.counted = False
        if self.hooks is not None:
            try:
                self.hooks.disconnect_client()
            except Exception:
                log.exception("conn %d: disconnect_client failed", self.connection_id)
        self.service.unregister(self)
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()

    def _transports(self) -> list[asyncio.Transport]:
        out = []
        for ch in (self.client_ch, self.server_ch):
            if ch is not None and ch.transport is not None:
                out.append(ch.transport)
        return out

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
                self.backend_ndx = 0
                outcome = self.hooks.connect_server()
                if outcome.decision == Decision.SEND_RESULT:
                    self._send_mock_greeting(outcome)
                    return None
                chosen = backends.by_index(self.backend_ndx)
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
            self.backend_ndx = backend.index
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

        caps = int(hs.capabilities) & ~int(MASKED_CAPABILITIES | Capability.SSL)
        if self.hooks is not None:
            caps &= ~int(SCRIPTED_MASKED_CAPABILITIES)
        if self.settings.client_tls is not None:
            caps |= int(Capability.SSL)
        self.cseq = client_ch.send(hs.with_capabilities(caps).encode(), 0)

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
        return payload, login

    def drop_server(self, reason: str) -> None:
        """Close the server connection and go on without one (``proxy.connection.server`` nil)."""
        if self.server_ch is not None:
            log.debug("conn %d: closing the server connection: %s", self.connection_id, reason)
            self.server_ch.on_lost = None
            self.server_ch.close()
            self.server_ch = None
        self.server = None
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
                          self.name, self.client.username, self._backend_name())
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

    def _copy_login_to_server(self) -> None:
        if self.server is None:
            return
        self.server.username = self.client.username
        self.server.default_db = self.client.default_db
        self.server.scrambled_password = self.client.scrambled_password
        self.server.auth_plugin_name = self.plugin

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
