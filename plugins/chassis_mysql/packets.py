"""The server's generic responses: OK, ERR and EOF.

OK is also the end of a result set when CLIENT_DEPRECATE_EOF is negotiated; it then
starts with 0xFE instead of 0x00 (``OK.header``). Text fields (info, error message)
are decoded as UTF-8 with ``surrogateescape`` so any bytes survive a round trip.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from chassis_mysql.constants import (
    EOF_HEADER,
    ERR_HEADER,
    OK_HEADER,
    Capability,
    ServerStatus,
    SessionStateType,
)
from chassis_mysql.errors import ProtocolError
from chassis_mysql.wire import Reader, write_lenenc_int, write_lenenc_str

_P41 = int(Capability.PROTOCOL_41)
_DEFAULT_CAPS = Capability.PROTOCOL_41 | Capability.TRANSACTIONS
#: The headers OK.parse takes: OK, and the 0xFE-headed OK ending a DEPRECATE_EOF result.
_OK_HEADERS = frozenset({0x00, 0xFE})
#: Error code of MariaDB's progress report packets (0xFF 0xFF 0xFF ...): not errors.
PROGRESS_ERROR_CODE = 0xFFFF


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def is_ok(payload: bytes) -> bool:
    """True for an OK packet (0x00 header, at least 7 bytes). Only meaningful where an
    OK may appear: a binary result row also starts with 0x00."""
    return len(payload) >= 7 and payload[0] == OK_HEADER


def is_err(payload: bytes) -> bool:
    """True for an ERR packet (0xFF header), including MariaDB progress reports."""
    return len(payload) >= 1 and payload[0] == ERR_HEADER


def is_progress(payload: bytes) -> bool:
    """True for a MariaDB progress report (0xFF with error code 0xFFFF): not a real error."""
    return len(payload) >= 3 and payload[0] == ERR_HEADER and payload[1] == payload[2] == 0xFF


def is_eof(payload: bytes) -> bool:
    """True for a classic EOF packet: 0xFE header and shorter than 9 bytes."""
    return 0 < len(payload) < 9 and payload[0] == EOF_HEADER


def eof_warnings(payload: bytes) -> int:
    """The warning count of a classic EOF packet (:func:`is_eof`); 0 for the 1-byte one of
    pre-4.1 servers. Cheaper than :meth:`EOF.parse` where only the count is wanted."""
    return payload[1] | payload[2] << 8 if len(payload) >= 5 else 0


def is_ok_eof(payload: bytes) -> bool:
    """True for the 0xFE-headed OK that ends a result set under CLIENT_DEPRECATE_EOF.

    A text row can start with 0xFE only for a field of 16 MiB or more, so any 0xFE
    packet shorter than 0xFFFFFF bytes is the terminator.
    """
    return 0 < len(payload) < 0xFFFFFF and payload[0] == EOF_HEADER


@dataclass(frozen=True, slots=True)
class SessionStateChange:
    """One entry of an OK packet's session-state block (CLIENT_SESSION_TRACK).

    ``data`` is the entry's raw body; :meth:`values` splits it into its
    length-encoded strings (e.g. name and value for SYSTEM_VARIABLES, the schema name
    for SCHEMA).
    """

    type: int
    data: bytes

    def values(self) -> list[bytes]:
        """The length-encoded strings the entry's body holds."""
        r = Reader(self.data)
        out: list[bytes] = []
        while not r.at_end():
            out.append(r.lenenc_str_nonnull("session state value"))
        return out


