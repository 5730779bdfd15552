"""Which capabilities the proxy lets through on each leg of a login.

A relay cannot decompress, so compression is never offered to clients nor asked of
servers; with a script loaded the proxy reads results itself and scripts build them in
the classic format, so the flags that change their shape are not offered either. TLS is
each leg's own business: the client is offered it when the proxy has a certificate, the
server is asked for it when the backend leg is to be encrypted.

Plain ints throughout: IntFlag's operators are Python code, about 100 times the cost of
an int's, and these run at every login.
"""

from __future__ import annotations

from chassis_mysql.constants import Capability
from chassis_mysql.handshake import HandshakeV10, handshake_with_capabilities

SSL = int(Capability.SSL)
#: Capabilities never offered to clients: the relay cannot decompress.
MASKED_CAPABILITIES = int(Capability.COMPRESS | Capability.ZSTD_COMPRESSION_ALGORITHM)

#: Capabilities that change the shape of results, masked when a script is loaded: the
#: proxy then reads results itself and scripts build answers in the classic format
#: (EOF packets, full metadata), as MySQL Proxy 0.8's scripts expect.
SCRIPTED_MASKED_CAPABILITIES = int(
    Capability.DEPRECATE_EOF
    | Capability.MARIADB_CLIENT_CACHE_METADATA
    | Capability.MARIADB_CLIENT_EXTENDED_METADATA
    | Capability.MARIADB_CLIENT_COM_MULTI
    | Capability.MARIADB_CLIENT_STMT_BULK_OPERATIONS
    | Capability.MARIADB_CLIENT_BULK_UNIT_RESULTS
    | Capability.MARIADB_CLIENT_PROGRESS
)


def offered(hs: HandshakeV10, greeting: bytes | None, scripted: bool, tls_offered: bool) -> bytes:
    """The server's handshake as clients get it. ``greeting``: the bytes ``hs`` was parsed
    from, patched in place (the fast path), or None to encode ``hs`` (a new challenge)."""
    caps = int(hs.capabilities) & ~(MASKED_CAPABILITIES | SSL)
    if scripted:
        caps &= ~SCRIPTED_MASKED_CAPABILITIES
    if tls_offered:
        caps |= SSL
    if greeting is not None:
        return handshake_with_capabilities(greeting, caps)
    return hs.with_capabilities(caps).encode()


def to_server(client_capabilities: int, tls: bool) -> int:
    """What the server is told the client can do: the client's flags with our leg's TLS bit."""
    caps = client_capabilities & ~(MASKED_CAPABILITIES | SSL)
    return caps | SSL if tls else caps
