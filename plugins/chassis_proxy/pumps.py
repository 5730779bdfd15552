"""The response pumps: one server response, followed by the codec's tracker as it arrives.

:class:`StreamPump` is the scripted mode's hot path: it runs in the server channel's
``data_received`` and writes each buffer to the client as it came (sequence ids patched
only when the two legs disagree). :class:`ResponsePump` is the framed one, for what the
stream pump cannot take: results a script wants to see (``resultset_is_needed``),
16 MiB packets, exchanges where the server waits for the client (LOCAL INFILE).

Both are handed the connection's plain state (channels, counters) and report back
through callbacks; neither knows the command loop that started it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from chassis_mysql.constants import MAX_PAYLOAD, Capability, Command
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import frame, frame_all, frame_next_seq, shift_sequence_ids
from chassis_mysql.infile import is_local_infile_request
from chassis_mysql.packets import OK, eof_warnings, is_eof, is_err, is_ok
from chassis_mysql.response import Event, ResponseTracker
from chassis_mysql.summary import locate, split

from chassis_proxy.errors import ConnectionGone
from chassis_proxy.hooks import Injection, InjectionResult
from chassis_proxy.relay import NO_ANSWER, RECORDED_COMMANDS, Tracking
from chassis_proxy.state import ConnectionState, ignore

#: The length bytes of a physical packet of MAX_PAYLOAD bytes: a payload split in several.
_SPLIT_HEADER = MAX_PAYLOAD.to_bytes(3, "little")
_PREPARE = int(Command.STMT_PREPARE)
_BINARY = frozenset({int(Command.STMT_EXECUTE), int(Command.STMT_BULK_EXECUTE)})
_EXECUTE = int(Command.STMT_EXECUTE)
_DEPRECATE_EOF = int(Capability.DEPRECATE_EOF)


class ResponsePump:
    """Takes one response off the server channel as its bytes arrive.

    ``deliver``: re-frame each packet for the client and write it; ``keep``: collect the
    payloads for the script. Finishes when the tracker says the response is complete, or
    that the server now waits for the client (LOCAL INFILE data, an auth answer).
    """

    def __init__(self, state: ConnectionState, tracker: ResponseTracker, *, deliver: bool,
                 keep: bool, client_seq: int) -> None:
        self.state = state
        self.tracker = tracker
        self.deliver = deliver
        self.packets: list[bytes] | None = [] if keep else None
        self.client_seq = client_seq
        self.server_seq = 0
        self.first: bytes | None = None
        self.first_ns = 0
        self.last_ns = 0
        self.rows = 0
        self.row_bytes = 0
        self.status_packet = b""
        #: A kept response whose LOCAL INFILE request went to the client, and its file to
        #: the server: the rest is answered from ``client_seq`` on.
        self.infile_relayed = False
        self.future: asyncio.Future[None] | None = None  # run()'s
        self.finished = False
        #: follow() mode: called with the pump (or the ProtocolError) when it finishes.
        self.on_finish: Callable[[ResponsePump], None] | None = None
        self.on_error: Callable[[ProtocolError], None] | None = None
        #: send(): the first buffer may be the whole answer (see _take_whole).
        self.whole = False
        #: The server's buffer that held the whole answer, when the client may get it as it
        #: is (sequence ids counting up by one from ``raw[3]``); set by _take_whole.
        self.raw: bytes | None = None
        #: The server status of a whole answer (else the tracker's).
        self.server_status: int | None = None
        self.tracking: Tracking | None = None
        self.command = b""  # send()'s
        self.framed = b""
        self.started = 0.0

    def send(self, command: bytes, tracking: Tracking | None, started: float) -> None:
        """Send the injected ``command`` (at ``started``), recorded by ``tracking``'s queries.

        An answer to a COM_QUERY or COM_STMT_EXECUTE that the server's first buffer holds
        whole (an OK, an ERR, one result set) is taken in one pass (:func:`summary.locate`)
        instead of packet by packet, kept or delivered in one write, and recorded as the
        relay records a forwarded query (:meth:`Tracking.whole`); any other answer is
        followed by the tracker and recorded from its figures (``queries.start``)."""
        server = self.state.server_ch
        assert server is not None
        if command[0] in RECORDED_COMMANDS and len(command) < MAX_PAYLOAD:
            self.whole = True
            self.command = command
            self.framed = framed = frame(command, 0)
            self.tracking = tracking
            self.started = started
            server.write(framed)
            return
        if tracking is not None:
            tracking.queries.start(command, self.tracker)
        server.send(command, 0)

    def send_kept(self, seq: int) -> None:
        """The kept answer to the client, from sequence id ``seq``: the server's buffer as
        it is when that is what framing the payloads again would give."""
        raw = self.raw
        if raw is not None and raw[3] == seq:
            data = raw
        else:
            data, _ = frame_all(self.packets or [], seq)
        if data:
            self.state.bytes_out += len(data)
            self.state.client_ch.write(data)

    def _not_whole(self) -> None:
        """The answer is not whole in one buffer: the tracker follows it (and records it)."""
        self.whole = False
        tracking = self.tracking
        if tracking is not None:
            tracking.queries.start(self.command, self.tracker, self.started)

    def _take_whole(self, data: bytes) -> bool:
        """``data`` (nothing before it buffered) as the whole answer: what the tracker path
        would have gathered, read in one pass. False (nothing taken) if it is not whole."""
        capabilities = self.tracker.capabilities
        found = locate(data, capabilities)
        if found is None:
            return False
        parts = split(data, found[3])
        if parts is None:
            return False
        tracking = self.tracking
        if tracking is not None:
            tracking.started = self.started
            if not tracking.whole(self.framed, data):
                return False
        payloads, first_row, consecutive = parts
        rows, at = found[0], found[3]
        first = payloads[0]
        last = payloads[-1]
        if not at:  # an OK or an ERR: an OK is its own status packet
            status_packet = b"" if first[0] == 0xFF else first
        else:
            if last[0] != 0xFF:
                status_packet = last  # the terminator
            elif capabilities & _DEPRECATE_EOF:
                status_packet = b""
            else:
                status_packet = payloads[first_row - 1]  # the EOF after the definitions
            self.row_bytes = len(data) - at - 4 - len(last)
        self.rows = rows
        self.status_packet = status_packet
        self.server_status = (status_packet[3] | (status_packet[4] << 8)
                              if len(status_packet) >= 5 else 0)
        self.first = first
        if self.packets is not None:
            self.packets.extend(payloads)
        self.raw = data if consecutive else None
        self.server_seq = (data[-len(last) - 1] + 1) & 0xFF
        if self.deliver:  # streamed: the client gets it now, as _on_data would frame it
            seq = self.client_seq
            if consecutive and data[3] == seq:
                out, self.client_seq = data, (seq + len(payloads)) & 0xFF
            else:
                out, self.client_seq = frame_all(payloads, seq)
            self.state.bytes_out += len(out)
            self.state.client_ch.write(out)
        self.first_ns = self.last_ns = time.monotonic_ns()
        self._finished()
        return True

    async def run(self) -> None:
        """Until the response is complete. No time limit: a running query is never cut
        (a server that vanishes closes the channel; TCP keepalive finds a dead host)."""
        self.future = self.state.client_ch.event_loop().create_future()
        self.finished = False
        self._attach()
        try:
            self._on_data()  # bytes that arrived before the pump was attached
            await self.future
        finally:
            self._detach()

    def follow(self, on_finish: Callable[[ResponsePump], None],
               on_error: Callable[[ProtocolError], None]) -> None:
        """Like :meth:`run` without a coroutine: ``on_finish(pump)`` runs in the server
        channel's ``data_received`` once the response is complete (or the server waits
        for the client), ``on_error`` on a malformed response; the pump is detached first."""
        self.on_finish = on_finish
        self.on_error = on_error
        self.finished = False
        self._attach()
        server = self.state.server_ch
        if server is not None and server.reader.buffered:
            self._on_data()  # bytes that arrived before the pump was attached (else none to read)

    def _attach(self) -> None:
        server = self.state.server_ch
        assert server is not None
        server.sink = self._on_data
        self.state.client_ch.on_resume = self._resume

    def _detach(self) -> None:
        server = self.state.server_ch
        self.state.client_ch.on_resume = None
        if server is not None:
            server.sink = None
            if server.transport is not None and not server.closed:
                server.transport.resume_reading()

    def _resume(self) -> None:
        server = self.state.server_ch
        if server is not None and server.transport is not None and not server.closed:
            server.transport.resume_reading()

    def injection_result(self, inj: Injection) -> InjectionResult:
        """What ``read_query_result`` sees of the complete response to ``inj``."""
        tracker = self.tracker
        first = self.first or b""
        status: int | None = 0
        affected: int | None = None
        insert_id: int | None = None
        if is_err(first):
            status, affected, insert_id = 255, 0, 0  # numbers, as MySQL Proxy 0.8.5 gave them
        elif is_local_infile_request(first):
            status = None
        elif is_ok(first) and tracker.command != _PREPARE:
            try:
                ok = OK.parse(first, tracker.capabilities)
                affected, insert_id = ok.affected_rows, ok.last_insert_id
            except ProtocolError:
                pass
        warnings = 0
        last = self.status_packet
        if is_eof(last):
            warnings = eof_warnings(last)
        elif last:
            try:
                warnings = OK.parse(last, tracker.capabilities).warnings
            except ProtocolError:
                pass
        end_ns = self.last_ns or time.monotonic_ns()
        queued = inj.queued_ns
        return InjectionResult(inj, self.packets, first, status, affected, insert_id, warnings,
                               tracker.status if self.server_status is None else self.server_status,
                               self.rows, self.row_bytes,
                               max(0, ((self.first_ns or end_ns) - queued) // 1000),
                               max(0, (end_ns - queued) // 1000), tracker.command in _BINARY)

    def _finished(self) -> None:
        self.finished = True
        if self.future is not None:
            self.future.set_result(None)
        elif self.on_finish is not None:
            self._detach()
            self.on_finish(self)

    def _on_data(self, data: bytes = b"") -> None:
        server, client = self.state.server_ch, self.state.client_ch
        assert server is not None
        if data:
            self.state.server_seen = data
            if self.whole:
                self.whole = False
                if not server.reader.buffered and self.first is None and self._take_whole(data):
                    return
                self._not_whole()
            server.reader.feed(data)
        elif self.whole and server.reader.buffered:
            self._not_whole()
        if self.finished:
            return
        tracker = self.tracker
        out: list[bytes] = []
        finished = False
        try:
            while True:
                packet = server.reader.next_packet()
                if packet is None:
                    break
                payload = packet.payload
                self.server_seq = (packet.seq + 1) & 0xFF
                if self.first is None:
                    self.first = payload
                    self.first_ns = time.monotonic_ns()
                event = tracker.feed(payload)
                if event == Event.ROW:
                    self.rows += 1
                    self.row_bytes += len(payload) + 4 * (len(payload) // 0xFFFFFF + 1)
                elif event in (Event.OK, Event.EOF):
                    self.status_packet = payload
                if self.deliver:
                    out.append(frame(payload, self.client_seq))
                    self.client_seq = frame_next_seq(len(payload), self.client_seq)
                if self.packets is not None:
                    self.packets.append(payload)
                if tracker.done or tracker.awaiting_client:
                    finished = True
                    break
        except ProtocolError as e:
            self.finished = True
            if self.future is not None:
                self.future.set_exception(e)
            elif self.on_error is not None:
                self._detach()
                self.on_error(e)
            return
        if out:
            data = b"".join(out)
            self.state.bytes_out += len(data)
            client.write(data)
        if finished:
            self.last_ns = time.monotonic_ns()
            self._finished()
        elif self.deliver and client.write_paused and server.transport is not None:
            server.transport.pause_reading()  # the client is slow: stop reading the server


class StreamPump:
    """The hot path of scripted mode: a forwarded command's response, straight through.

    Runs in the server leg's ``data_received``: the tracker's :meth:`~ResponseTracker.scan`
    walks the packet headers of each buffer (rows are recognised by their first byte,
    nothing is copied), and the buffer goes to the client as it is (sequence ids patched
    only if the two legs disagree). Falls back to the framed :class:`ResponsePump`
    machinery for 16 MiB packets, and hands over to a coroutine when the server waits
    for the client (LOCAL INFILE data, change-user auth).

    A session keeps one and starts it again for each forwarded command.
    """

    __slots__ = ("capabilities", "carry", "client_seq", "offset", "on_big_packet", "on_client_turn",
                 "on_data_sink", "on_done", "on_error", "on_recorded_sink", "on_resume", "paused",
                 "recorded", "server_seq", "state", "tracker", "tracking")

    def __init__(self, state: ConnectionState, *, on_done: Callable[[], None],
                 on_client_turn: Callable[[StreamPump], None],
                 on_error: Callable[[BaseException], None],
                 on_big_packet: Callable[[ResponseTracker, int], None],
                 capabilities: int = 0) -> None:
        self.state = state
        #: The capabilities both legs agreed on (how an answer ends), for start_recorded
        #: without tracking.
        self.capabilities = capabilities
        self.on_done = on_done
        self.on_client_turn = on_client_turn
        self.on_error = on_error
        self.on_big_packet = on_big_packet
        self.tracker = NO_ANSWER  # until start()
        self.recorded: bytes | None = None  # see start_recorded
        self.tracking: Tracking | None = None
        self.client_seq = 0  # the next sequence id on the client leg
        self.server_seq = 1  # the next one on the server leg
        self.offset: int | None = None  # client seq - server seq, once known
        self.carry = b""
        self.paused = False  # we paused reading the server (the client is slow)
        # the channel callbacks, bound once
        self.on_data_sink: Callable[[bytes], None] = self.on_data
        self.on_recorded_sink: Callable[[bytes], None] = self.on_recorded
        self.on_resume: Callable[[], None] = self._resume

    def start_recorded(self, packet: bytes, client_seq: int, tracking: Tracking | None,
                       started: float) -> None:
        """:meth:`start` for the COM_QUERY or COM_STMT_EXECUTE ``packet`` (the client's, header
        included, sent as it is): an answer that comes whole in the server's first buffer is
        recorded by the relay's ``tracking`` (no tracker, no packet walk for a point
        select), or just sent when nothing records queries (``tracking`` None: digests and
        the slow log off); any other is followed by a tracker as usual."""
        self.recorded = packet
        self.tracking = tracking
        if tracking is not None:
            tracking.started = started
        # _begin(NO_ANSWER, client_seq), inlined: this runs for every forwarded query, and
        # the fields only on_data reads are reset by on_recorded when it hands over to it
        self.client_seq = client_seq
        state = self.state
        server = state.server_ch
        assert server is not None
        server.sink = self.on_recorded_sink
        state.client_ch.on_resume = self.on_resume
        if server.reader.buffered:
            self.on_recorded(server.reader.drain())

    def on_recorded(self, data: bytes) -> None:
        """The server's first buffer after :meth:`start_recorded`. The hot path of a scripted
        connection's repeated query (a prepared point select): an answer shaped as its
        slot's last one (with nothing recording queries: any answer whole in the buffer),
        with the sequence ids the client expects, is written and timed here as the relay's
        server leg does it; anything else goes to :meth:`on_data`."""
        packet = self.recorded
        tracking = self.tracking
        state = self.state
        server = state.server_ch
        n = len(data)
        slot = None
        if packet is not None and server is not None and n > 4 and data[3] == self.client_seq:
            if tracking is not None:
                slot = tracking.slots.get(packet[4:9] if packet[4] == _EXECUTE else packet)
                backend = state.backend
                whole = (slot is not None and n == slot.size and data[slot.head_at] == slot.head
                         and data[slot.tail_at] == slot.tail and backend is not None
                         and slot.stats is backend.stats)
            else:  # nothing records queries: an answer whole in this buffer, as the relay sends it
                whole = locate(data, self.capabilities) is not None
            if whole:
                self.recorded = None
                state.server_seen = data
                state.bytes_out += n
                client = state.client_ch
                if not client.closed and client.transport is not None:
                    client.transport.write(data)
                if slot is not None:
                    assert tracking is not None  # slots are tracking's
                    tracking.timed(slot, data)
                server.sink = None
                client.on_resume = None
                self.on_done()
                return
        # on_data takes this buffer and the rest of the answer, from where start_recorded left
        if server is not None:
            server.sink = self.on_data_sink
        if tracking is None and packet is not None:  # no tracking to take it whole: a tracker
            self.recorded = None
            self._rewind(ResponseTracker(packet[4], self.capabilities), self.client_seq)
        else:
            self._rewind(NO_ANSWER, self.client_seq)
        self.on_data(data)

    def start(self, tracker: ResponseTracker, client_seq: int) -> None:
        """Follow the response to a command just sent, as the server's bytes arrive."""
        self.recorded = None
        self._begin(tracker, client_seq)

    def _rewind(self, tracker: ResponseTracker, client_seq: int) -> None:
        """The state of a response not begun: followed by ``tracker``, from ``client_seq``."""
        self.tracker = tracker
        self.client_seq = client_seq
        self.server_seq = 1
        self.offset = None
        self.carry = b""
        self.paused = False

    def _begin(self, tracker: ResponseTracker, client_seq: int) -> None:
        self._rewind(tracker, client_seq)
        state = self.state
        server = state.server_ch
        assert server is not None
        server.sink = self.on_data_sink
        state.client_ch.on_resume = self.on_resume
        if server.reader.buffered:
            self.on_data(server.reader.drain())

    def release(self) -> None:
        """The session ended: drop the callbacks (bound methods of the session and of this
        pump), so that reference counting frees both at once instead of the cycle
        collector."""
        self.on_done = self.on_data_sink = self.on_recorded_sink = self.on_resume = ignore
        self.on_client_turn = self.on_error = self.on_big_packet = ignore

    def _resume(self) -> None:
        self.paused = False
        server = self.state.server_ch
        if server is not None and server.transport is not None and not server.closed:
            server.transport.resume_reading()

    def on_data(self, data: bytes) -> None:
        state = self.state
        state.server_seen = data
        if self.carry:
            data = self.carry + data
            self.carry = b""
        n = len(data)
        if self.offset is None:
            if n < 4:
                self.carry = data
                return
            self.offset = (self.client_seq - data[3]) & 0xFF
        if self.recorded is not None and self._record_whole(data):
            return
        tracker = self.tracker
        try:
            pos = tracker.scan(data)
        except ProtocolError as e:
            self.on_error(ConnectionGone(f"backend {state.backend_name()} sent a "
                                         f"malformed response: {e}"))
            return
        if pos:
            if self.offset:
                self._write(data, pos, tracker.last_seq)
            else:  # _write without sequence ids to patch (the common case), inlined
                self.server_seq = self.client_seq = (tracker.last_seq + 1) & 0xFF
                state.bytes_out += pos
                state.client_ch.write(data if pos == n else data[:pos])
        if tracker.idle:
            if pos < n:
                # Bytes after a complete response: keep them for the next command.
                assert state.server_ch is not None
                state.server_ch.reader.feed(data[pos:])
            self._finish()
            return
        if pos < n:
            if pos + 4 <= n and data[pos:pos + 3] == _SPLIT_HEADER:
                self._to_framed(data[pos:])
                return
            self.carry = data[pos:]
        client, server = state.client_ch, state.server_ch
        if client.write_paused and server is not None and server.transport is not None:
            self.paused = True
            server.transport.pause_reading()  # the client is slow: stop reading the server

    def _record_whole(self, data: bytes) -> bool:
        """The first buffer after :meth:`start_recorded`: sent and recorded when it is the
        whole answer (and needs no sequence ids patched), else a tracker follows it
        (False)."""
        packet, self.recorded = self.recorded, None
        tracking = self.tracking
        assert packet is not None and tracking is not None
        if not self.offset and tracking.whole(packet, data):
            state = self.state
            state.bytes_out += len(data)
            state.client_ch.write(data)
            self._finish()
            return True
        length = packet[0] | (packet[1] << 8) | (packet[2] << 16)
        self.tracker = tracker = ResponseTracker(packet[4], tracking.capabilities)
        tracking.queries.start(packet[4:4 + length], tracker, tracking.started)
        return False

    def _write(self, data: bytes, end: int, last_seq: int) -> None:
        offset = self.offset or 0
        chunk = shift_sequence_ids(data, end, offset)
        self.server_seq = (last_seq + 1) & 0xFF
        self.client_seq = (last_seq + 1 + offset) & 0xFF
        self.state.bytes_out += end
        self.state.client_ch.write(chunk)

    def _detach(self) -> None:
        state = self.state
        server = state.server_ch
        if server is not None:
            server.sink = None
        state.client_ch.on_resume = None
        if self.paused:
            self.paused = False
            if server is not None and server.transport is not None and not server.closed:
                server.transport.resume_reading()

    def _finish(self) -> None:
        if self.paused:
            self._detach()
        else:  # _detach without reading to resume (the common case), inlined
            state = self.state
            if state.server_ch is not None:
                state.server_ch.sink = None
            state.client_ch.on_resume = None
        if self.tracker.awaiting_client:
            self.on_client_turn(self)
        else:
            self.on_done()

    def _to_framed(self, rest: bytes) -> None:
        """A 16 MiB packet: the rest of the response goes to the framed (joining) pump."""
        self._detach()
        server = self.state.server_ch
        assert server is not None
        server.reader.feed(rest)
        self.on_big_packet(self.tracker, self.client_seq)
