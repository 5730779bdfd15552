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
flags), so a proxy can afford it for every packet it has to look at; a proxy that
forwards the bytes as they are uses :meth:`~ResponseTracker.scan`, which walks the
physical packets of a whole buffer and looks at each row only as far as its first byte.
The states are plain ints (not an enum) because this runs for every packet.
"""

from __future__ import annotations

from enum import IntEnum

from chassis_mysql.commands import StmtPrepareOK, command_of
from chassis_mysql.constants import MAX_PAYLOAD, Capability, Command, ServerStatus
from chassis_mysql.errors import ProtocolError
from chassis_mysql.packets import OK
from chassis_mysql.resultset import column_count, metadata_follows
from chassis_mysql.wire import read_lenenc_int

Buffer = bytes | bytearray | memoryview


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


# Events as module constants: a global lookup is several times cheaper than an enum
# member lookup on CPython 3.11, and feed() returns one for every packet.
_OK_EVENT = Event.OK
_ERR_EVENT = Event.ERR
_EOF_EVENT = Event.EOF
_ROW_EVENT = Event.ROW
_COLUMN_DEF_EVENT = Event.COLUMN_DEF

# States of the tracker (plain ints: compared for every packet). The last three are
# the ones where the server has nothing to send for now (ResponseTracker.idle).
_FIRST = 0  # the first packet of a (next) result
_COLUMN_DEFS = 1
_COLUMN_DEFS_EOF = 2
_ROWS = 3
_PREPARE_FIRST = 4
_PREPARE_PARAMS = 5
_PREPARE_PARAMS_EOF = 6
_PREPARE_COLUMNS = 7
_PREPARE_COLUMNS_EOF = 8
_FIELD_LIST = 9
_STATISTICS = 10
_OK_OR_ERR = 11
_AUTH = 12
_INFILE_RESULT = 13
_FETCH = 14
_STREAM = 15
_INFILE_DATA = 16  # the client is sending the file
_AUTH_CLIENT = 17  # the client must answer an auth request
_DONE = 18
_IDLE = _INFILE_DATA  # states >= _IDLE: the server owes nothing until the client speaks
_PREPARE_STATES = frozenset({_PREPARE_FIRST, _PREPARE_PARAMS, _PREPARE_PARAMS_EOF,
                             _PREPARE_COLUMNS, _PREPARE_COLUMNS_EOF})

#: The first state for each command; commands not listed are answered with OK or ERR
#: (PING, INIT_DB, PROCESS_KILL, STMT_RESET, RESET_CONNECTION, SET_OPTION, REFRESH,
#: DEBUG, SHUTDOWN, ... and unknown commands, which get an ERR).
_INITIAL_STATE: dict[int, int] = {
    int(Command.QUERY): _FIRST,
    int(Command.PROCESS_INFO): _FIRST,
    int(Command.STMT_EXECUTE): _FIRST,
    int(Command.STMT_BULK_EXECUTE): _FIRST,
    int(Command.QUIT): _DONE,
    int(Command.STMT_CLOSE): _DONE,
    int(Command.STMT_SEND_LONG_DATA): _DONE,
    int(Command.STMT_PREPARE): _PREPARE_FIRST,
    int(Command.STMT_FETCH): _FETCH,
    int(Command.FIELD_LIST): _FIELD_LIST,
    int(Command.STATISTICS): _STATISTICS,
    int(Command.CHANGE_USER): _AUTH,
    int(Command.BINLOG_DUMP): _STREAM,
    int(Command.BINLOG_DUMP_GTID): _STREAM,
}
_BINARY_COMMANDS = frozenset({int(Command.STMT_EXECUTE), int(Command.STMT_BULK_EXECUTE)})
_NO_RESPONSE = frozenset({int(Command.QUIT), int(Command.STMT_CLOSE),
                          int(Command.STMT_SEND_LONG_DATA)})

_MORE = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR = int(ServerStatus.CURSOR_EXISTS)
_DEPRECATE_EOF = int(Capability.DEPRECATE_EOF)
_PROTOCOL_41 = int(Capability.PROTOCOL_41)
_CACHE_META = int(Capability.MARIADB_CLIENT_CACHE_METADATA
                  | Capability.OPTIONAL_RESULTSET_METADATA)


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
        "affected_rows",
        "capabilities",
        "column_count",
        "command",
        "error_code",
        "last_seq",
        "prepare_ok",
        "result_sets",
        "rows",
        "status",
    )

    def __init__(self, command: int, capabilities: int) -> None:
        self.command = command
        self.capabilities = capabilities
        self._deprecate_eof = bool(capabilities & _DEPRECATE_EOF)
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
        #: Sequence id of the last physical packet :meth:`scan` took (-1 before any).
        self.last_seq = -1
        #: Rows of every result set so far (what a slow log calls Rows_sent).
        self.rows = 0
        #: The affected rows of every OK so far (several with multi-statements).
        self.affected_rows = 0
        #: The error number of the ERR that ended the response, 0 if none did.
        self.error_code = 0
        self._state = _INITIAL_STATE.get(command, _OK_OR_ERR)

    @classmethod
    def for_command(cls, command_payload: bytes, capabilities: int) -> ResponseTracker:
        """A tracker for the response to this client command payload."""
        return cls(command_of(command_payload), capabilities)

    @property
    def done(self) -> bool:
        """True once the whole response has been fed (immediately for commands without one)."""
        return self._state == _DONE

    @property
    def expects_response(self) -> bool:
        """False for COM_QUIT, COM_STMT_CLOSE and COM_STMT_SEND_LONG_DATA."""
        return self.command not in _NO_RESPONSE

    @property
    def awaiting_client(self) -> bool:
        """True while the server waits for client packets (LOCAL INFILE data, an auth answer)."""
        state = self._state
        return state in (_INFILE_DATA, _AUTH_CLIENT)

    @property
    def idle(self) -> bool:
        """True when the server has nothing more to send for now: the response is
        complete (:attr:`done`) or the server waits for the client (:attr:`awaiting_client`)."""
        return self._state >= _IDLE

    def feed_client(self, payload: bytes) -> None:
        """Tell the tracker about a client packet sent while :attr:`awaiting_client`."""
        if self._state == _INFILE_DATA:
            if not payload:
                self._state = _INFILE_RESULT
        elif self._state == _AUTH_CLIENT:
            self._state = _AUTH
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

    def scan(self, buf: Buffer, pos: int = 0) -> int:
        """Feed the complete physical packets of ``buf`` from offset ``pos`` (headers
        included); return the offset just past the last packet fed.

        The bulk form of :meth:`feed` for a proxy that forwards the bytes as they are.
        The packets of a result set (column count, definitions, rows, classic EOFs) and
        short OKs are read in place, from their header and first bytes, without copying
        them; every other packet goes through :meth:`feed`, which stays the reference
        (the tests check that both agree). Stops after the packet that completes the
        response or makes the server wait for the client (:attr:`idle`; nothing is fed
        while idle), at an incomplete packet, and before a physical packet of
        ``MAX_PAYLOAD`` bytes: a 16 MiB payload must be joined and given to
        :meth:`feed`. :attr:`last_seq` is the sequence id of the last packet fed.
        """
        n = len(buf)
        state = self._state
        last = -1
        rows = 0
        deprecate_eof = self._deprecate_eof
        while state < _IDLE and pos + 4 <= n:
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            end = pos + 4 + length
            if end > n or length == MAX_PAYLOAD:
                break
            if length:
                first = buf[pos + 4]
                if state == _ROWS:
                    if first < 0xFE or (first == 0xFE and length >= 9 and not deprecate_eof):
                        last = pos  # a row
                        pos = end
                        rows += 1
                        if n - pos >= _RUN * (length + 4):
                            start = pos
                            pos, last = _rows_of_one_size(buf, pos, length, n, last)
                            rows += (pos - start) // (length + 4)
                        continue
                    if first == 0xFE and not deprecate_eof:  # the classic EOF after the rows
                        status = buf[pos + 7] | (buf[pos + 8] << 8) if length >= 5 else 0
                        self.status = status
                        self.result_sets += 1
                        # (a cursor's EOF never has MORE_RESULTS_EXISTS: it ends too)
                        state = self._state = _FIRST if status & _MORE else _DONE
                        last = pos
                        pos = end
                        continue
                elif state == _COLUMN_DEFS:
                    if first != 0xFF:
                        self._defs_left -= 1
                        if self._defs_left == 0:
                            state = self._state = _ROWS if deprecate_eof else _COLUMN_DEFS_EOF
                        last = pos
                        pos = end
                        continue
                elif state == _COLUMN_DEFS_EOF:
                    if first == 0xFE and length < 9 and not deprecate_eof:
                        status = buf[pos + 7] | (buf[pos + 8] << 8) if length >= 5 else 0
                        self.status = status
                        if self._binary and status & _CURSOR and not status & _MORE:
                            self.result_sets += 1
                            state = self._state = _DONE
                        else:
                            state = self._state = _ROWS
                        last = pos
                        pos = end
                        continue
                elif state == _FIRST:
                    if 0 < first < 0xFB and (length >= 2 or not self.capabilities & _CACHE_META):
                        self.column_count = first  # a one-byte column count
                        if self.capabilities & _CACHE_META and buf[pos + 5] == 0:
                            state = self._state = _ROWS if deprecate_eof else _COLUMN_DEFS_EOF
                        else:
                            self._defs_left = first
                            state = self._state = _COLUMN_DEFS
                        last = pos
                        pos = end
                        continue
                    if (first == 0 and length == 7 and buf[pos + 5] < 0xFB
                            and buf[pos + 6] < 0xFB and self.capabilities & _PROTOCOL_41):
                        status = buf[pos + 7] | (buf[pos + 8] << 8)  # a short OK
                        self.status = status
                        self.affected_rows += buf[pos + 5]
                        self.result_sets += 1
                        state = self._state = _FIRST if status & _MORE else _DONE
                        last = pos
                        pos = end
                        continue
            self.feed(bytes(buf[pos + 4 : end]))
            state = self._state
            last = pos
            pos = end
        if last >= 0:
            self.last_seq = buf[last + 3]
        if rows:
            self.rows += rows
        return pos

    def _terminator(self, payload: bytes) -> bool:
        if not payload or payload[0] != 0xFE:
            return False
        if self._deprecate_eof:
            return len(payload) < 0xFFFFFF
        return len(payload) < 9

    def _read_status(self, payload: bytes) -> int:
        n = len(payload)
        if not self._deprecate_eof and payload[0] == 0xFE and n < 9:  # a classic EOF
            status = payload[3] | (payload[4] << 8) if n >= 5 else 0
        else:
            status = _ok_status(payload, self.capabilities)
        self.status = status
        return status

    def _end_of_result(self, status: int) -> None:
        self.result_sets += 1
        self._state = _FIRST if status & _MORE else _DONE

    def feed(self, payload: bytes) -> Event:
        """Classify the next server packet of the response and advance."""
        state = self._state
        if state == _ROWS:  # the hot state first
            if payload:
                first = payload[0]
                if first == 0xFF:
                    self._state = _DONE
                    self._error(payload)
                    return _ERR_EVENT
                if first == 0xFE and (len(payload) < 9 or (self._deprecate_eof
                                                          and len(payload) < 0xFFFFFF)):
                    status = self._read_status(payload)
                    if self._binary and status & _CURSOR and not status & _MORE:
                        self.result_sets += 1
                        self._state = _DONE
                    else:
                        self._end_of_result(status)
                    return _EOF_EVENT
            self.rows += 1
            return _ROW_EVENT
        if not payload:
            raise ProtocolError(f"empty packet in the response to {self._command_name()}")
        first = payload[0]
        if state == _DONE:
            raise ProtocolError(
                f"unexpected packet after the complete response to {self._command_name()}"
            )
        if first == 0xFF and state != _INFILE_DATA and state != _AUTH_CLIENT:
            if len(payload) >= 3 and payload[1] == payload[2] == 0xFF:  # MariaDB progress
                return Event.PROGRESS
            self._state = _DONE
            self._error(payload)
            return _ERR_EVENT
        if state == _FIRST:
            return self._first(payload, first)
        if state == _COLUMN_DEFS:
            self._defs_left -= 1
            if self._defs_left == 0:
                self._state = _ROWS if self._deprecate_eof else _COLUMN_DEFS_EOF
            return _COLUMN_DEF_EVENT
        if state == _COLUMN_DEFS_EOF:
            self._expect_terminator(payload, "after the column definitions")
            status = self._read_status(payload)
            if self._binary and status & _CURSOR and not status & _MORE:
                self.result_sets += 1
                self._state = _DONE
            else:
                self._state = _ROWS
            return _EOF_EVENT
        if state == _OK_OR_ERR:
            if first == 0x00 or first == 0xFE:
                self._read_status(payload)
                self._state = _DONE
                return _OK_EVENT if first == 0x00 else _EOF_EVENT
            raise ProtocolError(
                f"expected OK or ERR in the response to {self._command_name()}, "
                f"got a packet starting 0x{first:02x}"
            )
        if state in _PREPARE_STATES:
            return self._prepare(payload, state)
        if state == _FETCH:
            if self._terminator(payload):
                self._read_status(payload)
                self.result_sets += 1
                self._state = _DONE
                return _EOF_EVENT
            self.rows += 1
            return _ROW_EVENT
        if state == _FIELD_LIST:
            if self._terminator(payload):
                self._read_status(payload)
                self._state = _DONE
                return _EOF_EVENT
            return _COLUMN_DEF_EVENT
        if state == _STATISTICS:
            self._state = _DONE
            return Event.STATISTICS
        if state == _AUTH:
            return self._auth(payload, first)
        if state == _INFILE_RESULT:
            if first == 0x00:
                self._count_affected(payload)
                self._end_of_result(self._read_status(payload))
                return _OK_EVENT
            raise ProtocolError(
                f"expected OK or ERR after LOCAL INFILE data, got a packet starting 0x{first:02x}"
            )
        if state == _STREAM:
            if first == 0xFE and len(payload) < 9:
                self._state = _DONE
                return _EOF_EVENT
            return Event.BINLOG_EVENT
        if state == _INFILE_DATA:
            raise ProtocolError(
                "the server sent a packet while the client was sending LOCAL INFILE data"
            )
        raise ProtocolError(  # AUTH_CLIENT
            "the server sent a packet while the client owed an authentication answer"
        )

    def _error(self, payload: bytes) -> None:
        self.error_code = payload[1] | (payload[2] << 8) if len(payload) >= 3 else 0xFFFF

    def _count_affected(self, payload: bytes) -> None:
        try:
            n, _ = read_lenenc_int(payload, 1)
        except ProtocolError:
            return  # a malformed OK: _read_status says so
        if n:
            self.affected_rows += n

    def _first(self, payload: bytes, first: int) -> Event:
        if first == 0x00:
            self._count_affected(payload)
            self._end_of_result(self._read_status(payload))
            return _OK_EVENT
        if first == 0xFB:
            self._state = _INFILE_DATA
            return Event.LOCAL_INFILE_REQUEST
        n = column_count(payload)
        if n == 0:
            raise ProtocolError("result set with 0 columns")
        self.column_count = n
        if not metadata_follows(payload, self.capabilities):
            self._state = _ROWS if self._deprecate_eof else _COLUMN_DEFS_EOF
        else:
            self._defs_left = n
            self._state = _COLUMN_DEFS
        return Event.COLUMN_COUNT

    def _expect_terminator(self, payload: bytes, where: str) -> None:
        if not self._terminator(payload):
            raise ProtocolError(
                f"expected EOF {where} in the response to {self._command_name()}, "
                f"got a packet starting 0x{payload[0]:02x}"
            )

    def _prepare(self, payload: bytes, state: int) -> Event:
        if state == _PREPARE_FIRST:
            ok = StmtPrepareOK.parse(payload)
            self.prepare_ok = ok
            self.column_count = ok.num_columns
            if ok.metadata_follows == 0:
                self._state = _DONE
            else:
                self._after_prepare_block(_PREPARE_FIRST)
            return Event.PREPARE_OK
        if state in (_PREPARE_PARAMS, _PREPARE_COLUMNS):
            self._defs_left -= 1
            if self._defs_left == 0:
                if self._deprecate_eof:
                    self._after_prepare_block(state)
                else:
                    self._state = state + 1  # the block's EOF
            return Event.PARAM_DEF if state == _PREPARE_PARAMS else _COLUMN_DEF_EVENT
        self._expect_terminator(payload, "after the prepared statement's definitions")
        self._read_status(payload)
        self._after_prepare_block(state - 1)
        return _EOF_EVENT

    def _after_prepare_block(self, finished: int) -> None:
        """Move to the next definition block of a COM_STMT_PREPARE response (or finish)."""
        ok = self.prepare_ok
        assert ok is not None
        if finished == _PREPARE_FIRST and ok.num_params:
            self._defs_left = ok.num_params
            self._state = _PREPARE_PARAMS
        elif finished in (_PREPARE_FIRST, _PREPARE_PARAMS) and ok.num_columns:
            self._defs_left = ok.num_columns
            self._state = _PREPARE_COLUMNS
        else:
            self.result_sets += 1
            self._state = _DONE

    def _auth(self, payload: bytes, first: int) -> Event:
        if first == 0x00:
            self._read_status(payload)
            self._state = _DONE
            return _OK_EVENT
        if first == 0xFE:
            self._state = _AUTH_CLIENT
            return Event.AUTH_SWITCH
        if first == 0x01:
            # caching_sha2_password's "fast auth success" is followed by OK, not by the client.
            if payload[1:] != b"\x03":
                self._state = _AUTH_CLIENT
            return Event.AUTH_MORE_DATA
        raise ProtocolError(
            f"unexpected packet starting 0x{first:02x} in the COM_CHANGE_USER exchange"
        )

    def _command_name(self) -> str:
        try:
            return f"COM_{Command(self.command).name}"
        except ValueError:
            return f"command 0x{self.command:02x}"


#: Rows of one size in a row worth checking as a run (see _rows_of_one_size).
_RUN = 4
_BYTE = [bytes((i,)) for i in range(256)]
#: translate() table: 1 for a first byte that may end the rows (0xFE, 0xFF), else 0
_ENDS_ROWS = bytes(1 if i >= 0xFE else 0 for i in range(256))


def _rows_of_one_size(buf: Buffer, pos: int, length: int, n: int, last: int) -> tuple[int, int]:
    """Skip the rows at ``pos`` that have the same payload ``length`` as the row before:
    (offset after them, offset of the last one), or (``pos``, ``last``) when there are none.

    Result sets often have rows of one size (fixed-width columns, the binary protocol).
    Instead of walking them one header at a time, each header byte is checked for the
    whole run at once, with slices that step from row to row (at C speed): every header
    must announce ``length``, every first byte must be a row's (not 0xFE/0xFF).
    """
    if isinstance(buf, memoryview):
        return pos, last
    stride = length + 4
    run = (n - pos) // stride
    stop = pos + run * stride
    for i, expected in ((0, length & 0xFF), (1, (length >> 8) & 0xFF), (2, length >> 16)):
        column = buf[pos + i : stop : stride]
        same = len(column) - len(column.lstrip(_BYTE[expected]))
        if same < run:
            run = same
            stop = pos + run * stride
    if run:
        ends = buf[pos + 4 : stop : stride].translate(_ENDS_ROWS).find(1)
        if ends >= 0:
            run = ends
    if not run:
        return pos, last
    return pos + run * stride, pos + (run - 1) * stride


def _ok_status(payload: bytes, capabilities: int) -> int:
    """The status flags of an OK packet (0x00- or 0xFE-headed).

    The common short OK (no info, no session state after the status and warnings) is
    read in place; anything longer goes through :meth:`OK.parse`, which also checks
    the rest of the packet.
    """
    n = len(payload)
    if n == 7 and payload[1] < 0xFB and payload[2] < 0xFB and capabilities & _PROTOCOL_41:
        return payload[3] | (payload[4] << 8)
    return int(OK.parse(payload, capabilities).status)
