"""The one exception the codec raises for bytes that are not valid MySQL protocol.

Every parser in :mod:`chassis_mysql` turns truncation, bad markers, impossible
lengths and undecodable text into :class:`ProtocolError`, so a caller that reads
from an untrusted peer needs exactly one ``except`` clause. It subclasses
``ValueError`` because malformed input is a bad value, not a bug in the caller.
"""

from __future__ import annotations


class ProtocolError(ValueError):
    """Bytes from a peer (or values given to an encoder) break the MySQL protocol.

    The message says what was expected and where, e.g. ``"truncated packet: need 4
    bytes at offset 10, have 2"``. A proxy should answer the peer with an ERR packet
    (or drop the connection) and log the message once.
    """