@dataclass(frozen=True, slots=True)
class OK:
    """An OK packet (or the 0xFE-headed OK that ends a result set with DEPRECATE_EOF)."""

    affected_rows: int = 0
    last_insert_id: int = 0
    status: ServerStatus = ServerStatus.AUTOCOMMIT
    warnings: int = 0
    info: str = ""
    #: Raw session-state block (SESSION_TRACK and SESSION_STATE_CHANGED), or None.
    session_state: bytes | None = None
    header: int = OK_HEADER

    @classmethod
    def parse(cls, payload: bytes, capabilities: int = _DEFAULT_CAPS) -> OK:
        """Parse an OK payload under the negotiated capabilities."""
        if (len(payload) == 7 and payload[0] in _OK_HEADERS and payload[1] < 0xFB
                and payload[2] < 0xFB and int(capabilities) & _P41):
            # The common OK (one-byte counts, no info, no session state) read in place:
            # what the general path below gives, without a Reader and IntFlag operators.
            return cls(payload[1], payload[2], ServerStatus(payload[3] | payload[4] << 8),
                       payload[5] | payload[6] << 8, "", None, payload[0])
        r = Reader(payload)
        header = r.u8()
        if header not in (OK_HEADER, EOF_HEADER):
            raise ProtocolError(f"not an OK packet: header 0x{header:02x}")
        affected = r.lenenc_int_nonnull("affected rows")
        insert_id = r.lenenc_int_nonnull("last insert id")
        status = warnings = 0
        if capabilities & _P41:
            status = r.u16()
            warnings = r.u16()
        elif capabilities & Capability.TRANSACTIONS:
            status = r.u16()
        info = b""
        state = None
        if capabilities & Capability.SESSION_TRACK:
            if not r.at_end():
                info = r.lenenc_str_nonnull("OK info")
                if status & ServerStatus.SESSION_STATE_CHANGED and not r.at_end():
                    state = r.lenenc_str_nonnull("session state")
        else:
            info = r.rest()
        return cls(affected, insert_id, ServerStatus(status), warnings, _text(info), state, header)

    def encode(self, capabilities: int = _DEFAULT_CAPS) -> bytes:
        """The payload under the negotiated capabilities."""
        out = [
            bytes((self.header,)),
            write_lenenc_int(self.affected_rows),
            write_lenenc_int(self.last_insert_id),
        ]
        if capabilities & _P41:
            out.append(struct.pack("<HH", int(self.status), self.warnings))
        elif capabilities & Capability.TRANSACTIONS:
            out.append(struct.pack("<H", int(self.status)))
        info = _raw(self.info)
        if capabilities & Capability.SESSION_TRACK:
            if info or self.session_state is not None:
                out.append(write_lenenc_str(info))
            if self.session_state is not None:
                out.append(write_lenenc_str(self.session_state))
        else:
            out.append(info)
        return b"".join(out)

    def session_changes(self) -> list[SessionStateChange]:
        """The entries of the session-state block (empty when there is none)."""
        if not self.session_state:
            return []
        r = Reader(self.session_state)
        changes = []
        while not r.at_end():
            kind = r.u8()
            changes.append(SessionStateChange(kind, r.lenenc_str_nonnull("session state entry")))
        return changes

    def system_variables(self) -> dict[bytes, bytes]:
        """The tracked system variables this OK reports changed (``session_track_system_variables``):
        name to new value, the last entry winning. MariaDB's ``last_gtid`` comes this way,
        the GTID the statement's transaction was binlogged with (read-your-writes)."""
        found: dict[bytes, bytes] = {}
        for change in self.session_changes():
            if change.type == SessionStateType.SYSTEM_VARIABLES:
                values = change.values()
                if len(values) >= 2:
                    found[values[0]] = values[1]
        return found

    def schema_change(self) -> bytes | None:
        """The new default database if this OK reports one (``USE db``), else None."""
        for change in self.session_changes():
            if change.type == SessionStateType.SCHEMA:
                values = change.values()
                if values:
                    return values[0]
        return None


