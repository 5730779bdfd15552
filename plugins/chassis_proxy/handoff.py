"""An upgrade's hand-over of resting client connections, with their server connections.

On SIGUSR2 a new chassis starts; once it is ready each old worker's proxy hands it
the relayed connections (no Lua script, plain TCP on both legs) as they come to rest,
both sockets passed over a unix socket (the chassis' ``chassis_handover_out``), and
the new worker rebuilds them in the relay state (``chassis_handover_in``): the client
keeps its server connection, so its session (``CONNECTION_ID()``, variables, prepared
statements, temporary tables) is untouched and it notices nothing.

When is a relayed connection at rest? The relay does not parse responses (its hot
path stays flat), so while handing over each connection's legs are swapped for
*watched* ones: each client command starts the codec's :class:`ResponseTracker`, and
when a response is complete its status flags say whether a transaction is open
(``SERVER_STATUS_IN_TRANS``). At that moment (inside the server leg's callback, before
the client can send its next command) reading the client is paused: what it sends
next stays in the kernel's socket buffer and moves with the socket. A connection idle
since before the upgrade has no tracked response: once quiet it gets one ``COM_PING``
on its server connection (the client paused), whose OK carries the status flags.

A connection in a transaction stays until its transaction ends (then it moves), up to
``--shutdown-timeout``, when it is closed (the server rolls the transaction back).
Connections with a script stay and drain like on SIGTERM: a script's per-connection
state lives in the old worker's Lua state and cannot move (a fresh instance in the new
worker would silently lose what the script tracked, such as the backend a read/write
split pinned). TLS cannot move either (its session keys live in the old process), nor
can a connection still logging in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from chassis_mysql.constants import MAX_PAYLOAD, Command, ServerStatus
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import PacketReader, frame
from chassis_mysql.packets import is_ok, status_of
from chassis_mysql.response import ResponseTracker

from chassis_proxy import relay
from chassis_proxy.channel import PacketChannel
from chassis_proxy.connection import ConnectionRegistry, ProxyConnection
from chassis_proxy.hooks import AddressInfo, PeerInfo
from chassis_proxy.login import LOGIN_MAX_PAYLOAD

log = logging.getLogger("chassis.proxy")

Send = Callable[[dict[str, Any], Sequence[int]], Awaitable[None]]

_IN_TRANS = int(ServerStatus.IN_TRANS)
#: How often resting connections are looked for while handing over (seconds).
POLL = 0.05
#: Most seconds to wait for a COM_PING's answer or for write buffers to empty.
PING_TIMEOUT = 5.0
FORMAT = 1


def movable(conn: ProxyConnection) -> bool:
    """Relayed (no script), logged in, plain TCP on both legs."""
    if conn.client_leg is None or conn.server_leg is None or conn.hooks is not None:
        return False
    st = conn.state
    for ch in (st.client_ch, st.server_ch):
        transport = ch.transport if ch is not None else None
        if transport is None or transport.is_closing():
            return False
        if transport.get_extra_info("ssl_object") is not None:
            return False
        sock = transport.get_extra_info("socket")
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
    return True


def effective_capabilities(conn: ProxyConnection) -> int:
    st = conn.state
    server = int(st.server_handshake.capabilities) if st.server_handshake is not None else ~0
    return st.client_capabilities & server


class Watch:
    """What the watched legs of one connection learn about its responses."""

    __slots__ = ("capabilities", "legs", "moving", "on_rest", "pending", "status", "tracker")

    def __init__(self, capabilities: int, on_rest: Callable[[], None]) -> None:
        self.capabilities = capabilities
        self.tracker: ResponseTracker | None = None
        self.pending = b""
        #: Status flags of the last complete response (None: not seen since watched).
        self.status: int | None = None
        self.on_rest = on_rest
        self.moving = False
        #: The watched client and server legs (the transports' protocols meanwhile).
        self.legs: tuple[Watched, Watched] | None = None

    def command(self, first_byte: int) -> None:
        self.tracker = ResponseTracker(first_byte, self.capabilities)
        self.pending = b""
        if self.tracker.done:  # a command without a response
            self.tracker = None
            if first_byte != Command.QUIT:  # (a client that quits stays to close here)
                self.on_rest()

    def lost_track(self) -> None:
        """A response the tracker cannot follow (LOCAL INFILE, pipelined commands, a
        16 MiB packet): wait until the connection is quiet, then ask the server."""
        self.tracker = None
        self.pending = b""
        self.status = None

    def server_data(self, data: bytes) -> None:
        tracker = self.tracker
        if tracker is None:
            return
        buf = self.pending + data if self.pending else data
        try:
            pos = tracker.scan(buf)
        except ProtocolError:
            self.lost_track()
            return
        if tracker.idle:
            if not tracker.done or pos != len(buf):
                self.lost_track()
                return
            self.tracker = None
            self.pending = b""
            if tracker.result_sets:  # (an ERR leaves the status as it was)
                self.status = tracker.status
            self.on_rest()
        elif len(buf) - pos >= MAX_PAYLOAD:
            self.lost_track()
        else:
            self.pending = bytes(buf[pos:])


class Watched(asyncio.Protocol):
    """One leg while handing over: the relay's own leg (plain, or tracking digests) does
    the work, and the commands and their responses are followed on the side."""

    __slots__ = ("inner", "watch")

    def __init__(self, inner: relay.LegBase, watch: Watch) -> None:
        self.inner = inner
        self.watch = watch

    def data_received(self, data: bytes) -> None:
        if self.inner.is_client:
            if len(data) > 4 and data[3] == 0:
                self.watch.command(data[4])
            self.inner.data_received(data)
        else:
            self.inner.data_received(data)
            self.watch.server_data(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.inner.connection_lost(exc)


class Handoff:
    """One old worker's hand-over: every movable connection goes once it rests."""

    def __init__(self, service: ConnectionRegistry, connections: set[ProxyConnection],
                 send: Send) -> None:
        self.service = service
        self.connections = connections
        self.send = send
        self.watched: dict[ProxyConnection, Watch] = {}
        self.moved = 0
        self.broken = False  # the new chassis is gone: everything drains here
        self.task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> tuple[int, int]:
        """Watch every movable connection; (how many may move, how many stay)."""
        staying = 0
        for conn in list(self.connections):
            if movable(conn):
                self._watch(conn)
            else:
                staying += 1
        self.task = asyncio.get_running_loop().create_task(self._poll(), name="proxy-handoff")
        return len(self.watched), staying

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch(self, conn: ProxyConnection) -> None:
        assert conn.client_leg is not None and conn.server_leg is not None
        watch = Watch(effective_capabilities(conn), lambda: self._at_rest(conn))
        watch.legs = (Watched(conn.client_leg, watch), Watched(conn.server_leg, watch))
        for leg in watch.legs:
            leg.inner.transport.set_protocol(leg)
        conn.moving = True
        self.watched[conn] = watch

    def _at_rest(self, conn: ProxyConnection) -> None:
        """A response just ended (inside the server leg's callback): move now unless a
        transaction is open or its status is unknown."""
        watch = self.watched.get(conn)
        if watch is None or watch.moving or self.broken or watch.status is None \
                or watch.status & _IN_TRANS:
            return
        transport = conn.state.client_ch.transport
        assert transport is not None
        transport.pause_reading()  # the next command stays in the socket, and moves
        watch.moving = True
        self._keep(asyncio.get_running_loop().create_task(self._move(conn, watch)))

    async def _poll(self) -> None:
        """Connections idle since before the upgrade (or whose last response could not be
        followed): once quiet, ask the server for their status. Connections that finish
        logging in meanwhile are watched too."""
        loop = asyncio.get_running_loop()
        while self.connections and not self.broken:
            for conn in list(self.connections):
                watch = self.watched.get(conn)
                if watch is None:
                    if not conn.moving and movable(conn):
                        self._watch(conn)
                    continue
                if conn.closed:
                    self.watched.pop(conn, None)
                elif not watch.moving and watch.tracker is None and conn.at_rest():
                    if watch.status is None:
                        watch.moving = True
                        self._keep(loop.create_task(self._ping_then_move(conn, watch)))
                    elif not watch.status & _IN_TRANS:
                        self._at_rest(conn)
            await asyncio.sleep(POLL)
        log.info("upgrade: %d connection(s) handed over to the new chassis%s", self.moved,
                 "; it is gone, the others finished here" if self.broken else "")

    async def _ping_then_move(self, conn: ProxyConnection, watch: Watch) -> None:
        st = conn.state
        client, server = st.client_ch.transport, st.server_ch.transport if st.server_ch else None
        assert client is not None and server is not None
        client.pause_reading()
        if not conn.at_rest() or conn.closed:  # something moved meanwhile: look later
            client.resume_reading()
            watch.moving = False
            return
        assert watch.legs is not None
        leg = watch.legs[1]
        reply = _PingReply()
        server.set_protocol(reply)
        server.write(frame(bytes((Command.PING,)), 0))
        try:
            async with asyncio.timeout(PING_TIMEOUT):
                payload = await reply.future
            status = int(status_of(payload, watch.capabilities))
        except (TimeoutError, ProtocolError, ConnectionError, ValueError) as e:
            log.warning("conn %d: client %s: no clean answer to the proxy's COM_PING (%s); "
                        "closing it", conn.connection_id, conn.name, e or "timed out")
            self.watched.pop(conn, None)
            conn.close()
            return
        finally:
            if not conn.closed:
                server.set_protocol(leg)
        watch.status = status
        if status & _IN_TRANS:
            log.debug("conn %d: in a transaction: it moves once the transaction ends",
                      conn.connection_id)
            watch.moving = False
            client.resume_reading()
            return
        await self._move(conn, watch)

    async def _move(self, conn: ProxyConnection, watch: Watch) -> None:
        st = conn.state
        client = st.client_ch.transport
        server = st.server_ch.transport if st.server_ch is not None else None
        if conn.closed or client is None or server is None:
            self.watched.pop(conn, None)
            return
        server.pause_reading()  # an answer that comes now waits in the socket, and moves
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PING_TIMEOUT
        while (client.get_write_buffer_size() or server.get_write_buffer_size()) \
                and loop.time() < deadline and not conn.closed:
            await asyncio.sleep(0.005)
        if conn.closed:
            self.watched.pop(conn, None)
            return
        # Parked: flow control (a leg's resume_writing) must not resume reading now.
        legs = watch.legs
        assert legs is not None
        parked = _Parked()
        for transport in (client, server):
            transport.set_protocol(parked)
            transport.pause_reading()
        fds = [os.dup(client.get_extra_info("socket").fileno()),
               os.dup(server.get_extra_info("socket").fileno())]
        try:
            await self.send(describe(conn, watch), fds)
        except (OSError, ValueError) as e:
            log.warning("upgrade: cannot hand over conn %d (%s); it drains here, and so "
                        "do the others", conn.connection_id, e)
            self.broken = True
            for other in self.watched:  # the stop closes them as on SIGTERM now
                other.moving = False
            watch.moving = False
            for transport, leg in zip((client, server), legs, strict=True):
                transport.set_protocol(leg)
            if parked.lost:
                conn.close()
                return
            client.resume_reading()
            server.resume_reading()
            return
        finally:
            for fd in fds:
                os.close(fd)
        self.watched.pop(conn, None)
        self.moved += 1
        log.debug("conn %d: client %s moved to the new chassis with its server connection",
                  conn.connection_id, conn.name)
        _let_go(conn)


