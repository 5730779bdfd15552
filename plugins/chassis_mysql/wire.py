"""The protocol's basic data types: fixed and length-encoded integers and strings.

Functions take ``(buf, pos)`` and return ``(value, new_pos)`` so parsers can walk a
payload without slicing it; :class:`Reader` wraps the same idea in a cursor object for
parsers that read many fields. Both raise :class:`ProtocolError` on truncation, never
``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from chassis_mysql.errors import ProtocolError

Buffer = bytes | bytearray | memoryview

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

#: First byte of a length-encoded integer that means SQL NULL (in text rows).
LENENC_NULL = 0xFB


def _truncated(need: int, pos: int, have: int) -> ProtocolError:
    return ProtocolError(
        f"truncated packet: need {need} byte(s) at offset {pos}, have {max(have, 0)}"
    )


def read_lenenc_int(buf: Buffer, pos: int = 0) -> tuple[int | None, int]:
    """Read a length-encoded integer at ``pos``; ``None`` stands for the 0xFB NULL marker.

    0xFF is not a valid first byte (it marks an ERR packet) and raises ProtocolError.
    """
    n = len(buf)
    if pos >= n:
        raise _truncated(1, pos, n - pos)
    first = buf[pos]
    if first < 0xFB:
        return first, pos + 1
    if first == 0xFB:
        return None, pos + 1
    if first == 0xFC:
        size = 2
    elif first == 0xFD:
        size = 3
    elif first == 0xFE:
        size = 8
    else:
        raise ProtocolError(f"invalid length-encoded integer marker 0xff at offset {pos}")
    end = pos + 1 + size
    if end > n:
        raise _truncated(size, pos + 1, n - pos - 1)
    return int.from_bytes(buf[pos + 1 : end], "little"), end


def write_lenenc_int(n: int) -> bytes:
    """Encode ``n`` (0 <= n < 2**64) in the shortest length-encoded form."""
    if n < 0:
        raise ProtocolError(f"length-encoded integer cannot be negative: {n}")
    if n < 0xFB:
        return bytes((n,))
    if n < 1 << 16:
        return b"\xfc" + n.to_bytes(2, "little")
    if n < 1 << 24:
        return b"\xfd" + n.to_bytes(3, "little")
    if n < 1 << 64:
        return b"\xfe" + n.to_bytes(8, "little")
    raise ProtocolError(f"length-encoded integer too large: {n}")


def read_lenenc_str(buf: Buffer, pos: int = 0) -> tuple[bytes | None, int]:
    """Read a length-encoded string; ``None`` when its length is the NULL marker."""
    length, pos = read_lenenc_int(buf, pos)
    if length is None:
        return None, pos
    end = pos + length
    if end > len(buf):
        raise _truncated(length, pos, len(buf) - pos)
    return bytes(buf[pos:end]), end


def write_lenenc_str(b: bytes) -> bytes:
    """Encode bytes as a length-encoded string."""
    return write_lenenc_int(len(b)) + bytes(b)


def read_nul_str(buf: Buffer, pos: int = 0) -> tuple[bytes, int]:
    """Read a NUL-terminated string; returns it without the NUL and the offset past it."""
    if isinstance(buf, memoryview):
        buf = buf.tobytes()
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise ProtocolError(f"missing NUL terminator for string at offset {pos}")
    return bytes(buf[pos:end]), end + 1


def command_body(payload: bytes, command: IntEnum) -> Reader:
    """A :class:`Reader` just past the command byte, once the payload is that command
    (``COM_<name>``); otherwise ProtocolError naming what was expected and what came."""
    if not payload or payload[0] != command:
        got = f"0x{payload[0]:02x}" if payload else "an empty packet"
        raise ProtocolError(f"expected COM_{command.name} (0x{command:02x}), got {got}")
    return Reader(payload, 1)


def decode_text(raw: bytes, what: str, encoding: str = "utf-8") -> str:
    """Decode protocol text, turning UnicodeDecodeError into ProtocolError."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not valid {encoding}: {exc.reason}") from None


