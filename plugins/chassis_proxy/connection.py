"""One client connection: its life, its timeouts and counters, and which backend it gets.

:class:`ProxyConnection` orchestrates the rooms, each handed the plain
:class:`~chassis_proxy.state.ConnectionState` and the callbacks it needs:

1. backend choice (here): ``connect_server``, then the backends in turn, with fail-over;
2. the login (:mod:`chassis_proxy.login`): relayed, on a pooled connection, or with a
   script playing the server;
3. then either the flat byte relay (:mod:`chassis_proxy.relay`, no script) or the
   scripted command loop (:mod:`chassis_proxy.scripted`, which uses the pumps of
   :mod:`chassis_proxy.pumps`);
4. at the end ``disconnect_client`` and the close of both legs.

What ``backend_ndx`` means at each point is :mod:`chassis_proxy.handover`'s.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Protocol

from chassis_mysql.constants import ErrorCode
from chassis_mysql.packets import err_packet

from chassis.proxy_protocol import ProxyHeader, ProxyProtocolError
from chassis_proxy import proxy_header, relay, scripted
from chassis_proxy.backends import Backend, Backends
from chassis_proxy.channel import ChannelClosed, ChannelTimeout, PacketChannel
from chassis_proxy.deadline import Deadline
from chassis_proxy.errors import (
    LOCAL_ERRNOS,
    ConnectionGone,
    LoginFailed,
    connect_failure,
    local_failure,
    local_failures,
)
from chassis_proxy.handover import Handover
from chassis_proxy.hooks import BackendState, ConnectionHooks, Decision, ScriptHost, ScriptLoadError
from chassis_proxy.link import keepalive
from chassis_proxy.login import LOGIN_MAX_PAYLOAD, Login
from chassis_proxy.queries import QueryRecorder
from chassis_proxy.settings import ProxySettings
from chassis_proxy.state import ConnectionState, ignore, peer_address
from chassis_proxy.stats import Counters

log = logging.getLogger("chassis.proxy")

#: What a peer of --proxy-protocol-networks that sent no valid header is told.
EXPECTED_HEADER = "(proxy) expected a PROXY protocol header from this address"

#: Seconds of silence after the server's answer before a relayed client counts as at rest.
RELAY_QUIET = 0.25


class ConnectionRegistry(Protocol):
    """What a connection needs of its worker's service (:class:`chassis_proxy.service.ProxyService`)."""

    settings: ProxySettings
    backends: Backends
    stats: Counters
    script_host: ScriptHost | None
    recorder: QueryRecorder | None
    accepting: bool
    #: The worker's event loop, once it serves (see chassis_proxy.deadline for why it is
    #: handed around instead of looked up).
    loop: asyncio.AbstractEventLoop | None

    def next_connection_id(self) -> int: ...
    def over_limit(self) -> bool: ...
    def register(self, conn: ProxyConnection) -> None: ...
    def unregister(self, conn: ProxyConnection) -> None: ...


def accept(service: ConnectionRegistry) -> PacketChannel:
    """Protocol factory of the listener: the connection starts when the socket is made."""
    return PacketChannel(LOGIN_MAX_PAYLOAD, on_made=lambda ch: ProxyConnection(service, ch).start(),
                         loop=service.loop)