class _Parked(asyncio.Protocol):
    """Both legs while their sockets are being sent: reading is paused, nothing moves."""

    def __init__(self) -> None:
        self.lost = False

    def data_received(self, data: bytes) -> None:  # reading is paused: cannot happen
        raise RuntimeError("data on a connection being handed over")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True


class _PingReply(asyncio.Protocol):
    """The server leg's protocol while the proxy's own COM_PING is answered."""

    def __init__(self) -> None:
        self.reader = PacketReader(1 << 16)
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.future.done():
            return
        self.reader.feed(data)
        packet = self.reader.next_packet()
        if packet is None:
            return
        if packet.seq != 1 or not is_ok(packet.payload) or self.reader.drain():
            self.future.set_exception(ProtocolError("unexpected bytes where an OK was due"))
        else:
            self.future.set_result(packet.payload)

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self.future.done():
            self.future.set_exception(ConnectionError("the server closed the connection"))


def _let_go(conn: ProxyConnection) -> None:
    """The connection lives on in the new chassis: forget it here without a word to
    either peer (our descriptors close; the sockets stay open over there)."""
    st = conn.state
    st.closed = True
    conn.fold_counters()
    conn.handover.uncount()
    for ch in (st.client_ch, st.server_ch):
        if ch is not None and ch.transport is not None:
            ch.transport.abort()
    conn.service.unregister(conn)


