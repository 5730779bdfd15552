"""The hot path: after the login, bytes go from one socket to the other untouched.

Each leg's transport gets a :class:`RelayLeg` protocol whose ``data_received`` writes the
buffer to the other leg's transport as it is, without framing or copying. Flow control
is per direction: when a destination's write buffer passes its high-water mark, its
leg's ``pause_writing`` pauses reading on the source, and ``resume_writing`` resumes it,
so memory stays flat however big a result is.

``last`` (the most recent buffer received) serves two cheap purposes: the idle sweeper
of the service sees activity by its identity changing, and at close time the client's
last buffer tells a polite COM_QUIT from a client that vanished.

With query digests or the slow log on, the legs are :class:`TrackedClientLeg` and
:class:`TrackedServerLeg`: the bytes still go through untouched, and besides the client
leg hands each command that starts a buffer to the connection's
:class:`~chassis_proxy.queries.ConnectionQueries`, and the server leg walks the
answer's packet headers to see where it ends (and its rows, affected rows, error): in
one pass when the answer came whole in one buffer (the codec's ``summarize``), else with
its ``ResponseTracker.scan``. Tracking only observes: when it cannot follow
(a 16 MiB packet, a packet over :data:`MAX_CARRY` split across reads, bytes the
tracker does not understand) that command goes unrecorded and tracking starts again
with the client's next command.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING

from chassis_mysql.constants import MAX_PAYLOAD, Capability, Command
from chassis_mysql.errors import ProtocolError
from chassis_mysql.framing import frame
from chassis_mysql.response import ResponseTracker
from chassis_mysql.summary import Located, locate, outline, rows_from

from chassis_proxy.queries import ConnectionQueries, Slot

try:
    from chassis_proxy import _relay
except ImportError:  # not built (no C compiler): the reference classes below do the work
    _relay = None  # type: ignore[assignment]

#: What a relay reports when one of its legs closes: the leg and the transport's error.
LostCallback = Callable[["LegBase", BaseException | None], None]

#: A client's COM_QUIT, as it ends its last buffer (length 1, sequence 0, command 0x01).
COM_QUIT_PACKET = frame(bytes((Command.QUIT,)), 0)

#: Commands the server does not answer: after them the client is not waiting.
_UNANSWERED = frozenset({int(Command.STMT_CLOSE), int(Command.STMT_SEND_LONG_DATA), int(Command.QUIT)})


class LegBase(asyncio.Protocol):
    """One direction's reader: forwards what it reads to ``peer``.

    ``nbytes`` and ``commands`` are the only bookkeeping on the hot path (plain integer
    fields); the connection folds them into the admin counters when it closes and when
    the service's sweeper passes. What a leg does with a buffer (``data_received``) is
    its class's: the reference classes below in Python, or, when the C module
    ``chassis_proxy._relay`` was built, :class:`CompiledLeg` doing the same by ``kind``.
    """

    # The fields are RelayLeg's slots, or the C type's members: none here (a slot here
    # would clash with the C layout), but mypy checks the assignments against these.
    if TYPE_CHECKING:
        __slots__ = ("at_command", "commands", "is_client", "last", "nbytes", "on_lost", "paused",
                     "peer", "tracking", "transport", "turn")
    else:
        __slots__ = ()
    KIND = 0
    on_lost: LostCallback
    turn: list[bool]
    transport: asyncio.Transport
    peer: asyncio.Transport
    is_client: bool
    last: bytes
    paused: bool
    nbytes: int
    commands: int
    at_command: Callable[[], None] | None
    tracking: Tracking | None

    def __init__(self, on_lost: LostCallback, transport: asyncio.Transport,
                 peer: asyncio.Transport, is_client: bool, turn: list[bool],
                 tracking: Tracking | None = None) -> None:
        self.on_lost = on_lost
        #: Shared by both legs: ``turn[0]`` is True while the client's last command has
        #: had no answer yet (a query is running), for the idle timeout.
        self.turn = turn
        self.transport = transport
        self.peer = peer
        self.is_client = is_client
        self.last = b""
        self.paused = False
        self.nbytes = 0
        self.commands = 0
        #: Set on the client leg while the proxy stops: called instead of forwarding the
        #: client's next command once the last one is answered (see Connection.close_after_command).
        self.at_command = None
        #: The tracked legs' shared state (None on the plain legs, which never read it).
        self.tracking = tracking

    def data_received(self, data: bytes) -> None:
        raise NotImplementedError

    def eof_received(self) -> bool:
        return False

    def pause_writing(self) -> None:
        # Our own transport is full: stop reading the side that fills it.
        self.paused = True
        try:
            self.peer.pause_reading()
        except (RuntimeError, AttributeError):
            pass

    def resume_writing(self) -> None:
        self.paused = False
        try:
            self.peer.resume_reading()
        except (RuntimeError, AttributeError):
            pass

    def connection_lost(self, exc: BaseException | None) -> None:
        self.on_lost(self, exc)


class RelayLeg(LegBase):
    """The server leg (the reference implementation): forwards, counts, and notes that
    the server answered."""

    __slots__ = ("at_command", "commands", "is_client", "last", "nbytes", "on_lost", "paused",
                 "peer", "tracking", "transport", "turn")

    def data_received(self, data: bytes) -> None:
        self.last = data
        self.nbytes += len(data)
        self.turn[0] = False  # the server answered
        self.peer.write(data)


class ClientRelayLeg(RelayLeg):
    """The client side also counts buffers that start a command (sequence id 0).

    An approximation: a buffer holding several pipelined commands counts once, and the
    continuation of a large packet counts if its fourth byte happens to be 0.
    """

    __slots__ = ()
    KIND = 1

    def data_received(self, data: bytes) -> None:
        if len(data) > 4 and data[3] == 0:
            if self.at_command is not None and not self.turn[0]:
                self.at_command()  # the client read the last answer: nothing is cut
                return
            self.commands += 1
            if data[4] not in _UNANSWERED:
                self.turn[0] = True
        self.last = data
        self.nbytes += len(data)
        self.peer.write(data)


#: The part of a packet kept from one read to the next to find where it ends; past it
#: (a row of several MiB) the command is left unrecorded rather than copied again and again.
MAX_CARRY = 1 << 20
_SPLIT_HEADER = MAX_PAYLOAD.to_bytes(3, "little")
_QUERY = int(Command.QUERY)
_EXECUTE = int(Command.STMT_EXECUTE)
_CLOSE = int(Command.STMT_CLOSE)
#: The commands whose answers are recorded by digest (Tracking.whole).
RECORDED_COMMANDS = frozenset({_QUERY, _EXECUTE})
_DEPRECATE_EOF = int(Capability.DEPRECATE_EOF)
#: A tracker with nothing to follow, never fed: what an unanswered command is "followed"
#: with, and a stream pump's until it starts.
NO_ANSWER = ResponseTracker(Command.QUIT, 0)


class Tracking:
    """The state both tracked legs share: the command on its way and its answer.

    ``pending`` says where the conversation is: None between commands (the client's next
    buffer that starts one is followed), the client's buffer that started a command
    until its answer's first buffer, and b"" while an answer that did not come whole is
    followed with a ``ResponseTracker`` (``tracker``), or while the server waits for the
    client's packets (LOCAL INFILE data, an auth answer: ``tracker`` None), until the
    server speaks again.

    A command's answer that came whole in one buffer, as an OK, an ERR or one result set
    (nearly every one), is summarised in one pass (the codec's
    :func:`~chassis_mysql.summary.locate`). A command the connection repeats has a
    :class:`~chassis_proxy.queries.Slot`, and its answer is recorded by the server leg.
    """

    __slots__ = ("capabilities", "carry", "deprecate_eof", "long_query_time", "pending",
                 "queries", "slots", "started", "tracker")

    def __init__(self, queries: ConnectionQueries, capabilities: int) -> None:
        self.queries = queries
        self.slots = queries.slots
        self.long_query_time = queries.long_query_time
        self.capabilities = capabilities
        self.deprecate_eof = capabilities & _DEPRECATE_EOF
        self.pending: bytes | None = None
        self.started = 0.0
        self.tracker: ResponseTracker | None = None  # while an answer is followed
        self.carry = b""

    def unanswered(self, data: bytes) -> None:
        """A command the server does not answer (COM_STMT_CLOSE forgets its statement; the
        others, COM_QUIT first, are only counted)."""
        queries = self.queries
        if data[4] == _CLOSE:
            queries.start(data[4:], NO_ANSWER)
            queries.tracker = None
        else:
            backend = queries.state.backend
            if backend is not None:
                backend.stats.by_command[data[4]] += 1

    def whole(self, packet: bytes, data: bytes) -> bool:
        """Record the answer to the COM_QUERY or COM_STMT_EXECUTE ``packet`` (the client's
        buffer, header included) when ``data`` is all of it (see the server leg); False,
        with nothing recorded, when it is not whole there (then :meth:`follow` it)."""
        slot = self.slots.get(packet[4:9] if packet[4] == _EXECUTE else packet)
        backend = self.queries.state.backend
        if slot is not None and (backend is None or slot.stats is not backend.stats):
            slot = None  # a script moved the connection to another backend: a new slot
        if slot is None:
            found = locate(data, self.capabilities)
            if found is None:
                return False
            queries = self.queries
            queries.relayed(packet, self.started, found[0], found[1], found[2])
            slot = queries.slot(packet)
            if slot is not None and found[3]:
                _learn(slot, data, found)
            return True
        if len(data) != slot.size or data[slot.head_at] != slot.head or data[slot.tail_at] != slot.tail:
            figures = self.reread(slot, data)  # not shaped as the last answer
            if figures is None:
                return False
            slot.read(figures[0], figures[1], figures[2])
        self.timed(slot, data)
        return True

    def timed(self, slot: Slot, data: bytes) -> None:
        """The answer ``data`` to ``slot``'s command is complete: its time goes to the slot
        (folded later, see Slot.fold), and to the slow log when it is slow."""
        now = monotonic()
        seconds = now - self.started
        times = slot.times
        if not times:
            slot.pend()  # to be folded (see Slot.fold)
        times.append(seconds)
        slot.last = now
        if seconds >= self.long_query_time:
            self.slow_answer(slot, data, seconds)

    def slow_answer(self, slot: Slot, data: bytes, seconds: float) -> None:
        """``slot``'s answer ``data`` took ``seconds``, at least --proxy-long-query-time:
        it goes to the slow log (also called by the compiled legs)."""
        self.queries.slow(slot.text, seconds, *self.figures(slot, data))

    def reread(self, slot: Slot, data: bytes) -> tuple[int, ...] | None:
        """The figures of an answer not shaped as the slot's last one (its first, a new
        shape, an OK or ERR), None if not whole in ``data``; the slot learns its shape."""
        prefix = slot.prefix
        if prefix and data.startswith(prefix):
            found = rows_from(data, len(prefix), self.deprecate_eof)
            if found is not None and found[0] <= 1 and not found[2]:
                _learn(slot, data, (found[0], 0, 0, len(prefix)))
            return found
        located = locate(data, self.capabilities)
        if located is not None and located[3]:
            _learn(slot, data, located)
        return located

    def figures(self, slot: Slot, data: bytes) -> tuple[int, int]:
        """The rows and affected rows of the slot's answer in ``data`` (for the slow log)."""
        found = locate(data, self.capabilities)
        return (found[0], found[1]) if found is not None else (slot.rows, 0)

    def follow(self, packet: bytes, data: bytes) -> None:
        """The first server buffer after the command ``packet``, an answer that did not come
        whole in it (or not the answer of a query): the tracker follows it."""
        command = packet[4]
        length = packet[0] | (packet[1] << 8) | (packet[2] << 16)
        tracker = ResponseTracker(command, self.capabilities)
        self.tracker = tracker
        self.pending = b""
        self.carry = b""
        self.queries.start(packet[4:4 + length], tracker, self.started)
        self.answer(data)

    def answer(self, data: bytes) -> None:
        """Server bytes while an answer is followed."""
        tracker = self.tracker
        assert tracker is not None
        if self.carry:
            data = self.carry + data
            self.carry = b""
        try:
            pos = tracker.scan(data)
        except ProtocolError:
            self._lost()
            return
        if tracker.idle:
            # the server may wait for the client's packets: not a command until it speaks
            self.pending = b"" if tracker.awaiting_client else None
            self.tracker = None
            self.queries.finish()
            return
        rest = len(data) - pos
        if rest:
            if rest > MAX_CARRY or (rest >= 4 and data[pos:pos + 3] == _SPLIT_HEADER):
                self._lost()
                return
            self.carry = data[pos:]

    def _lost(self) -> None:
        self.tracker = None
        self.pending = None
        self.carry = b""
        self.queries.tracker = None


