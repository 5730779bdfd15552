"""A whole simple response in one buffer, summarised in one pass: rows, affected rows, error.

A relay that forwards bytes untouched and only wants figures about each answer (the
proxy's query digests) meets the same few shapes for almost every query: an OK, an ERR,
or one result set, all in the one buffer the server's read returned. :func:`summarize`
recognises exactly those, reading only packet headers and a few bytes, and answers None
for anything else (several results, a partial buffer, LOCAL INFILE, cursors...): the
caller then follows the response with :class:`chassis_mysql.response.ResponseTracker`,
which stays the reference (the tests check that both agree).
"""

from __future__ import annotations

from chassis_mysql.constants import MAX_PAYLOAD, Capability, ServerStatus

_MORE = int(ServerStatus.MORE_RESULTS_EXISTS)
_CURSOR = int(ServerStatus.CURSOR_EXISTS)
_DEPRECATE_EOF = int(Capability.DEPRECATE_EOF)
_PROTOCOL_41 = int(Capability.PROTOCOL_41)
_CACHE_META = int(Capability.MARIADB_CLIENT_CACHE_METADATA | Capability.OPTIONAL_RESULTSET_METADATA)

#: (rows sent, affected rows, error number or 0)
Summary = tuple[int, int, int]
#: A :data:`Summary` and where its rows begin (0: not a result set).
Located = tuple[int, int, int, int]


def summarize(buf: bytes, capabilities: int) -> Summary | None:
    """The figures of the response to a COM_QUERY or COM_STMT_EXECUTE when ``buf`` holds
    all of it and nothing more and it is an OK, an ERR or a single result set; else None."""
    found = locate(buf, capabilities)
    return None if found is None else found[:3]


def locate(buf: bytes, capabilities: int) -> Located | None:
    """:func:`summarize`, and where the rows begin in ``buf`` (0 for an OK or an ERR).

    The bytes before the rows (column count, definitions, their EOF) are what the same
    statement answers with each time: a caller that keeps them (``buf[:at]``) and finds
    a later answer starting with the same bytes may call :func:`rows_from` at that
    position instead; the figures are the same.
    """
    n = len(buf)
    if n < 5 or not capabilities & _PROTOCOL_41:
        return None
    length = buf[0] | (buf[1] << 8) | (buf[2] << 16)
    end = 4 + length
    first = buf[4]
    if first == 0x00:  # OK: a short one, alone in the buffer
        if end != n or length != 7 or buf[5] >= 0xFB or buf[6] >= 0xFB or buf[7] & _MORE:
            return None
        return 0, buf[5], 0, 0
    if first == 0xFF:  # ERR (a MariaDB progress report has 0xFFFF)
        if end != n or length < 3 or (buf[5] == 0xFF and buf[6] == 0xFF):
            return None
        return 0, 0, buf[5] | (buf[6] << 8), 0
    if first >= 0xFB or end > n:  # LOCAL INFILE, a long column count, an incomplete packet
        return None
    defs = first
    if capabilities & _CACHE_META:
        if length != 2:
            return None
        if buf[5] == 0:
            defs = 0  # the client has the metadata already
    elif length != 1:
        return None
    deprecate_eof = capabilities & _DEPRECATE_EOF
    pos = end
    if not deprecate_eof:
        defs += 1  # the EOF after the definitions
    last = pos
    for _ in range(defs):  # column definitions (and their EOF): skipped by their headers
        if pos + 4 >= n:
            return None
        last = pos
        pos += 4 + (buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16))
    if pos > n:
        return None
    if not deprecate_eof:
        size = pos - last - 4  # the EOF's payload
        if buf[last + 4] != 0xFE or size >= 9 or (size >= 5 and buf[last + 7] & _CURSOR):
            return None  # not the EOF expected, or a cursor (its rows come with COM_STMT_FETCH)
    found = rows_from(buf, pos, deprecate_eof)
    return None if found is None else (found[0], 0, found[2], pos)


def rows_from(buf: bytes, pos: int, deprecate_eof: int) -> Summary | None:
    """The figures of a result set whose rows begin at ``pos`` and whose end (its
    terminator, or an ERR) is the end of ``buf``; else None. ``deprecate_eof``: whether
    the session has CLIENT_DEPRECATE_EOF (the terminator is an OK with the 0xFE header)."""
    n = len(buf)
    rows = 0
    while pos + 4 < n:
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        end = pos + 4 + length
        if end > n or length == MAX_PAYLOAD:
            return None
        first = buf[pos + 4]
        if first == 0xFE and (length < 9 if not deprecate_eof else length < MAX_PAYLOAD):
            # the terminator: the last packet of the buffer, and no result follows
            if end != n:
                return None
            if deprecate_eof:
                if length != 7 or buf[pos + 5] >= 0xFB or buf[pos + 6] >= 0xFB:
                    return None
                status = buf[pos + 7]
            else:
                status = buf[pos + 7] if length >= 5 else 0
            return None if status & _MORE else (rows, 0, 0)
        if first == 0xFF:  # an ERR instead of the next row ends the response
            if end != n or length < 3:
                return None
            return rows, 0, buf[pos + 5] | (buf[pos + 6] << 8)
        rows += 1
        pos = end
    return None


def outline(buf: bytes, found: Located) -> tuple[bytes, bytes] | None:
    """For a result set of at most one row that :func:`locate` found in ``buf``: ``(head,
    tail)``, its bytes up to the row's first payload byte and its terminator. Any buffer
    of the same length that starts with ``head`` and ends with ``tail`` has the same
    figures (locate reads nothing else of it), so a caller that meets the same answer
    shape again (a point select) need not walk it. None for any other answer."""
    rows, _affected, error, at = found
    if not at or error or rows > 1:
        return None
    if rows == 0:
        return buf[:at], buf[at:]
    last = at + 4 + (buf[at] | (buf[at + 1] << 8) | (buf[at + 2] << 16))
    return buf[:at + 5], buf[last:]


#: :func:`split`'s answer: the payloads, the index of the first row's, and whether the
#: sequence ids count up by one from the first packet's.
Split = tuple[list[bytes], int, bool]


def split(buf: bytes, at: int) -> Split | None:
    """The payloads of a whole answer that :func:`locate` found in ``buf`` (``at``: where
    its rows begin, 0 for an OK or an ERR), the index of the first row among them, and
    whether the sequence ids count up by one from the first (then ``buf`` is what framing
    the payloads again from that id gives). None when a packet is split (MAX_PAYLOAD
    bytes): the packet reader joins those."""
    n = len(buf)
    payloads: list[bytes] = []
    append = payloads.append
    pos = 0
    first_row = 0
    seq = buf[3]
    consecutive = True
    while pos < n:
        if pos == at:
            first_row = len(payloads)
        length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
        if length == MAX_PAYLOAD:
            return None
        if buf[pos + 3] != seq:
            consecutive = False
        seq = (seq + 1) & 0xFF
        end = pos + 4 + length
        append(buf[pos + 4:end])
        pos = end
    return payloads, first_row, consecutive