# -- what moves, and its rebuilding in the new chassis ------------------------------------


def _address(info: AddressInfo | None) -> list[Any] | None:
    return None if info is None else [info.name, info.address, info.port, info.family]


def _info(value: Any) -> AddressInfo | None:
    if not value:
        return None
    name, address, port, family = value
    return AddressInfo(name=str(name), address=str(address),
                       port=None if port is None else int(port), family=int(family))


def describe(conn: ProxyConnection, watch: Watch) -> dict[str, Any]:
    """The JSON that travels with the two sockets. Between two commands a connection has
    no sequence state to carry (each command starts again at 0); what the server keeps
    (the session) stays on the server connection, which moves."""
    st = conn.state
    server = st.server
    return {
        "format": FORMAT,
        "conn": conn.connection_id,
        "client": {"src": _address(st.client.src), "dst": _address(st.client.dst),
                   "user": st.client.username, "db": st.client.default_db,
                   "thread_id": st.client.thread_id},
        "server": None if server is None else {
            "src": _address(server.src), "dst": _address(server.dst),
            "version": server.mysqld_version, "thread_id": server.thread_id},
        "backend": str(st.backend.addr) if st.backend is not None else None,
        "capabilities": watch.capabilities,
        "charset": st.client_charset,
        "plugin": st.plugin,
        "pool_user": st.pool_user,
        "status": watch.status,
    }