class Reader:
    """A cursor over one payload that reads protocol fields in order.

    Every method raises :class:`ProtocolError` instead of reading past the end, which
    lets a parser be written as a straight list of reads.
    """

    __slots__ = ("buf", "pos")

    def __init__(self, buf: Buffer, pos: int = 0) -> None:
        self.buf: bytes = bytes(buf) if not isinstance(buf, bytes) else buf
        self.pos = pos

    def remaining(self) -> int:
        """Number of bytes not read yet."""
        return len(self.buf) - self.pos

    def at_end(self) -> bool:
        """True when every byte has been read."""
        return self.pos >= len(self.buf)

    def peek(self) -> int:
        """The next byte, without consuming it."""
        if self.pos >= len(self.buf):
            raise _truncated(1, self.pos, 0)
        return self.buf[self.pos]

    def _need(self, size: int) -> int:
        pos = self.pos
        if pos + size > len(self.buf):
            raise _truncated(size, pos, len(self.buf) - pos)
        self.pos = pos + size
        return pos

    def u8(self) -> int:
        """A 1-byte unsigned integer."""
        pos = self._need(1)
        return self.buf[pos]

    def u16(self) -> int:
        """A 2-byte little-endian unsigned integer."""
        pos = self._need(2)
        return int(_U16.unpack_from(self.buf, pos)[0])

    def u24(self) -> int:
        """A 3-byte little-endian unsigned integer."""
        pos = self._need(3)
        return int.from_bytes(self.buf[pos : pos + 3], "little")

    def u32(self) -> int:
        """A 4-byte little-endian unsigned integer."""
        pos = self._need(4)
        return int(_U32.unpack_from(self.buf, pos)[0])

    def u64(self) -> int:
        """An 8-byte little-endian unsigned integer."""
        pos = self._need(8)
        return int(_U64.unpack_from(self.buf, pos)[0])

    def fixed(self, n: int) -> bytes:
        """Exactly ``n`` bytes."""
        if n < 0:
            raise ProtocolError(f"negative field length {n} at offset {self.pos}")
        pos = self._need(n)
        return self.buf[pos : pos + n]

    def lenenc_int(self) -> int | None:
        """A length-encoded integer (``None`` for the NULL marker)."""
        value, self.pos = read_lenenc_int(self.buf, self.pos)
        return value

    def lenenc_int_nonnull(self, what: str = "length-encoded integer") -> int:
        """A length-encoded integer where NULL is not allowed."""
        pos = self.pos
        value, self.pos = read_lenenc_int(self.buf, pos)
        if value is None:
            raise ProtocolError(f"unexpected NULL marker for {what} at offset {pos}")
        return value

    def lenenc_str(self) -> bytes | None:
        """A length-encoded string (``None`` for the NULL marker)."""
        value, self.pos = read_lenenc_str(self.buf, self.pos)
        return value

    def lenenc_str_nonnull(self, what: str = "length-encoded string") -> bytes:
        """A length-encoded string where NULL is not allowed."""
        pos = self.pos
        value, self.pos = read_lenenc_str(self.buf, pos)
        if value is None:
            raise ProtocolError(f"unexpected NULL marker for {what} at offset {pos}")
        return value

    def nul_str(self) -> bytes:
        """A NUL-terminated string, without its NUL."""
        value, self.pos = read_nul_str(self.buf, self.pos)
        return value

    def rest(self) -> bytes:
        """Every byte not read yet (possibly empty)."""
        pos = self.pos
        self.pos = len(self.buf)
        return self.buf[pos:]

    def expect_end(self, what: str) -> None:
        """Raise ProtocolError when bytes are left over after a complete ``what``."""
        if self.pos != len(self.buf):
            raise ProtocolError(
                f"{len(self.buf) - self.pos} unexpected trailing byte(s) after {what}"
            )
