"""Packet framing: the 4-byte header (3-byte payload length, 1-byte sequence id).

A logical payload of ``MAX_PAYLOAD`` (0xFFFFFF) bytes or more travels as several
physical packets: full 0xFFFFFF-byte chunks with increasing sequence ids, ended by a
shorter one (an empty one when the payload divides evenly). :func:`frame` splits,
:class:`PacketReader` joins, :func:`scan` lets a relay forward whole physical
packets without building any objects, and :func:`shift_sequence_ids` renumbers them
when the relay's two legs count differently.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from chassis_mysql.constants import HEADER_SIZE, MAX_PAYLOAD
from chassis_mysql.errors import ProtocolError

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Packet:
    """One logical packet: its payload and the sequence id of its LAST physical chunk.

    The sequence id of the last chunk is what the peer's next packet follows; the
    first chunk's id is :attr:`first_seq`.
    """

    seq: int
    payload: bytes

    @property
    def chunks(self) -> int:
        """How many physical packets carried this payload."""
        return len(self.payload) // MAX_PAYLOAD + 1

    @property
    def first_seq(self) -> int:
        """Sequence id of the first physical chunk (the one to pass to :func:`frame`)."""
        return (self.seq - self.chunks + 1) & 0xFF


def header(length: int, seq: int) -> bytes:
    """The 4-byte header of one physical packet."""
    if not 0 <= length <= MAX_PAYLOAD:
        raise ProtocolError(f"physical packet length {length} outside 0..{MAX_PAYLOAD}")
    return bytes((length & 0xFF, (length >> 8) & 0xFF, length >> 16, seq & 0xFF))


def frame(payload: Buffer, seq: int) -> bytes:
    """Frame a logical payload starting at sequence id ``seq`` (ids wrap at 256).

    Payloads of 16 MiB - 1 bytes or more are split into 0xFFFFFF-byte chunks; when the
    last chunk is exactly 0xFFFFFF bytes an empty packet follows so the reader knows
    the payload ended.
    """
    n = len(payload)
    if n < MAX_PAYLOAD:
        return bytes((n & 0xFF, (n >> 8) & 0xFF, n >> 16, seq & 0xFF)) + bytes(payload)
    view = memoryview(payload)
    parts: list[bytes | memoryview] = []
    pos = 0
    while True:
        chunk = view[pos : pos + MAX_PAYLOAD]
        parts.append(header(len(chunk), seq))
        parts.append(chunk)
        seq += 1
        pos += MAX_PAYLOAD
        if len(chunk) < MAX_PAYLOAD:
            break
    return b"".join(parts)


def frame_next_seq(payload_length: int, seq: int) -> int:
    """The sequence id that follows a payload of this length framed from ``seq``."""
    return (seq + payload_length // MAX_PAYLOAD + 1) & 0xFF


def frame_all(payloads: list[bytes], seq: int) -> tuple[bytes, int]:
    """Logical payloads framed one after the other from ``seq``, and the sequence id
    that follows them (a response written in one go)."""
    out = []
    for payload in payloads:
        out.append(frame(payload, seq))
        seq = frame_next_seq(len(payload), seq)
    return b"".join(out), seq


def is_one_packet(buf: Buffer) -> bool:
    """True when ``buf`` is exactly one physical packet: a header and all of its payload.

    Lets a relay that reads a whole command in one buffer slice the payload out instead
    of running a :class:`PacketReader` (the common case of a short query).
    """
    n = len(buf)
    return n >= 4 and buf[0] | (buf[1] << 8) | (buf[2] << 16) == n - 4


def scan(buf: Buffer, pos: int = 0) -> int:
    """Offset just past the last complete physical packet starting at ``pos``.

    The hot path of a relay: ``end = scan(data)`` then forward ``data[:end]`` and keep
    ``data[end:]`` for the next read. No objects are built; a split logical packet is
    just several physical packets here.
    """
    n = len(buf)
    while pos + 4 <= n:
        end = pos + 4 + (buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16))
        if end > n:
            break
        pos = end
    return pos


def shift_sequence_ids(buf: Buffer, end: int, offset: int) -> bytes:
    """``buf[:end]`` with the sequence id of each physical packet moved by ``offset``
    (mod 256).

    For a relay whose two legs count sequence ids differently (the proxy sent packets
    of its own to one of them): ``end`` is what :func:`scan` (or
    :meth:`~chassis_mysql.response.ResponseTracker.scan`) returned, so only whole
    packets are touched; an ``end`` inside a packet raises ProtocolError. One copy, and
    the headers walked as :func:`scan` walks them, except that a run of packets of one
    size (rows of fixed width) is checked and renumbered with slices that step from
    header to header, at C speed.
    """
    offset &= 0xFF
    out = bytearray(buf[:end] if end < len(buf) else buf)
    if not offset:
        return bytes(out)
    n = len(out)
    pos = 0
    length = -1
    while pos + 4 <= n:
        size = out[pos] | (out[pos + 1] << 8) | (out[pos + 2] << 16)
        if size != length:
            out[pos + 3] = (out[pos + 3] + offset) & 0xFF
            pos += 4 + size
            length = size
            continue
        # The same size as the packet before: shift the ids of the whole run at once.
        stride = size + 4
        run = min((n - pos) // stride, _RUN_WINDOW)
        for i, expected in ((0, size & 0xFF), (1, (size >> 8) & 0xFF), (2, size >> 16)):
            column = out[pos + i : pos + run * stride : stride]
            run = min(run, len(column) - len(column.lstrip(_BYTE[expected])))
        stop = pos + run * stride
        out[pos + 3 : stop : stride] = out[pos + 3 : stop : stride].translate(_SHIFTED[offset])
        pos = stop
    if pos != n:
        raise ProtocolError(f"shift_sequence_ids: offset {end} is not the end of a packet")
    return bytes(out)


#: Packets of one size looked at per slice (bounds the work when a run is short).
_RUN_WINDOW = 256
_BYTE = [bytes((i,)) for i in range(256)]
#: For each offset, a table mapping a sequence id to that id plus the offset (mod 256).
_SHIFTED = [bytes((i + k) & 0xFF for i in range(256)) for k in range(256)]


class PacketReader:
    """Feed it bytes as they arrive; iterate it for complete logical packets.

    Split payloads (16 MiB and more) are joined. ``max_payload`` (optional) bounds a
    logical payload: a peer announcing more raises ProtocolError as soon as the header
    shows it, before the bytes arrive. :meth:`drain` hands back the raw bytes not yet
    returned as packets, so a connection can switch from parsing to relaying.
    """

    __slots__ = ("_buf", "_logical", "_scan", "_start", "max_payload")

    def __init__(self, max_payload: int | None = None) -> None:
        self._buf = bytearray()
        self._start = 0  # first raw byte of the packet being assembled
        self._scan = 0  # offset past the full-size chunks of it seen so far
        self._logical = 0  # payload bytes in those chunks
        self.max_payload = max_payload

    def feed(self, data: Buffer) -> None:
        """Append bytes read from the peer."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Raw bytes held that are not part of a returned packet."""
        return len(self._buf) - self._start

    def drain(self) -> bytes:
        """Return and forget every raw byte not yet returned as a packet (headers included)."""
        data = bytes(self._buf[self._start :])
        self._buf.clear()
        self._start = self._scan = self._logical = 0
        return data

    def next_packet(self) -> Packet | None:
        """The next complete logical packet, or ``None`` until more bytes are fed."""
        buf = self._buf
        n = len(buf)
        pos = self._scan if self._scan > self._start else self._start
        while pos + HEADER_SIZE <= n:
            length = buf[pos] | (buf[pos + 1] << 8) | (buf[pos + 2] << 16)
            if self.max_payload is not None and self._logical + length > self.max_payload:
                raise ProtocolError(
                    f"packet payload of at least {self._logical + length} bytes exceeds the "
                    f"limit of {self.max_payload} bytes (max_allowed_packet)"
                )
            end = pos + HEADER_SIZE + length
            if end > n:
                break
            if length == MAX_PAYLOAD:
                self._logical += length
                pos = self._scan = end
                continue
            seq = buf[pos + 3]
            start = self._start
            if pos == start:
                payload = bytes(buf[start + HEADER_SIZE : end])
            else:
                view = memoryview(buf)
                parts = []
                p = start
                while p < end:
                    size = buf[p] | (buf[p + 1] << 8) | (buf[p + 2] << 16)
                    parts.append(view[p + HEADER_SIZE : p + HEADER_SIZE + size])
                    p += HEADER_SIZE + size
                payload = b"".join(parts)
                del parts, view
            self._start = self._scan = end
            self._logical = 0
            if end == n:
                buf.clear()
                self._start = self._scan = 0
            elif end > 65536 and end * 2 > n:
                del buf[:end]
                self._start = self._scan = 0
            return Packet(seq, payload)
        return None

    def __iter__(self) -> Iterator[Packet]:
        while (packet := self.next_packet()) is not None:
            yield packet