@dataclass(frozen=True, slots=True)
class ERR:
    """An ERR packet. ``sql_state`` is None when the server sent no '#' marker
    (errors before the capabilities are known, e.g. "host is not allowed")."""

    error_code: int
    message: str
    sql_state: str | None = "HY000"

    @classmethod
    def parse(cls, payload: bytes, capabilities: int = _DEFAULT_CAPS) -> ERR:
        """Parse an ERR payload."""
        r = Reader(payload)
        if r.u8() != ERR_HEADER:
            raise ProtocolError("not an ERR packet: header must be 0xff")
        code = r.u16()
        state = None
        if code != PROGRESS_ERROR_CODE and not r.at_end() and r.peek() == 0x23:  # '#'
            r.u8()
            state = r.fixed(5).decode("latin-1")
        return cls(code, _text(r.rest()), state)

    def encode(self, capabilities: int = _DEFAULT_CAPS) -> bytes:
        """The payload (the SQL state is written only under CLIENT_PROTOCOL_41)."""
        out = [struct.pack("<BH", ERR_HEADER, self.error_code & 0xFFFF)]
        if self.sql_state is not None and capabilities & _P41:
            state = self.sql_state.encode("latin-1", "replace")
            if len(state) != 5:
                raise ProtocolError(f"SQL state must be 5 characters, got {self.sql_state!r}")
            out.append(b"#" + state)
        out.append(_raw(self.message))
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class EOF:
    """A classic EOF packet (0xFE; warnings and status under PROTOCOL_41).

    ``short`` marks the 1-byte pre-4.1 form, which some old servers still send.
    """

    warnings: int = 0
    status: ServerStatus = ServerStatus.AUTOCOMMIT
    short: bool = False

    @classmethod
    def parse(cls, payload: bytes, capabilities: int = _DEFAULT_CAPS) -> EOF:
        """Parse an EOF payload."""
        if not is_eof(payload):
            raise ProtocolError("not an EOF packet: needs 0xfe header and under 9 bytes")
        if len(payload) == 1:
            return cls(short=True)
        r = Reader(payload, 1)
        warnings = r.u16()
        status = r.u16()
        return cls(warnings, ServerStatus(status))

    def encode(self, capabilities: int = _DEFAULT_CAPS) -> bytes:
        """The payload."""
        if self.short or not capabilities & _P41:
            return b"\xfe"
        return struct.pack("<BHH", EOF_HEADER, self.warnings, int(self.status))


def ok_packet(
    affected_rows: int = 0,
    last_insert_id: int = 0,
    status: int = ServerStatus.AUTOCOMMIT,
    warnings: int = 0,
    info: str = "",
    capabilities: int = _DEFAULT_CAPS,
) -> bytes:
    """An OK payload, for answering a client without a server."""
    return OK(affected_rows, last_insert_id, ServerStatus(status), warnings, info).encode(
        capabilities
    )


def err_packet(
    code: int, message: str, sqlstate: str = "HY000", capabilities: int = _DEFAULT_CAPS
) -> bytes:
    """An ERR payload, e.g. ``err_packet(1045, "Access denied", "28000")``."""
    return ERR(code, message, sqlstate).encode(capabilities)


def eof_packet(
    warnings: int = 0, status: int = ServerStatus.AUTOCOMMIT, capabilities: int = _DEFAULT_CAPS
) -> bytes:
    """An EOF payload."""
    return EOF(warnings, ServerStatus(status)).encode(capabilities)


def status_of(payload: bytes, capabilities: int = _DEFAULT_CAPS) -> ServerStatus:
    """Server status flags of a terminator: an OK (either header) or a classic EOF.

    Under CLIENT_DEPRECATE_EOF every 0xFE terminator is an OK; otherwise a 0xFE packet
    shorter than 9 bytes is a classic EOF (a short pre-4.1 EOF has status 0).
    """
    if (
        payload[:1] == b"\xfe"
        and not capabilities & Capability.DEPRECATE_EOF
        and is_eof(payload)
    ):
        if len(payload) < 5:
            return ServerStatus(0)
        return ServerStatus(payload[3] | (payload[4] << 8))
    return OK.parse(payload, capabilities).status
