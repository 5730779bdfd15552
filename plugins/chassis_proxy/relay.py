"""The hot path: after the login, bytes go from one socket to the other untouched.

Each leg's transport gets a :class:`RelayLeg` protocol whose ``data_received`` writes the
buffer to the other leg's transport as it is, without framing or copying. Flow control
is per direction: when a destination's write buffer passes its high-water mark, its
leg's ``pause_writing`` pauses reading on the source, and ``resume_writing`` resumes it,
so memory stays flat however big a result is.

``last`` (the most recent buffer received) serves two cheap purposes: the idle sweeper
of the service sees activity by its identity changing, and at close time the client's
last buffer tells a polite COM_QUIT from a client that vanished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from chassis_mysql.constants import Command
from chassis_mysql.framing import frame

#: What a relay reports when one of its legs closes: the leg and the transport's error.
LostCallback = Callable[["RelayLeg", BaseException | None], None]

#: A client's COM_QUIT, as it ends its last buffer (length 1, sequence 0, command 0x01).
COM_QUIT_PACKET = frame(bytes((Command.QUIT,)), 0)

#: Commands the server does not answer: after them the client is not waiting.
_UNANSWERED = frozenset({int(Command.STMT_CLOSE), int(Command.STMT_SEND_LONG_DATA), int(Command.QUIT)})


class RelayLeg(asyncio.Protocol):
    """One direction's reader: forwards what it reads to ``peer``.

    ``nbytes`` and ``commands`` are the only bookkeeping on the hot path (plain integer
    slots); the connection folds them into the admin counters when it closes and when
    the service's sweeper passes.
    """

    __slots__ = ("at_command", "commands", "is_client", "last", "nbytes", "on_lost", "paused",
                 "peer", "transport", "turn")

    def __init__(self, on_lost: LostCallback, transport: asyncio.Transport,
                 peer: asyncio.Transport, is_client: bool, turn: list[bool]) -> None:
        self.on_lost = on_lost
        #: Shared by both legs: ``turn[0]`` is True while the client's last command has
        #: had no answer yet (a query is running), for the idle timeout.
        self.turn = turn
        self.transport = transport
        self.peer = peer
        self.is_client = is_client
        self.last: bytes = b""
        self.paused = False
        self.nbytes = 0
        self.commands = 0
        #: Set on the client leg while the proxy stops: called instead of forwarding the
        #: client's next command once the last one is answered (see Connection.close_after_command).
        self.at_command: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        self.last = data
        self.nbytes += len(data)
        self.turn[0] = False  # the server answered
        self.peer.write(data)

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


class ClientRelayLeg(RelayLeg):
    """The client side also counts buffers that start a command (sequence id 0).

    An approximation: a buffer holding several pipelined commands counts once, and the
    continuation of a large packet counts if its fourth byte happens to be 0.
    """

    __slots__ = ()

    def data_received(self, data: bytes) -> None:
        if len(data) > 4 and data[3] == 0:
            if self.at_command is not None and not self.turn[0]:
                self.at_command()  # the client read the last answer: nothing is cut
                return
            self.last = data
            self.nbytes += len(data)
            self.commands += 1
            if data[4] not in _UNANSWERED:
                self.turn[0] = True
        else:
            self.last = data
            self.nbytes += len(data)
        self.peer.write(data)


def start(on_lost: LostCallback, client: asyncio.Transport, server: asyncio.Transport,
          client_pending: bytes, server_pending: bytes) -> tuple[RelayLeg, RelayLeg]:
    """Switch both transports to relaying; forward bytes the packet readers still held.

    ``on_lost`` is called once per leg that closes (the connection closes the other).
    """
    turn = [False]
    client_leg = ClientRelayLeg(on_lost, client, server, True, turn)
    server_leg = RelayLeg(on_lost, server, client, False, turn)
    client.set_protocol(client_leg)
    server.set_protocol(server_leg)
    if client_pending:
        client_leg.data_received(client_pending)
    if server_pending:
        server_leg.data_received(server_pending)
    return client_leg, server_leg