async def adopt(service: ConnectionRegistry, state: dict[str, Any], fds: list[int]) -> None:
    """Rebuild a handed-over connection in this worker, relaying, and serve it."""
    loop = asyncio.get_running_loop()
    if state.get("format") != FORMAT or len(fds) != 2:
        for fd in fds:
            os.close(fd)
        log.warning("upgrade: a handed-over connection in an unknown format was closed")
        return
    client_sock, server_sock = (socket.socket(fileno=fd) for fd in fds)
    client_ch, server_ch = PacketChannel(LOGIN_MAX_PAYLOAD), PacketChannel(LOGIN_MAX_PAYLOAD)
    try:
        await loop.connect_accepted_socket(lambda: server_ch, server_sock)
        await loop.connect_accepted_socket(lambda: client_ch, client_sock)
    except OSError as e:
        log.warning("upgrade: cannot take a handed-over connection: %s", e)
        for ch, sock in ((server_ch, server_sock), (client_ch, client_sock)):
            if ch.transport is not None:
                ch.transport.abort()
            else:
                sock.close()
        return
    conn = ProxyConnection(service, client_ch)
    conn.script_host = None  # it moved without a script: it goes on relaying
    st = conn.state
    client = state.get("client") or {}
    st.client.src, st.client.dst = _info(client.get("src")), _info(client.get("dst"))
    st.client.username = str(client.get("user", ""))
    st.client.default_db = str(client.get("db", ""))
    st.client.thread_id = int(client.get("thread_id", 0))
    server = state.get("server")
    if server:
        st.server = PeerInfo(src=_info(server.get("src")), dst=_info(server.get("dst")),
                             mysqld_version=int(server.get("version", 0)),
                             thread_id=int(server.get("thread_id", 0)),
                             username=st.client.username, default_db=st.client.default_db)
    st.client_capabilities = int(state.get("capabilities", 0))
    st.client_charset = int(state.get("charset", 0))
    st.plugin = str(state.get("plugin", ""))
    st.pool_user = str(state.get("pool_user", ""))
    st.server_ch = server_ch
    backend = next((b for b in service.backends.items if str(b.addr) == state.get("backend")),
                   None)
    if backend is not None:
        st.backend = backend
        st.backend_index = backend.index
        backend.connected_clients += 1
        st.counted = True
    conn.start_adopted()
    log.debug("conn %d: client %s handed over by the old chassis (its conn %s), on backend %s",
              conn.connection_id, conn.name, state.get("conn"), state.get("backend"))
