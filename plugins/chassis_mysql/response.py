"""Which packet of a server response is which, and when the response is complete.

A :class:`ResponseTracker` is made for one client command and fed the server's
logical payloads in order (or physical packets, with
:meth:`~ResponseTracker.feed_physical`); each :meth:`~ResponseTracker.feed` returns the :class:`Event` kind
of that packet, and :attr:`~ResponseTracker.done` turns true after the last one. It
follows every response shape a MySQL/MariaDB server produces: OK/ERR, text and binary
result sets with or without CLIENT_DEPRECATE_EOF (then a 0xFE OK ends each result set)
and MariaDB's cached metadata, several result sets chained by
SERVER_MORE_RESULTS_EXISTS, the COM_STMT_PREPARE response, cursors (CURSOR_EXISTS:
rows only come with COM_STMT_FETCH), COM_FIELD_LIST, COM_STATISTICS, the LOCAL INFILE
exchange and the re-authentication of COM_CHANGE_USER (both need the client's
packets: :attr:`~ResponseTracker.awaiting_client` and
:meth:`~ResponseTracker.feed_client`), MariaDB progress reports, commands that get no
response, and the endless COM_BINLOG_DUMP stream.

Only the few fields that steer the state machine are decoded (counts and status
flags), so a proxy can afford it for every packet it has to look at.
"""

from __future__ import annotations

from enum import IntEnum

from chassis_mysql.commands import StmtPrepareOK, command_of
from chassis_mysql.constants import MAX_PAYLOAD, Capability, Command, ServerStatus
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import OK, is_eof, is_progress
from chassis_mysql.resultset import column_count, metadata_follows


class Event(IntEnum):
    """What one server packet is, within the response to a command.

    EOF is any terminator of a result set or definition block: the classic EOF
    packet, or the 0xFE-headed OK that replaces it under CLIENT_DEPRECATE_EOF.
    """

    OK = 1
    ERR = 2
    EOF = 3
    COLUMN_COUNT = 4
    COLUMN_DEF = 5
    ROW = 6
    LOCAL_INFILE_REQUEST = 7
    PREPARE_OK = 8
    PARAM_DEF = 9
    STATISTICS = 10
    PROGRESS = 11
    AUTH_SWITCH = 12
    AUTH_MORE_DATA = 13
    BINLOG_EVENT = 14


class _S(IntEnum):
    """States of the tracker."""

    FIRST = 0  # the first packet of a (next) result
    COLUMN_DEFS = 1
    COLUMN_DEFS_EOF = 2
    ROWS = 3
    PREPARE_FIRST = 4
    PREPARE_PARAMS = 5
    PREPARE_PARAMS_EOF = 6
    PREPARE_COLUMNS = 7
    PREPARE_COLUMNS_EOF = 8
    FIELD_LIST = 9
    STATISTICS = 10
    OK_OR_ERR = 11
    AUTH = 12
    INFILE_DATA = 13  # the client is sending the file
    INFILE_RESULT = 14
    FETCH = 15
    STREAM = 16
    AUTH_CLIENT = 17  # the client must answer an auth request
    DONE = 18


_RESULTSET_COMMANDS = frozenset(
    {Command.QUERY, Command.PROCESS_INFO, Command.STMT_EXECUTE, Command.STMT_BULK_EXECUTE}
)
_BINARY_COMMANDS = frozenset({Command.STMT_EXECUTE, Command.STMT_BULK_EXECUTE})
_NO_RESPONSE = frozenset({Command.QUIT, Command.STMT_CLOSE, Command.STMT_SEND_LONG_DATA})
_STREAM_COMMANDS = frozenset({Command.BINLOG_DUMP, Command.BINLOG_DUMP_GTID})

_MORE = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR = int(ServerStatus.CURSOR_EXISTS)


