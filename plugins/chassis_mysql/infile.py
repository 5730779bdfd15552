"""The LOAD DATA LOCAL INFILE exchange.

After a query such as ``LOAD DATA LOCAL INFILE 'f' ...`` the server answers with a
request (0xFB + file name) instead of a result. The client then sends the file's
content as raw packets (any sizes, sequence ids continuing from the request) and an
empty packet to end it, or just the empty packet when it will not or cannot send the
file; the server finally answers with OK or ERR.
"""

from __future__ import annotations

from dataclasses import dataclass

from chassis_mysql.constants import LOCAL_INFILE_HEADER, MAX_PAYLOAD
from chassis_mysql.errors import ProtocolError

#: Payload size a client may use for file chunks (anything up to MAX_PAYLOAD is valid).
DEFAULT_CHUNK = 16 * 1024


def is_local_infile_request(payload: bytes) -> bool:
    """True for the server's 0xFB request (only meaningful as the first response packet)."""
    return len(payload) >= 1 and payload[0] == LOCAL_INFILE_HEADER


def is_infile_end(payload: bytes) -> bool:
    """True for the client's empty packet that ends the file data."""
    return len(payload) == 0


@dataclass(frozen=True, slots=True)
class LocalInfileRequest:
    """The server asks the client for a local file (raw name bytes, as in the query)."""

    filename: bytes

    @classmethod
    def parse(cls, payload: bytes) -> LocalInfileRequest:
        """Parse the 0xFB request payload."""
        if not is_local_infile_request(payload):
            raise ProtocolError("not a LOCAL INFILE request: first byte must be 0xfb")
        return cls(bytes(payload[1:]))

    def encode(self) -> bytes:
        """The payload."""
        return bytes((LOCAL_INFILE_HEADER,)) + self.filename


def infile_payloads(data: bytes, chunk: int = DEFAULT_CHUNK) -> list[bytes]:
    """The client's payloads for sending ``data``: the chunks, then the empty terminator."""
    if not 0 < chunk <= MAX_PAYLOAD - 1:
        raise ProtocolError(f"infile chunk size must be 1..{MAX_PAYLOAD - 1}, got {chunk}")
    out = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    out.append(b"")
    return out


def join_infile_payloads(payloads: list[bytes]) -> bytes:
    """The file content from the client's payloads (which must end with the empty one)."""
    if not payloads or payloads[-1]:
        raise ProtocolError("LOCAL INFILE data must end with an empty packet")
    if any(not p for p in payloads[:-1]):
        raise ProtocolError("empty packet before the end of LOCAL INFILE data")
    return b"".join(payloads[:-1])