def _learn(slot: Slot, data: bytes, found: Located) -> None:
    """Keep the shape of the result set ``found`` in ``data`` on ``slot``."""
    slot.prefix = data[:found[3]]
    shape = outline(data, found)
    if shape is None:
        slot.size = -1
    else:
        slot.shape(shape[0], shape[1], len(data), found[0])


class TrackedClientLeg(ClientRelayLeg):
    """The client leg when queries are recorded: also starts following each command."""

    __slots__ = ()
    KIND = 2
    tracking: Tracking

    def data_received(self, data: bytes) -> None:
        if len(data) > 4 and data[3] == 0 and self.at_command is not None and not self.turn[0]:
            self.at_command()  # stopping, and the client read the last answer
            return
        self.last = data
        self.nbytes += len(data)
        self.peer.write(data)
        if len(data) > 4 and data[3] == 0:
            self.commands += 1
            tracking = self.tracking
            if data[4] in _UNANSWERED:
                if tracking.pending is None:
                    tracking.unanswered(data)
            else:
                self.turn[0] = True
                if tracking.pending is None:
                    tracking.pending = data
                    tracking.started = monotonic()


class TrackedServerLeg(RelayLeg):
    """The server leg when queries are recorded: also follows the answer's packets.

    A repeated command's answer (its :class:`~chassis_proxy.queries.Slot` known) that
    came whole is recorded here. Shaped as the last one (same size, same bytes before the
    row's payload and same terminator: a point select) it is not read at all; else the
    codec reads it (:meth:`Tracking.reread`). The time goes to the slot's ``times``,
    folded into the digest row and the backend's histogram later
    (:meth:`~chassis_proxy.queries.Slot.fold`); the rows and the time seen now.
    """

    __slots__ = ()
    KIND = 3
    tracking: Tracking

    def data_received(self, data: bytes) -> None:
        self.last = data
        n = len(data)
        self.nbytes += n
        self.turn[0] = False  # the server answered
        self.peer.write(data)
        tracking = self.tracking
        packet = tracking.pending
        if not packet:
            if packet is not None:  # b"": an answer followed, or the client's turn over
                if tracking.tracker is not None:
                    tracking.answer(data)
                else:
                    tracking.pending = None
            return
        tracking.pending = None  # the first answer to a command
        command = packet[4]
        if command == _EXECUTE:
            slot = tracking.slots.get(packet[4:9])
        elif command == _QUERY:
            slot = tracking.slots.get(packet)
        else:
            tracking.follow(packet, data)
            return
        if slot is None or n != slot.size or data[slot.head_at] != slot.head or data[slot.tail_at] != slot.tail:
            if not tracking.whole(packet, data):  # a first answer, or not shaped as the last
                tracking.follow(packet, data)
            return
        # Tracking.whole for an answer shaped as the slot's last one, without its lookups:
        # the relay's hot path for a repeated command (its backend never changes).
        tracking.timed(slot, data)