class ResponseTracker:
    """Follows the server's response to one client command (see the module docstring).

    ``capabilities`` are the ones in effect on the connection (what the client asked
    for AND the server offered): DEPRECATE_EOF and MariaDB's CACHE_METADATA change the
    shape of result sets.
    """

    __slots__ = (
        "_binary",
        "_client_split",
        "_defs_left",
        "_deprecate_eof",
        "_server_split",
        "_state",
        "capabilities",
        "column_count",
        "command",
        "prepare_ok",
        "result_sets",
        "status",
    )

    def __init__(self, command: int, capabilities: int) -> None:
        self.command = command
        self.capabilities = capabilities
        self._deprecate_eof = bool(capabilities & Capability.DEPRECATE_EOF)
        self._binary = command in _BINARY_COMMANDS
        self._defs_left = 0
        self._server_split = self._client_split = False
        #: Status flags of the last OK or EOF seen (0 before any).
        self.status = 0
        #: Result sets (and OKs) completed so far; more than one with multi-results.
        self.result_sets = 0
        #: Columns of the current result set (or of the prepared statement).
        self.column_count = 0
        #: The COM_STMT_PREPARE OK, once seen.
        self.prepare_ok: StmtPrepareOK | None = None
        if command in _RESULTSET_COMMANDS:
            self._state = _S.FIRST
        elif command in _NO_RESPONSE:
            self._state = _S.DONE
        elif command == Command.STMT_PREPARE:
            self._state = _S.PREPARE_FIRST
        elif command == Command.STMT_FETCH:
            self._state = _S.FETCH
        elif command == Command.FIELD_LIST:
            self._state = _S.FIELD_LIST
        elif command == Command.STATISTICS:
            self._state = _S.STATISTICS
        elif command == Command.CHANGE_USER:
            self._state = _S.AUTH
        elif command in _STREAM_COMMANDS:
            self._state = _S.STREAM
        else:
            # PING, INIT_DB, PROCESS_KILL, STMT_RESET, RESET_CONNECTION, SET_OPTION,
            # REFRESH, DEBUG, SHUTDOWN, ... and unknown commands (answered with ERR).
            self._state = _S.OK_OR_ERR

    @classmethod
    def for_command(cls, command_payload: bytes, capabilities: int) -> ResponseTracker:
        """A tracker for the response to this client command payload."""
        return cls(command_of(command_payload), capabilities)

    @property
    def done(self) -> bool:
        """True once the whole response has been fed (immediately for commands without one)."""
        return self._state == _S.DONE

    @property
    def expects_response(self) -> bool:
        """False for COM_QUIT, COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA."""
        return self.command not in _NO_RESPONSE

    @property
    def awaiting_client(self) -> bool:
        """True while the server waits for client packets (LOCAL INFILE data, an auth answer)."""
        return self._state in (_S.INFILE_DATA, _S.AUTH_CLIENT)

    def feed_client(self, payload: bytes) -> None:
        """Tell the tracker about a client packet sent while :attr:`awaiting_client`."""
        if self._state == _S.INFILE_DATA:
            if not payload:
                self._state = _S.INFILE_RESULT
        elif self._state == _S.AUTH_CLIENT:
            self._state = _S.AUTH
        else:
            raise ProtocolError("unexpected client packet: the server is not waiting for one")

    def feed_physical(self, chunk: bytes) -> Event | None:
        """Like :meth:`feed`, for relays that see physical packets instead of joined ones.

        A payload of 16 MiB or more arrives in several chunks: the first one is
        classified (the kind of a packet shows in its first bytes), the continuation
        chunks return None.
        """
        if self._server_split:
            self._server_split = len(chunk) == MAX_PAYLOAD
            return None
        self._server_split = len(chunk) == MAX_PAYLOAD
        return self.feed(chunk)

    def feed_client_physical(self, chunk: bytes) -> None:
        """Like :meth:`feed_client`, for physical packets (an empty chunk that ends a
        16 MiB payload is not the end of LOCAL INFILE data)."""
        if self._client_split:
            self._client_split = len(chunk) == MAX_PAYLOAD
            return
        self._client_split = len(chunk) == MAX_PAYLOAD
        self.feed_client(chunk)

    def _terminator(self, payload: bytes) -> bool:
        if not payload or payload[0] != 0xFE:
            return False
        if self._deprecate_eof:
            return len(payload) < 0xFFFFFF
        return len(payload) < 9

    def _read_status(self, payload: bytes) -> int:
        if not self._deprecate_eof and is_eof(payload):
            status = payload[3] | (payload[4] << 8) if len(payload) >= 5 else 0
        else:
            status = int(OK.parse(payload, self.capabilities).status)
        self.status = status
        return status

    def _end_of_result(self, status: int) -> None:
        self.result_sets += 1
        self._state = _S.FIRST if status & _MORE else _S.DONE

    def feed(self, payload: bytes) -> Event:
        """Classify the next server packet of the response and advance."""
        state = self._state
        if state == _S.ROWS:  # the hot state first
            if payload and payload[0] == 0xFF:
                self._state = _S.DONE
                return Event.ERR
            if self._terminator(payload):
                status = self._read_status(payload)
                if self._binary and status & _CURSOR and not status & _MORE:
                    self.result_sets += 1
                    self._state = _S.DONE
                else:
                    self._end_of_result(status)
                return Event.EOF
            return Event.ROW
        if not payload:
            raise ProtocolError(f"empty packet in the response to {self._command_name()}")
        first = payload[0]
        if state == _S.DONE:
            raise ProtocolError(
                f"unexpected packet after the complete response to {self._command_name()}"
            )
        if first == 0xFF and state not in (_S.INFILE_DATA, _S.AUTH_CLIENT):
            if is_progress(payload):
                return Event.PROGRESS
            self._state = _S.DONE
            return Event.ERR
        if state == _S.FIRST:
            return self._first(payload, first)
        if state == _S.COLUMN_DEFS:
            self._defs_left -= 1
            if self._defs_left == 0:
                self._state = _S.ROWS if self._deprecate_eof else _S.COLUMN_DEFS_EOF
            return Event.COLUMN_DEF
        if state == _S.COLUMN_DEFS_EOF:
            self._expect_terminator(payload, "after the column definitions")
            status = self._read_status(payload)
            if self._binary and status & _CURSOR and not status & _MORE:
                self.result_sets += 1
                self._state = _S.DONE
            else:
                self._state = _S.ROWS
            return Event.EOF
        if state == _S.OK_OR_ERR:
            if first == 0x00 or first == 0xFE:
                self._read_status(payload)
                self._state = _S.DONE
                return Event.OK if first == 0x00 else Event.EOF
            raise ProtocolError(
                f"expected OK or ERR in the response to {self._command_name()}, "
                f"got a packet starting 0x{first:02x}"
            )
        if state in (_S.PREPARE_FIRST, _S.PREPARE_PARAMS, _S.PREPARE_PARAMS_EOF,
                     _S.PREPARE_COLUMNS, _S.PREPARE_COLUMNS_EOF):  # fmt: skip
            return self._prepare(payload, state)
        if state == _S.FETCH:
            if self._terminator(payload):
                self._read_status(payload)
                self.result_sets += 1
                self._state = _S.DONE
                return Event.EOF
            return Event.ROW
        if state == _S.FIELD_LIST:
            if self._terminator(payload):
                self._read_status(payload)
                self._state = _S.DONE
                return Event.EOF
            return Event.COLUMN_DEF
        if state == _S.STATISTICS:
            self._state = _S.DONE
            return Event.STATISTICS
        if state == _S.AUTH:
            return self._auth(payload, first)
        if state == _S.INFILE_RESULT:
            if first == 0x00:
                self._end_of_result(self._read_status(payload))
                return Event.OK
            raise ProtocolError(
                f"expected OK or ERR after LOCAL INFILE data, got a packet starting 0x{first:02x}"
            )
        if state == _S.STREAM:
            if is_eof(payload):
                self._state = _S.DONE
                return Event.EOF
            return Event.BINLOG_EVENT
        if state == _S.INFILE_DATA:
            raise ProtocolError(
                "the server sent a packet while the client was sending LOCAL INFILE data"
            )
        raise ProtocolError(  # AUTH_CLIENT
            "the server sent a packet while the client owed an authentication answer"
        )

    def _first(self, payload: bytes, first: int) -> Event:
        if first == 0x00:
            self._end_of_result(self._read_status(payload))
            return Event.OK
        if first == 0xFB:
            self._state = _S.INFILE_DATA
            return Event.LOCAL_INFILE_REQUEST
        n = column_count(payload)
        if n == 0:
            raise ProtocolError("result set with 0 columns")
        self.column_count = n
        if not metadata_follows(payload, self.capabilities):
            self._state = _S.ROWS if self._deprecate_eof else _S.COLUMN_DEFS_EOF
        else:
            self._defs_left = n
            self._state = _S.COLUMN_DEFS
        return Event.COLUMN_COUNT

    def _expect_terminator(self, payload: bytes, where: str) -> None:
        if not self._terminator(payload):
            raise ProtocolError(
                f"expected EOF {where} in the response to {self._command_name()}, "
                f"got a packet starting 0x{payload[0]:02x}"
            )

    def _prepare(self, payload: bytes, state: _S) -> Event:
        if state == _S.PREPARE_FIRST:
            ok = StmtPrepareOK.parse(payload)
            self.prepare_ok = ok
            self.column_count = ok.num_columns
            if ok.metadata_follows == 0:
                self._state = _S.DONE
            else:
                self._after_prepare_block(_S.PREPARE_FIRST)
            return Event.PREPARE_OK
        if state in (_S.PREPARE_PARAMS, _S.PREPARE_COLUMNS):
            self._defs_left -= 1
            if self._defs_left == 0:
                if self._deprecate_eof:
                    self._after_prepare_block(state)
                else:
                    self._state = _S(state + 1)  # the block's EOF
            return Event.PARAM_DEF if state == _S.PREPARE_PARAMS else Event.COLUMN_DEF
        self._expect_terminator(payload, "after the prepared statement's definitions")
        self._read_status(payload)
        self._after_prepare_block(_S(state - 1))
        return Event.EOF

    def _after_prepare_block(self, finished: _S) -> None:
        """Move to the next definition block of a COM_STMT_PREPARE response (or finish)."""
        ok = self.prepare_ok
        assert ok is not None
        if finished == _S.PREPARE_FIRST and ok.num_params:
            self._defs_left = ok.num_params
            self._state = _S.PREPARE_PARAMS
        elif finished in (_S.PREPARE_FIRST, _S.PREPARE_PARAMS) and ok.num_columns:
            self._defs_left = ok.num_columns
            self._state = _S.PREPARE_COLUMNS
        else:
            self.result_sets += 1
            self._state = _S.DONE

    def _auth(self, payload: bytes, first: int) -> Event:
        if first == 0x00:
            self._read_status(payload)
            self._state = _S.DONE
            return Event.OK
        if first == 0xFE:
            self._state = _S.AUTH_CLIENT
            return Event.AUTH_SWITCH
        if first == 0x01:
            # caching_sha2_password's "fast auth success" is followed by OK, not by the client.
            if payload[1:] != b"\x03":
                self._state = _S.AUTH_CLIENT
            return Event.AUTH_MORE_DATA
        raise ProtocolError(
            f"unexpected packet starting 0x{first:02x} in the COM_CHANGE_USER exchange"
        )

    def _command_name(self) -> str:
        try:
            return f"COM_{Command(self.command).name}"
        except ValueError:
            return f"command 0x{self.command:02x}"
