"""The command loop when a script is loaded: MySQL Proxy 0.8's query hooks.

Per client command (``read_query``) the script may let it through, answer it itself
(``PROXY_SEND_RESULT``), or replace it with a queue of injected commands
(``PROXY_SEND_QUERY``) whose results it sees in ``read_query_result``. Every server
response is followed with the codec's :class:`ResponseTracker`, so the proxy knows
where it ends, and is either streamed to the client as it arrives (re-framed with the
client leg's sequence ids) or buffered for the script (``resultset_is_needed``).

Only the first result per client command reaches the client; later ones are dropped
with a log line. An unbuffered injection streams only when it is the last queued one;
with others behind it, it is buffered and the script decides, as for a buffered one.
Where MySQL Proxy 0.8.5 closed the client or hung, we keep the client connected and say
so in the log: an unbuffered injection after a result was sent is buffered and dropped,
and a command whose results the script all ignored gets an ERR instead of silence.

The pumps read the server's packets synchronously in ``data_received`` and write to
the client in one buffer per read. A forwarded command and a lone injection need no
coroutine; a queue of injections, LOCAL INFILE and pooled connections to prepare do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from chassis_mysql.constants import Command, ErrorCode
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import is_one_packet
from chassis_mysql.infile import is_local_infile_request
from chassis_mysql.packets import err_packet, is_ok
from chassis_mysql.response import ResponseTracker

from chassis_proxy.channel import ChannelClosed, PacketChannel
from chassis_proxy.errors import ConnectionGone, PoolError
from chassis_proxy.exchange import exchange, run_pump, send_answer, send_packets
from chassis_proxy.hooks import NO_DECISION, ConnectionHooks, Decision, Injection
from chassis_proxy.pumps import ResponsePump, StreamPump
from chassis_proxy.queries import ConnectionQueries
from chassis_proxy.relay import RECORDED_COMMANDS, Tracking
from chassis_proxy.state import ConnectionState, ignore

log = logging.getLogger("chassis.proxy")

# Plain ints for the per-command path: an enum member lookup costs ~0.1 us on CPython 3.11.
_QUIT = int(Command.QUIT)
_INIT_DB = int(Command.INIT_DB)
_SEND_QUERY = int(Decision.SEND_QUERY)
_SEND_RESULT = int(Decision.SEND_RESULT)
_UNKNOWN_ERROR = int(ErrorCode.UNKNOWN_ERROR)
_IGNORE_RESULT = int(Decision.IGNORE_RESULT)
#: Injections the coroutine sends: COM_INIT_DB moves default_db, COM_CHANGE_USER is rare.
_SLOW_INJECTIONS = frozenset({int(Command.INIT_DB), int(Command.CHANGE_USER)})


class ScriptedSession:
    """The command phase of one scripted client connection.

    Handed the connection's state, its script's hooks and ``prepare``, which readies a
    server connection that changed hands (:meth:`chassis_proxy.handover.Handover.prepare`),
    and ``queries`` when digests or the slow log are on (each command sent to the
    server is recorded there).
    """

    def __init__(self, state: ConnectionState, hooks: ConnectionHooks,
                 prepare: Callable[[], Awaitable[None]],
                 queries: ConnectionQueries | None = None) -> None:
        self.state = state
        self.queries = queries
        self.client: PacketChannel = state.client_ch
        self.settings = state.settings
        self.hooks = hooks
        self.prepare = prepare
        server_caps = int(state.server_handshake.capabilities) if state.server_handshake else ~0
        self.capabilities = state.client_capabilities & server_caps
        #: Records forwarded queries' answers as the relay does (StreamPump.start_recorded).
        self.tracking = Tracking(queries, self.capabilities) if queries is not None else None
        self.client.reader.max_payload = self.settings.max_allowed_packet
        #: The largest command payload taken without the packet reader (which enforces
        #: --proxy-max-allowed-packet, and joins 16 MiB packets).
        self.max_command = min(self.settings.max_allowed_packet, 0xFFFFFE)
        if state.server_ch is not None:
            state.server_ch.reader.max_payload = None  # the login's limit; rows may be 1 GiB
        self.busy = False  # a command is being answered
        self.command = b""  # the payload of the last command taken (the admin console's view)
        self.started = 0.0  # when the command being answered went to the server (metrics)
        self.stream = StreamPump(state, on_done=self.command_done,
                                 on_client_turn=self.continue_exchange, on_error=self._stop,
                                 on_big_packet=self._rest_framed, capabilities=self.capabilities)
        self.result_hook = False  # read_query_result runs (the server owes nothing then)
        self.gone = False  # the client left while a command ran (see client_gone)
        self.closing = False  # the proxy stops: end when the command is answered
        self.task: asyncio.Task[Any] | None = None
        self.injected: tuple[bytes, int, Injection] | None = None  # see _inject_now
        self.on_injected: Callable[[ResponsePump], None] = self._injected  # bound once
        self.on_client_data: Callable[[bytes], None] = self._on_client_data
        self.on_pump_error: Callable[[ProtocolError], None] = self._pump_error
        #: The event loop (the channel's: see chassis_proxy.deadline).
        self.loop = self.client.event_loop()
        self.done: asyncio.Future[None] = self.loop.create_future()

    # the loop: callbacks for the common cases, a coroutine for the rest ----------------

    async def run(self) -> None:
        """Serve commands until the client leaves; raises ConnectionGone to end with a log line."""
        self.client.sink = self.on_client_data
        try:
            self._on_client_data(self.client.reader.drain())  # bytes read during the login
            await self.done
        finally:
            self.client.sink = None
            if self.state.server_ch is not None:
                self.state.server_ch.sink = None
            if self.task is not None and not self.task.done():
                self.task.cancel()
            self.stream.release()  # no cycles left through bound callbacks: freed at once
            self.on_injected = self.on_pump_error = self.on_client_data = ignore

    def at_rest(self) -> bool:
        """No response is owed on the server connection: it may change hands (pooling)."""
        return not self.busy or self.result_hook

    def _stop(self, error: BaseException | None = None) -> None:
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)

    def _on_client_data(self, data: bytes) -> None:
        """Client bytes: run every complete command, unless one is still being answered. The
        common read, one whole command packet and nothing buffered, skips the packet reader."""
        reader = self.client.reader
        state = self.state
        whole: bytes | None = None
        if data:
            state.client_seen = data
            n = len(data)
            if (not self.busy and 4 < n <= self.max_command + 4 and not reader.buffered
                    and is_one_packet(data)):
                if data[3] == 0 and not state.connection_close and not self.done.done():
                    # The hot path: one command with sequence id 0, as the server wants it.
                    try:
                        self._dispatch(data[4:], 1, data)
                        if not self.busy and state.connection_close:
                            self._on_client_data(b"")  # stops, as below
                    except Exception as e:
                        self._stop(e)
                    return
                whole = data
            else:
                reader.feed(data)
        try:
            while not self.busy and not self.done.done():
                if state.connection_close:
                    log.debug("conn %d: connection_close set by the script", state.connection_id)
                    self._stop()
                    return
                raw = None
                if whole is not None:
                    payload, seq = whole[4:], whole[3]
                    if seq == 0:
                        raw = whole  # framed as the server wants it: forwarded as it is
                    whole = None
                else:
                    if not reader.buffered:
                        return
                    try:
                        packet = reader.next_packet()
                    except ProtocolError as e:
                        self._client_err(0, ErrorCode.NET_PACKET_TOO_LARGE,
                                         "Got a packet bigger than 'max_allowed_packet' bytes",
                                         "08S01")
                        raise ConnectionGone(f"client {state.name}: {e} "
                                           "(--proxy-max-allowed-packet)") from None
                    if packet is None:
                        return
                    payload, seq = packet.payload, packet.seq
                    if not payload:
                        raise ConnectionGone(f"client {state.name} sent an empty command packet")
                self._dispatch(payload, (seq + 1) & 0xFF, raw)
        except ConnectionGone as e:
            self._stop(e)
        except Exception as e:
            self._stop(e)

    def _dispatch(self, payload: bytes, client_seq: int, raw: bytes | None = None) -> None:
        """``read_query`` and its decision; the common answers are handled right here.

        ``raw`` is the client's packet with its header, when it can go to the server as
        it is (sequence id 0, not split).
        """
        self.command = payload
        state = self.state
        state.commands += 1
        state.bytes_in += len(payload)
        queries = state.queries
        queries.reset()
        outcome = self.hooks.read_query(payload)
        if outcome is NO_DECISION and raw is not None and not len(queries):
            # The hot path: a command the script let through, sent as it came when the
            # server connection is ready and its answer is recorded (or, with nothing
            # recording queries, sent) as the relay does.
            command = payload[0]
            server = state.server_ch
            link = state.link
            if (command in RECORDED_COMMANDS and server is not None
                    and not server.closed and server.transport is not None
                    and (link is None or not link.unready)):
                started = self.started = time.monotonic()
                server.transport.write(raw)
                self.busy = True
                self.stream.start_recorded(raw, client_seq, self.tracking, started)
                return
        decision = outcome.decision
        if decision == _SEND_RESULT:
            response = outcome.response or []
            if response and not is_local_infile_request(response[0]):
                self._send_packets(response, client_seq)
            else:
                self._spawn(send_answer(self.state, response, client_seq))
            return
        if len(queries):
            if decision == _SEND_QUERY:
                self.started = time.monotonic()
                if len(queries) > 1 or not self._inject_now(payload, client_seq):
                    self._spawn(self._injections(payload, client_seq))
                return
            log.critical("conn %d: read_query queued %d queries but did not return "
                         "proxy.PROXY_SEND_QUERY; forwarding the original command instead",
                         state.connection_id, len(queries))
            queries.reset()
        command = payload[0]
        if command == _QUIT:
            # The server gets its COM_QUIT when the connection closes, unless the script's
            # disconnect_client pooled it. Not connection_close: that flag is the script's,
            # and disconnect_client must not see it set by a plain quit.
            self._stop()
            return
        server = self.state.server_ch
        if server is None or server.closed:
            self._need_server(client_seq)
        link = state.link
        self.started = time.monotonic()
        if command == _INIT_DB or (link is not None and link.unready):
            self._spawn(self._forward_slowly(payload, client_seq))
            return
        if raw is not None and server is not None:
            server.write(raw)
            if self.tracking is not None and command in RECORDED_COMMANDS:
                self.busy = True  # its answer is recorded as the relay records it
                return self.stream.start_recorded(raw, client_seq, self.tracking, self.started)
        else:
            self._to_server(payload)
        tracker = ResponseTracker(command, self.capabilities)
        if self.queries is not None:
            self.queries.start(payload, tracker, self.started)
        if tracker.expects_response:
            self.busy = True
            self.stream.start(tracker, client_seq)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Hand the connection to a coroutine until this command is answered."""
        self.busy = True
        self.client.sink = None  # the coroutine reads the client itself
        self.task = self.loop.create_task(coro)
        self.task.add_done_callback(self._coroutine_done)

    def _coroutine_done(self, task: asyncio.Task[Any]) -> None:
        self.task = None
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self._stop(error)
            return
        self.command_done()

    def client_gone(self) -> None:
        """The client closed its connection while a command runs: end after the command."""
        self.gone = True

    def finish_after_command(self) -> None:
        """The proxy is stopping: end the session once the running command is answered."""
        self.closing = True
        if not self.busy:
            self._close_for_stop()

    def _close_for_stop(self) -> None:
        log.debug("conn %d: closing: proxy is shutting down", self.state.connection_id)
        self._stop()

    def command_done(self) -> None:
        """The command is answered: take the next one (maybe already buffered)."""
        if self.gone:
            self._stop()
            return
        self.busy = False
        queries = self.queries
        if queries is not None:
            if queries.tracker is not None:  # not recorded as the relay does it
                queries.finish()  # and the backend's latency histogram
        elif self.started:
            backend = self.state.backend
            if backend is not None:
                backend.stats.latency.observe(time.monotonic() - self.started)
        self.started = 0.0
        if self.closing:
            self._close_for_stop()
            return
        self.client.sink = self.on_client_data
        if self.client.reader.buffered or self.state.connection_close:
            self._on_client_data(b"")

    def continue_exchange(self, pump: StreamPump) -> None:
        """The server now waits for the client (LOCAL INFILE, change-user auth): a coroutine
        relays that part."""
        async def relay() -> None:
            await exchange(self.state, pump.tracker, deliver=True, keep=False,
                                 client_seq=pump.client_seq, server_seq=pump.server_seq)
        self._spawn(relay())

    def _rest_framed(self, tracker: ResponseTracker, client_seq: int) -> None:
        """A 16 MiB packet: the framed (joining) pump finishes the stream pump's response."""
        async def rest_of_response() -> None:
            pump = ResponsePump(self.state, tracker, deliver=True, keep=False, client_seq=client_seq)
            await run_pump(self.state, pump)
            await exchange(self.state, tracker, deliver=True, keep=False, client_seq=client_seq, pump=pump)
        self._spawn(rest_of_response())

    async def _forward_slowly(self, payload: bytes, client_seq: int) -> None:
        """A client command the stream pump cannot take: its pooled connection must be
        prepared first, or it is a COM_INIT_DB whose success moves ``default_db``."""
        state = self.state
        await self._ready_server(client_seq)
        tracker = ResponseTracker(payload[0], self.capabilities)
        if self.queries is not None:
            self.queries.start(payload, tracker)
        self._to_server(payload)
        if not tracker.expects_response:
            return
        pump = await exchange(self.state, tracker, deliver=True, keep=False, client_seq=client_seq)
        if payload[0] == Command.INIT_DB and is_ok(pump.first or b""):
            db = payload[1:].decode("utf-8", "surrogateescape")
            state.client.default_db = db
            if state.server is not None:
                state.server.default_db = db

    async def _ready_server(self, client_seq: int) -> None:
        """Check there is a server connection; prepare it first if it changed hands (pooling)."""
        self._need_server(client_seq)
        state = self.state
        link = state.link
        if link is not None and link.unready:
            try:
                await self.prepare()
            except PoolError as e:
                self._client_err(client_seq, _UNKNOWN_ERROR, f"(proxy-pool) {e}", "HY000")
                raise ConnectionGone(str(e)) from None

    def _inject_now(self, original: bytes, client_seq: int) -> bool:
        """A lone injection (the common case) without a coroutine: its response followed in
        ``data_received`` (:meth:`ResponsePump.follow`), then :meth:`_injected`. False when
        the coroutine must run the queue (an empty packet, COM_INIT_DB or COM_CHANGE_USER,
        no response due, no server connection or one to prepare)."""
        state = self.state
        inj = next(iter(state.queries))
        packet = inj.packet
        server = state.server_ch
        link = state.link
        if (not packet or packet[0] in _SLOW_INJECTIONS or server is None or server.closed
                or (link is not None and link.unready)):
            return False
        tracker = ResponseTracker(packet[0], self.capabilities)
        if not tracker.expects_response:
            return False
        state.queries.pop()
        stream = not inj.resultset_is_needed
        pump = ResponsePump(state, tracker, deliver=stream, keep=not stream, client_seq=client_seq)
        pump.send(packet, self.tracking, self.started)
        self.busy = True
        self.injected = (original, client_seq, inj)
        pump.follow(self.on_injected, self.on_pump_error)
        return True

    def _injected(self, pump: ResponsePump) -> None:
        """The lone injection's response is in (or the server waits for the client)."""
        assert self.injected is not None
        (original, client_seq, inj), self.injected = self.injected, None
        if pump.tracker.awaiting_client:  # LOCAL INFILE, an auth exchange
            self._spawn(self._rest(original, client_seq, inj, pump))
            return
        try:
            answered, answer = self._result(inj, pump, pump.deliver, False, client_seq)
            if answer is not None and answer[0] and not is_local_infile_request(answer[0][0]):
                self._send_packets(*answer)
                answer = None
            if answer is not None or len(self.state.queries):  # read_query_result queued more
                self._spawn(self._rest(original, client_seq, inj, None, answered, answer))
                return
            if not answered:
                self._unanswered(original, client_seq)
        except Exception as e:
            self._stop(e)
            return
        self.command_done()

    async def _rest(self, original: bytes, client_seq: int, inj: Injection,
                    pump: ResponsePump | None, answered: bool = False,
                    answer: tuple[list[bytes], int] | None = None) -> None:
        """What a lone injection needs a coroutine for: the exchange where the server waits
        for the client (``pump``), an answer that is a LOCAL INFILE request, more queries."""
        if pump is not None:
            await exchange(self.state, pump.tracker, deliver=pump.deliver, keep=not pump.deliver,
                                 client_seq=client_seq, pump=pump,
                                 client_asked=inj.packet == original)
            answered, answer = self._result(inj, pump, pump.deliver, False, client_seq)
        if answer is not None:
            await send_answer(self.state, *answer)
        await self._injections(original, client_seq, answered)

    def _pump_error(self, e: ProtocolError) -> None:
        self._stop(ConnectionGone(f"backend {self.state.backend_name()} sent a malformed response: {e}"))

    async def _injections(self, original: bytes, client_seq: int, answered: bool = False) -> None:
        """Run the injection queue (``answered``: the client got its result already)."""
        state = self.state
        while len(state.queries):
            inj = state.queries.pop()
            if not inj.packet:
                log.critical("conn %d: injected query %d is empty; skipped", state.connection_id,
                             inj.id)
                continue
            await self._ready_server(client_seq)  # read_query_result may have switched it
            tracker = ResponseTracker(inj.packet[0], self.capabilities)
            queries = self.queries
            if queries is not None:
                queries.start(inj.packet, tracker)
            self._to_server(inj.packet)
            if not tracker.expects_response:
                continue
            # An unbuffered injection streams only as the last of the queue: with others
            # behind it (lib/ro-balance.lua queues SHOW SLAVE STATUS before the client's
            # query) it is buffered, so the script decides whether the client gets it, as
            # for resultset_is_needed (0.8.5 sent the client each of them: two results).
            stream = not inj.resultset_is_needed and not answered and not len(state.queries)
            if not inj.resultset_is_needed and answered:
                log.error("conn %d: injected query %d has no resultset_is_needed = true but the "
                          "client already got a result for this command; its result is dropped "
                          "(MySQL Proxy closed the connection here)", state.connection_id, inj.id)
            # The client's own LOAD DATA LOCAL, forwarded as the script's injection: the
            # client waits for the file request even when the result is kept for the script.
            pump = await exchange(self.state, tracker, deliver=stream, keep=not stream,
                                        client_seq=client_seq,
                                        client_asked=inj.packet == original and not answered)
            answered, answer = self._result(inj, pump, stream, answered, client_seq)
            if answer is not None:
                await send_answer(self.state, *answer)
        if not answered:
            self._unanswered(original, client_seq)

    def _result(self, inj: Injection, pump: ResponsePump, stream: bool, answered: bool,
                client_seq: int) -> tuple[bool, tuple[list[bytes], int] | None]:
        """``read_query_result`` for one injection's complete response, and what the client
        gets of it: whether it has its result now, and the script's answer to send it."""
        state = self.state
        answer_seq = pump.client_seq if pump.infile_relayed else client_seq
        if self.queries is not None:
            self.queries.finish()
        if stream:
            answered = True
        if inj.packet[0] == _INIT_DB and is_ok(pump.first or b"") and state.server is not None:
            state.server.default_db = inj.packet[1:].decode("utf-8", "surrogateescape")
        hooks = self.hooks
        if hooks.sees_results():  # else no InjectionResult is built (a query-timing script)
            result = pump.injection_result(inj)
            self.result_hook = True
            try:
                outcome = hooks.read_query_result(result)
            finally:
                self.result_hook = False
        else:
            outcome = NO_DECISION
        decision = outcome.decision
        if decision == _SEND_RESULT:
            if stream:
                log.critical("conn %d: read_query_result returned PROXY_SEND_RESULT for "
                             "injection %d without resultset_is_needed: its result was "
                             "already sent", state.connection_id, inj.id)
            elif answered:
                log.critical("conn %d: only the first result of a command goes to the client; the "
                             "answer for injection %d is dropped", state.connection_id, inj.id)
            else:
                return True, (outcome.response or [], answer_seq)
        elif decision == _IGNORE_RESULT:
            if stream:
                log.critical("conn %d: PROXY_IGNORE_RESULT for injection %d without "
                             "resultset_is_needed: its result was already sent",
                             state.connection_id, inj.id)
        elif not stream and pump.packets is not None:
            if answered:
                log.critical("conn %d: only the first result of a command goes to the "
                             "client; the result of injection %d is dropped",
                             state.connection_id, inj.id)
            else:
                pump.send_kept(answer_seq)
                answered = True
        return answered, None

    def _unanswered(self, original: bytes, client_seq: int) -> None:
        """No result reached the client: an ERR, if the command expects an answer."""
        if ResponseTracker(original[0], self.capabilities).expects_response:
            log.error("conn %d: the script sent no result for this command; the client gets "
                      "an error", self.state.connection_id)
            self._client_err(client_seq, _UNKNOWN_ERROR,
                             "(proxy) the script ignored every result for this command", "HY000")

    # talking to the server ---------------------------------------------------------

    def _need_server(self, client_seq: int) -> None:
        if self.state.server_ch is None or self.state.server_ch.closed:
            self._client_err(client_seq, _UNKNOWN_ERROR,
                             "(proxy) I have no server backend, closing connection", "HY000")
            raise ConnectionGone("no server backend for this command (read_query did not "
                               "answer it); closing the connection")

    def _to_server(self, payload: bytes) -> int:
        server = self.state.server_ch
        assert server is not None
        return server.send(payload, 0)

    # talking to the client ---------------------------------------------------------

    def _send_packets(self, payloads: list[bytes], seq: int) -> int:
        return send_packets(self.state, payloads, seq)

    def _client_err(self, seq: int, code: int, message: str, sqlstate: str) -> None:
        self.client.send(err_packet(code, message, sqlstate), seq)

async def serve(session: ScriptedSession) -> None:
    """After the login: run the scripted command loop until the client leaves.

    Raises :class:`ConnectionGone` to end with a log line.
    """
    state = session.state
    state.in_commands = True
    try:
        await session.run()
    except ChannelClosed:
        if not state.closed:
            log.info("conn %d: client %s went away", state.connection_id, state.name)