if _relay is not None:
    class CompiledLeg(_relay.Leg, LegBase):
        """A leg whose ``data_received`` is the C module's, which does what the reference
        class of the same ``kind`` does (``RelayLeg.KIND`` and its subclasses')."""

        __slots__ = ()
        # __init__(kind, on_lost, transport, peer, is_client, turn, tracking=None) is the C
        # type's (first in the MRO): LegBase.__init__'s fields, and the kind

#: Whether relays use the C legs (``chassis_proxy._relay`` built, and not turned off with
#: CHASSIS_RELAY=python in the environment, which the tests use to run the reference).
COMPILED = _relay is not None and os.environ.get("CHASSIS_RELAY", "") != "python"


def _leg(cls: type[RelayLeg], compiled: bool, on_lost: LostCallback, transport: asyncio.Transport,
         peer: asyncio.Transport, is_client: bool, turn: list[bool], tracking: Tracking | None) -> LegBase:
    if compiled:
        return CompiledLeg(cls.KIND, on_lost, transport, peer, is_client, turn, tracking)
    return cls(on_lost, transport, peer, is_client, turn, tracking)


def start(on_lost: LostCallback, client: asyncio.Transport, server: asyncio.Transport,
          client_pending: bytes, server_pending: bytes,
          queries: ConnectionQueries | None = None,
          capabilities: int = 0, compiled: bool | None = None) -> tuple[LegBase, LegBase]:
    """Switch both transports to relaying; forward bytes the packet readers still held.

    ``on_lost`` is called once per leg that closes (the connection closes the other).
    With ``queries`` (digests or the slow log on) the legs also track each command's
    answer, under the connection's negotiated ``capabilities``. ``compiled`` chooses the
    C legs or the reference ones (default: :data:`COMPILED`).
    """
    use_c = COMPILED if compiled is None else compiled and _relay is not None
    turn = [False]
    tracking = None if queries is None else Tracking(queries, capabilities)
    client_leg = _leg(ClientRelayLeg if tracking is None else TrackedClientLeg, use_c,
                      on_lost, client, server, True, turn, tracking)
    server_leg = _leg(RelayLeg if tracking is None else TrackedServerLeg, use_c,
                      on_lost, server, client, False, turn, tracking)
    client.set_protocol(client_leg)
    server.set_protocol(server_leg)
    if client_pending:
        client_leg.data_received(client_pending)
    if server_pending:
        server_leg.data_received(server_pending)
    return client_leg, server_leg
