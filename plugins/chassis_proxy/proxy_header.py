"""The PROXY protocol on the proxy's two legs (the codec is :mod:`chassis.proxy_protocol`).

Client leg: a MySQL server speaks first, so a peer in ``--proxy-protocol-networks`` (a
load balancer) must send its header before the proxy connects a backend and relays the
greeting: :func:`read_client_header` waits for it (within ``--proxy-login-timeout``),
and the client it names becomes ``proxy.connection.client`` for the logs, the scripts
and the backend header. Every other peer is never waited for: :func:`refuse_headers`
only watches its first bytes, and a PROXY header there ends the connection.

Backend leg (``--proxy-backend-proxy-protocol``): :func:`backend_header` is written
first on every server connection the proxy opens for a client, naming that client, so
the server's host-based grants see it; such a connection is pooled for clients of the
same address only (:func:`origin`). The proxy's own connections (health probes) send
:func:`local_header`.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from chassis.proxy_protocol import (
    V1_PREFIX,
    V2_SIGNATURE,
    Endpoint,
    HeaderReader,
    ProxyHeader,
    ProxyProtocolError,
    encode,
    looks_like_header,
    trusts,
)
from chassis_proxy.channel import PacketChannel
from chassis_proxy.hooks import AddressInfo, PeerInfo
from chassis_proxy.settings import ProxySettings


def expects_header(settings: ProxySettings, peer: AddressInfo | None) -> bool:
    """Whether this peer must start with a header: it is in --proxy-protocol-networks."""
    return (bool(settings.proxy_protocol_networks) and peer is not None and peer.family != socket.AF_UNIX
            and trusts(settings.proxy_protocol_networks, peer.address))


def read_client_header(ch: PacketChannel) -> asyncio.Future[ProxyHeader]:
    """The header a trusted peer starts with, or ProxyProtocolError for anything else.

    Call it as the connection is made, before any byte can arrive: from then on the
    channel's bytes go to the header's reader; those after it go on to the packets.
    """
    reader = HeaderReader()
    done: asyncio.Future[ProxyHeader] = ch.event_loop().create_future()

    def feed(data: bytes) -> None:
        if done.done():
            return
        try:
            header = reader.feed(data)
        except ProxyProtocolError as e:
            ch.sink = None
            done.set_exception(e)
            return
        if header is not None:
            ch.sink = None
            done.set_result(header)
            if reader.rest:
                ch.data_received(reader.rest)

    ch.sink = feed
    return done


#: The first bytes of the v1 and v2 signatures: any other first byte is no header.
_SIGNATURE_STARTS = frozenset((V1_PREFIX[0], V2_SIGNATURE[0]))


def refuse_headers(ch: PacketChannel, on_header: Callable[[], None]) -> None:
    """Watch the first bytes of a peer that may not send a header: ``on_header`` is called
    if they are one; otherwise they go on to the packet reader as soon as they cannot be."""
    seen = bytearray()

    def sniff(data: bytes) -> None:
        if not seen and data[0] not in _SIGNATURE_STARTS:  # the usual client: no header
            ch.sink = None
            ch.data_received(data)
            return
        seen.extend(data)
        verdict = looks_like_header(bytes(seen))
        if verdict is None:
            return
        ch.sink = None
        if verdict:
            on_header()
        else:
            ch.data_received(bytes(seen))

    ch.sink = sniff


def apply(client: PeerInfo, header: ProxyHeader) -> None:
    """The client a header names becomes ``proxy.connection.client`` (src and dst); a
    LOCAL or UNKNOWN header leaves the socket's own addresses."""
    if header.src is None or header.dst is None:
        return
    client.src = address_info(header.src)
    client.dst = address_info(header.dst)


def address_info(endpoint: Endpoint) -> AddressInfo:
    if isinstance(endpoint, str):
        return AddressInfo(name=endpoint, address=endpoint, port=None, family=socket.AF_UNIX)
    host, port = endpoint
    if ":" in host:
        return AddressInfo(name=f"[{host}]:{port}", address=host, port=port, family=socket.AF_INET6)
    return AddressInfo(name=f"{host}:{port}", address=host, port=port, family=socket.AF_INET)


def describe(header: ProxyHeader) -> str:
    """For the debug line: which header, naming whom."""
    if header.src is None:
        what = "LOCAL" if header.local else "UNKNOWN"
        return f"PROXY v{header.version} {what} header (the peer's own connection)"
    return f"PROXY v{header.version} header for client {address_info(header.src).name}"


# the backend leg ---------------------------------------------------------------------------


def _endpoint(info: AddressInfo | None) -> Endpoint | None:
    if info is None:
        return None
    if info.family == socket.AF_UNIX or info.port is None:
        return info.address
    return info.address, info.port


def backend_header(settings: ProxySettings, client: PeerInfo) -> bytes | None:
    """What a server connection opened for ``client`` starts with, or None (off).

    A unix socket client has no address a server could check: it is sent as LOCAL
    (the server sees the proxy) in v2, UNKNOWN in v1.
    """
    version = settings.backend_proxy_protocol
    if not version:
        return None
    src, dst = _endpoint(client.src), _endpoint(client.dst)
    if isinstance(src, str) or isinstance(dst, str):
        src = dst = None
    return encode(version, src, dst)


def local_header(settings: ProxySettings) -> bytes | None:
    """What the proxy's own connections (health probes) start with, or None (off)."""
    version = settings.backend_proxy_protocol
    return encode(version, None, None) if version else None


def origin(settings: ProxySettings, client: PeerInfo) -> str | None:
    """The client address a server connection is bound to, for the pool: with
    --proxy-backend-proxy-protocol the server saw this client's IP, and only a client
    of the same IP may reuse the connection. None when no header is sent."""
    if not settings.backend_proxy_protocol:
        return None
    src = client.src
    if src is None or src.family == socket.AF_UNIX:
        return ""
    return src.address