class ProxyConnection:
    """A client connection and its server connection, from accept to close."""

    def __init__(self, service: ConnectionRegistry, client_ch: PacketChannel) -> None:
        self.service = service
        self.settings = service.settings
        self.loop = service.loop or asyncio.get_running_loop()
        self.state = ConnectionState(service.next_connection_id(), client_ch, service.settings,
                                     lambda: list(service.backends.items))
        self.connection_id = self.state.connection_id
        self.handover = Handover(self.state, service.backends, self.fold_counters,
                                 self._channel_lost)
        self.hooks: ConnectionHooks | None = None
        #: The script host of this client, to its end (a reload may replace the service's).
        self.script_host = service.script_host
        self.client_leg: relay.LegBase | None = None
        self.server_leg: relay.LegBase | None = None
        self.session: scripted.ScriptedSession | None = None
        self.task: asyncio.Task[None] | None = None
        self._folded = (0, 0, 0)
        self._activity: tuple[object, object] = (None, None)
        self._active_at = 0.0
        self._paused_since: float | None = None
        self._between_commands = False  # closed by close_after_command: the server owes nothing
        self._header: asyncio.Future[ProxyHeader] | None = None  # a balancer's, on its way
        #: Being handed over to a new chassis (chassis_proxy.handoff): a stop leaves it be.
        self.moving = False

    @property
    def name(self) -> str:
        return self.state.name

    # start and stop --------------------------------------------------------------

    def start(self) -> None:
        st = self.state
        transport = st.client_ch.transport
        assert transport is not None
        st.client.src = peer_address(transport, "peername")
        st.client.dst = dst = peer_address(transport, "sockname")
        st.client_secure = dst is not None and dst.family == socket.AF_UNIX  # a unix socket
        if not self.service.accepting or self.service.over_limit():
            why = "Too many connections" if self.service.accepting else "proxy is shutting down"
            st.client_ch.send(err_packet(ErrorCode.CON_COUNT_ERROR, why, "08004"), 0)
            st.client_ch.close()
            log.warning("conn %d: refused client %s: %s (--proxy-max-connections=%d)",
                        self.connection_id, self.name, why, self.settings.max_connections)
            self.service.stats.errors += 1
            self.service.stats.refused["max_connections" if self.service.accepting else "shutting_down"] += 1
            return
        self.service.stats.connections += 1
        self.service.register(self)
        st.client_ch.on_lost = self._channel_lost
        # before the first byte can arrive: who may send a PROXY header
        if proxy_header.expects_header(self.settings, st.client.src):
            self._header = proxy_header.read_client_header(st.client_ch)
        else:
            proxy_header.refuse_headers(st.client_ch, self._header_from_untrusted)
        self.task = self.loop.create_task(self._run())

    def start_adopted(self) -> None:
        """A connection the chassis we replace handed over (chassis_proxy.handoff), its
        state restored and both channels connected: relay from now on."""
        self.service.register(self)
        try:
            self._start_relay()
        except ConnectionGone as e:
            log.info("conn %d: handed over, but %s", self.connection_id, e)
            self.close()

    @property
    def closed(self) -> bool:
        return self.state.closed

    def close(self, reason: str | None = None) -> None:
        """Close both sides (idempotent); written data is flushed first."""
        st = self.state
        if st.closed:
            return
        st.closed = True
        if reason:
            log.debug("conn %d: closing: %s", self.connection_id, reason)
        if st.client_ch.transport is not None:
            st.client_ch.transport.close()
        self.fold_counters()
        if self.hooks is not None:
            try:
                self.hooks.disconnect_client()  # may park the server connection
            except Exception:
                log.exception("conn %d: disconnect_client failed", self.connection_id)
        self._close_server()
        self.service.unregister(self)
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task(self.loop):
            task.cancel()
        # Cut the callbacks that point back here: nothing calls them after the close, and
        # without the cycles reference counting frees the connection at once (the cyclic
        # collector's passes cost a few percent of a login).
        st.client_ch.on_lost = None
        if st.server_ch is not None and st.server_ch.on_lost == self._channel_lost:
            st.server_ch.on_lost = None
        self.handover.release()
        for leg in (self.client_leg, self.server_leg):
            if leg is not None:
                leg.on_lost = ignore

    def close_after_command(self) -> None:
        """The proxy is stopping: close this client once it is owed nothing, without
        cutting an answer. A scripted session ends when its command is answered; a relayed
        client is closed when it sends its next command (it has read the last answer),
        which is not forwarded. A client that never sends one meets the shutdown deadline."""
        if self.session is not None:
            self.session.finish_after_command()
        elif self.client_leg is not None:
            self.client_leg.at_command = self._close_between_commands

    def _close_between_commands(self) -> None:
        self._between_commands = True
        self.close("proxy is shutting down")

    def at_rest(self) -> bool:
        """Logged in and no command running: the client may be closed at a shutdown.

        In the relay the proxy does not parse responses: a client counts as at rest when
        the server spoke after its last command and nothing moved for :data:`RELAY_QUIET`
        seconds (nor is paused).
        """
        cl, sl = self.client_leg, self.server_leg
        if cl is not None and sl is not None:
            if cl.turn[0] or cl.paused or sl.paused:
                return False
            seen = (cl.last, sl.last)
            now = self.loop.time()
            if seen[0] is not self._activity[0] or seen[1] is not self._activity[1]:
                self._activity, self._active_at = seen, now
            return now - self._active_at >= RELAY_QUIET
        if self.session is not None:
            return not self.session.busy
        return False  # still logging in: the login timeout bounds it

    @property
    def quiet_since(self) -> float:
        """Loop time of the last traffic seen on a relayed connection (by the sweeper or
        :meth:`at_rest`; 0.0 before the relay starts): the admin console's ``time``."""
        return self._active_at

    def _close_server(self) -> None:
        """Close the server connection still attached (a script did not pool it)."""
        ch = self.state.server_ch
        if ch is not None and ch.transport is not None:
            if not ch.closed and (self.handover.is_at_rest() if self.session is not None
                                  else self.client_leg is not None
                                  and (self._between_commands or self.at_rest())):
                # A polite goodbye: the server counts no aborted connection.
                ch.transport.write(relay.COM_QUIT_PACKET)
            ch.transport.close()
        self.handover.uncount()

    def _channel_lost(self, ch: PacketChannel, exc: BaseException | None) -> None:
        """A leg closed while a coroutine owns the connection: wake or stop it."""
        st = self.state
        if st.closed:
            return
        if ch is st.client_ch:
            session = self.session
            if session is not None and session.busy:
                # As MySQL Proxy did, the command's queue of injections still runs (its
                # results go nowhere, read_query_result sees them); then the close.
                log.info("conn %d: client %s went away%s; finishing its command first",
                         self.connection_id, self.name, f" ({exc})" if exc else "")
                session.client_gone()
                return
            # Whatever the coroutine awaits (a backend, a result), the client is gone.
            log.info("conn %d: client %s went away%s", self.connection_id, self.name,
                     f" ({exc})" if exc else "")
            self.close()
        elif ch is st.server_ch and st.in_commands:
            # Scripted command phase: whatever the coroutine awaits, the server is gone.
            log.warning("conn %d: backend %s closed the connection%s; closing client %s "
                        "(it sees a lost connection)", self.connection_id, st.backend_name(),
                        f" ({exc})" if exc else "", self.name)
            self.close()
        # Otherwise (login) the coroutine's read wakes up with ChannelClosed.

    def _relay_lost(self, leg: relay.LegBase, exc: BaseException | None) -> None:
        """A relayed leg closed: close the other one too, with one log line."""
        if self.state.closed:
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
                        self.state.backend_name(), cause, self.name)
        self.close()

    def fold_counters(self) -> None:
        """Add what happened since the last fold to the worker's and the backend's counters."""
        st = self.state
        cl, sl = self.client_leg, self.server_leg
        if cl is not None and sl is not None:
            now = (cl.nbytes, sl.nbytes, cl.commands)
        else:
            now = (st.bytes_in, st.bytes_out, st.commands)
        before = self._folded
        if now == before:
            return
        self._folded = now
        for counters in (self.service.stats, st.backend.stats if st.backend else None):
            if counters is not None:
                counters.bytes_in += now[0] - before[0]
                counters.bytes_out += now[1] - before[1]
                counters.queries += now[2] - before[2]

    def check_timeouts(self, now: float) -> None:
        """Called by the service's sweeper: --proxy-read/write-timeout after the login."""
        st = self.state
        cl, sl, session = self.client_leg, self.server_leg, self.session
        if st.closed:
            return
        if cl is not None and sl is not None:
            seen: tuple[object, object] = (cl.last, sl.last)
            paused = cl.paused or sl.paused
            running = cl.turn[0]
        elif session is not None:
            seen = (st.client_seen, st.server_seen)
            paused = st.client_ch.write_paused or bool(
                st.server_ch is not None and st.server_ch.write_paused)
            running = session.busy
        else:
            return  # the login has its own timeout
        if self._active_at == 0.0:
            self._active_at = now
        idle_timeout = self.settings.idle_timeout
        if seen[0] is not self._activity[0] or seen[1] is not self._activity[1]:
            self._activity = seen
            self._active_at = now
        elif idle_timeout > 0 and not running and now - self._active_at > idle_timeout:
            # A running query is never cut: only a client that has its answers and is silent.
            log.info("conn %d: client %s idle for %.3g s (--proxy-idle-timeout); closing it",
                     self.connection_id, self.name, now - self._active_at)
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
        st = self.state
        relaying = False
        try:
            if not await self._read_origin():
                return
            if self.script_host is not None:
                try:
                    self.hooks = self.script_host.open(st)
                except ScriptLoadError as e:
                    st.fail_greeting(ErrorCode.UNKNOWN_ERROR, str(e))
                    log.error("conn %d: script failed: %s", self.connection_id, e)
                    return
            login = Login(st, self.hooks, self.handover)
            try:
                async with Deadline(self.loop, self.settings.login_timeout or None):
                    logged_in = await self._log_in(login)
            except TimeoutError as e:
                if isinstance(e, ChannelTimeout):
                    raise
                self._login_timed_out()
                return
            if not logged_in:
                return
            if st.server_ch is None and self.hooks is not None:  # a script plays the server
                await self._serve_scripted(self.hooks)
                return
            if self.hooks is None:
                self._start_relay()
                relaying = True
            else:
                await self._serve_scripted(self.hooks)
        except LoginFailed:
            self.service.stats.errors += 1
            self.service.stats.refused["login_failed"] += 1
        except ConnectionGone as e:
            log.warning("conn %d: %s", self.connection_id, e)
        except ChannelClosed as e:
            if not st.closed:
                who = "client" if st.client_ch.closed else "backend"
                log.info("conn %d: %s closed the connection during login (%s)",
                         self.connection_id, who, e)
        except ChannelTimeout:
            log.warning("conn %d: login of client %s timed out (--proxy-read-timeout=%g)",
                        self.connection_id, self.name, self.settings.read_timeout)
            st.send_client_err(ErrorCode.UNKNOWN_ERROR, "(proxy) login timed out", "08S01")
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("conn %d: internal error; closing client %s", self.connection_id,
                          self.name)
        finally:
            if not relaying:
                self.close()

    async def _read_origin(self) -> bool:
        """--proxy-protocol-networks: a balancer's header names the client (see
        chassis_proxy.proxy_header). False: refused."""
        st = self.state
        if self._header is None:
            return True
        timeout = self.settings.login_timeout
        try:
            async with Deadline(self.loop, timeout or None):
                header = await self._header
        except ProxyProtocolError as e:
            self._refuse_origin(f"{e} (its peer is in --proxy-protocol-networks: it must start "
                                "with a PROXY protocol header)", EXPECTED_HEADER)
            return False
        except TimeoutError:
            self._refuse_origin(f"no PROXY protocol header within {timeout:g} s (--proxy-login-"
                                "timeout; its peer is in --proxy-protocol-networks)", EXPECTED_HEADER)
            return False
        peer = st.name
        proxy_header.apply(st.client, header)
        log.debug("conn %d: %s from %s", self.connection_id, proxy_header.describe(header), peer)
        return True

    def _header_from_untrusted(self) -> None:
        self._refuse_origin("it sent a PROXY protocol header, but its address is not in "
                            "--proxy-protocol-networks", "(proxy) PROXY protocol header refused")
        self.close()

    def _refuse_origin(self, why: str, told: str) -> None:
        """One log line and, before any greeting, an ERR in its place (``told``)."""
        st = self.state
        log.warning("conn %d: refused client %s: %s", self.connection_id, self.name, why)
        self.service.stats.errors += 1
        self.service.stats.refused["proxy_protocol"] += 1
        if st.cseq == 0:
            st.fail_greeting(ErrorCode.HANDSHAKE_ERROR, told, "08S01")

    async def _log_in(self, login: Login) -> bool:
        """Backend choice and the login; False when the connection ends here. True with
        no server connection: a script plays the server (``connect_server`` answered)."""
        st = self.state
        greeting = await self._connect(login)
        if greeting is None:
            return bool(self.hooks is not None and not st.closed and st.client_ch.transport
                        and await login.mock())
        if st.link is not None and st.link.authenticated:
            await login.pooled()  # connect_server kept a pooled connection
        else:
            await login.relay(greeting)
        return True

    def _login_timed_out(self) -> None:
        st = self.state
        timeout = self.settings.login_timeout
        log.warning("conn %d: client %s did not log in within %g s (--proxy-login-timeout); "
                    "closing it", self.connection_id, self.name, timeout)
        self.service.stats.errors += 1
        self.service.stats.refused["login_timeout"] += 1
        message = f"(proxy) login timed out after {timeout:g} s"
        if st.cseq == 0:  # no greeting sent yet
            st.fail_greeting(ErrorCode.HANDSHAKE_ERROR, message, "08S01")
        else:
            st.send_client_err(ErrorCode.HANDSHAKE_ERROR, message, "08S01")

    async def _serve_scripted(self, hooks: ConnectionHooks) -> None:
        recorder = self.service.recorder
        session = scripted.ScriptedSession(
            self.state, hooks, self.handover.prepare,
            recorder.connection(self.state) if recorder is not None else None)
        self.session = session
        self.handover.at_rest = session.at_rest
        await scripted.serve(session)

    def _start_relay(self) -> None:
        st = self.state
        assert st.server_ch is not None
        ct, stp = st.client_ch.transport, st.server_ch.transport
        assert ct is not None and stp is not None
        if st.client_ch.closed or st.server_ch.closed:
            raise ConnectionGone("a peer closed the connection right after the login")
        self._active_at = self.loop.time()
        recorder = self.service.recorder
        server_caps = int(st.server_handshake.capabilities) if st.server_handshake else ~0
        self.client_leg, self.server_leg = relay.start(
            self._relay_lost, ct, stp, st.client_ch.detach(), st.server_ch.detach(),
            recorder.connection(st) if recorder is not None else None,
            st.client_capabilities & server_caps,
        )

    # choosing and connecting a backend ---------------------------------------------

    async def _connect(self, login: Login) -> bytes | None:
        """Connect a backend and read its greeting; None when no backend is used.

        Tries backends in turn (marking failures DOWN); with a script, ``connect_server``
        is asked again before every attempt. Sends the client an ERR itself when none
        is left.
        """
        st = self.state
        backends = self.service.backends
        backends.revive()
        tried: list[str] = []
        exclude: set[int] = set()
        while True:
            backend: Backend | None = None
            if self.hooks is not None:
                st.backend_index = 0
                self.handover.choosing = True
                try:
                    outcome = self.hooks.connect_server()
                finally:
                    self.handover.choosing = False
                if st.link is not None:
                    if outcome.decision == Decision.IGNORE_RESULT:
                        log.debug("conn %d: client %s gets the pooled connection %s",
                                  self.connection_id, self.name, st.link.name)
                        st.link.backend.stats.connections += 1
                        return st.link.greeting
                    self.handover.unchoose()  # not kept: back to the pool, connect as usual
                if outcome.decision == Decision.SEND_RESULT:
                    login.mock_greeting(outcome)
                    return None
                chosen = backends.by_index(st.backend_index)
                if chosen is not None and chosen.index not in exclude and \
                        chosen.state not in (BackendState.DOWN, BackendState.OFFLINE):
                    backend = chosen
            if backend is None:
                backend = backends.pick(exclude)
            if backend is None:
                message = backends.no_backend_message(tried)
                log.warning("conn %d: client %s: %s", self.connection_id, self.name, message)
                self.service.stats.errors += 1
                self.service.stats.refused["no_backend"] += 1
                st.fail_greeting(ErrorCode.UNKNOWN_ERROR, message)
                return None
            exclude.add(backend.index)
            try:
                try:
                    greeting = await self._open(backend)
                except ChannelClosed:
                    # Closed before any greeting: a reset of a reused port (the server's
                    # TIME_WAIT) or a server restarting. Once more before calling it DOWN.
                    self._drop_server_channel()
                    greeting = await self._open(backend)
            except OSError as e:
                if e.errno not in LOCAL_ERRNOS:
                    self._backend_failed(backend, e, tried)
                    continue
                # Our own limits, not the backend's health: the backend stays as it is.
                self._drop_server_channel()
                self.service.stats.errors += 1
                st.fail_greeting(ErrorCode.UNKNOWN_ERROR, f"(proxy) cannot connect to a backend: "
                                 f"{local_failure(e)}")
                local_failures.report(self.connection_id, e)
                return None
            except (TimeoutError, ChannelClosed, ChannelTimeout) as e:
                self._backend_failed(backend, e, tried)
                continue
            backend.mark_up()
            st.backend = backend
            st.backend_index = backend.index
            backend.connected_clients += 1
            st.counted = True
            return greeting

    def _backend_failed(self, backend: Backend, e: BaseException, tried: list[str]) -> None:
        """The backend refused or timed out: DOWN, and the next one is tried."""
        reason = connect_failure(e, self.settings.connect_timeout)
        tried.append(f"{backend.addr} ({reason})")
        backend.mark_down(reason)
        self._drop_server_channel()

    def _drop_server_channel(self) -> None:
        st = self.state
        if st.server_ch is not None:
            st.server_ch.abort()
            st.server_ch = None

    async def _open(self, backend: Backend) -> bytes:
        """Connect and read the greeting, both within --proxy-connect-timeout (one timer)."""
        st = self.state
        loop = self.loop
        ch = PacketChannel(LOGIN_MAX_PAYLOAD, loop=loop)
        st.server_ch = ch
        addr = backend.addr
        async with Deadline(loop, self.settings.connect_timeout):
            if addr.path is not None:
                await loop.create_unix_connection(lambda: ch, addr.path)
            else:
                await loop.create_connection(lambda: ch, addr.host, addr.port)
                assert ch.transport is not None
                keepalive(ch.transport)
            header = proxy_header.backend_header(self.settings, st.client)
            if header is not None:  # before anything else: the server reads it first
                ch.write(header)
            ch.on_lost = self._channel_lost
            st.server_secure = addr.path is not None
            packet = await ch.read_packet()
        st.sseq = (packet.seq + 1) & 0xFF
        return packet.payload
