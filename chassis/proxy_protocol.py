"""The PROXY protocol (HAProxy's, versions 1 and 2), sans-IO: bytes in, a header out.

A TCP load balancer in front of a server hides the client: the server sees the balancer's
address. With the PROXY protocol the balancer starts each connection with one header that
names the client's address and the one it connected to. Nothing here knows MySQL or
asyncio: any plugin's listener (or a connection it opens to its own servers) can use it.

* :class:`HeaderReader` is fed bytes as they arrive (byte by byte if need be) and returns
  the :class:`ProxyHeader` once whole; the bytes after it are in :attr:`HeaderReader.rest`.
  Every malformed, truncated-by-garbage or oversized header raises
  :class:`ProxyProtocolError`, whose message says what was wrong.
* :func:`looks_like_header` tells whether the first bytes of a connection are a PROXY
  header (to refuse one from a peer that may not send it).
* :func:`encode` writes a header (v1 or v2), :func:`parse_networks` and :func:`trusts`
  check who may send one.

The specification: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

#: The 12 bytes every v2 header starts with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Every v1 header starts with this.
V1_PREFIX = b"PROXY "
#: A v1 header, CRLF included, is at most this long (the spec's worst case, TCP6).
V1_MAX_LENGTH = 107
#: The fixed part of a v2 header: signature, version/command, family/transport, length.
V2_FIXED_LENGTH = 16
#: Address and TLV bytes a v2 header may carry at most. The 16-bit length field allows
#: 65535; real balancers send the address block (at most 216 bytes) and a few TLVs.
V2_MAX_LENGTH = 4096

#: v2 address block sizes by family (the high nibble of the 14th byte).
_V2_FAMILIES = {0x0: (socket.AF_UNSPEC, 0), 0x1: (socket.AF_INET, 12),
                0x2: (socket.AF_INET6, 36), 0x3: (socket.AF_UNIX, 216)}
_UNIX_PATH = 108

#: An address in a header: ``(ip, port)`` for TCP, a path for a unix socket.
Endpoint = tuple[str, int] | str


class ProxyProtocolError(ValueError):
    """The bytes are not a valid PROXY protocol header; the message says why."""


@dataclass(frozen=True)
class ProxyHeader:
    """One parsed header.

    ``src``/``dst`` are None when the header carries no addresses to use: a v2 LOCAL
    command (the balancer's own connection, a health check), a v1 ``UNKNOWN`` or an
    ``UNSPEC`` family; the receiver then keeps the socket's own addresses.
    """

    version: int  # 1 or 2
    family: int  # socket.AF_INET, AF_INET6, AF_UNIX or AF_UNSPEC
    src: Endpoint | None = None
    dst: Endpoint | None = None
    local: bool = False  # v2 command LOCAL
    #: v2 type-length-value extensions, as sent; nothing here depends on them.
    tlvs: tuple[tuple[int, bytes], ...] = ()
    length: int = 0  # bytes the header took on the wire


def looks_like_header(prefix: bytes) -> bool | None:
    """True when ``prefix`` starts with a v1 or v2 header's signature, False when it
    cannot, None while it is too short to say (a proper prefix of a signature).

    Neither signature can start a MySQL client packet (their length bytes would
    announce a 5 MB handshake response, their sequence ids are not 1).
    """
    for signature in (V1_PREFIX, V2_SIGNATURE):
        n = min(len(prefix), len(signature))
        if prefix[:n] == signature[:n]:
            if len(prefix) >= len(signature):
                return True
            return None if n == len(prefix) else False
    return False


class HeaderReader:
    """Reads one PROXY header off the start of a connection (sans-IO).

    :meth:`feed` may be called with any split of the bytes; it returns None until the
    header is whole, then the header (and :attr:`rest` holds what followed it).
    """

    def __init__(self, max_v2_length: int = V2_MAX_LENGTH) -> None:
        self.max_v2_length = max_v2_length
        self._buf = bytearray()
        self.header: ProxyHeader | None = None
        self.rest = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        if self.header is not None:
            self.rest += data
            return self.header
        self._buf += data
        kind = looks_like_header(bytes(self._buf[:len(V2_SIGNATURE)]))
        if kind is None:
            return None
        if kind is False:
            raise ProxyProtocolError(f"not a PROXY protocol header (starts with {bytes(self._buf[:8])!r})")
        header = self._v1() if self._buf.startswith(V1_PREFIX) else self._v2()
        if header is not None:
            self.header = header
            self.rest = bytes(self._buf[header.length:])
            self._buf.clear()
        return header

    # version 1 (text) -------------------------------------------------------------------

    def _v1(self) -> ProxyHeader | None:
        end = self._buf.find(b"\r\n", 0, V1_MAX_LENGTH)
        if end < 0:
            if len(self._buf) >= V1_MAX_LENGTH:
                raise ProxyProtocolError(f"PROXY v1 header longer than {V1_MAX_LENGTH} bytes")
            cr = self._buf.find(b"\r")
            if b"\n" in self._buf or 0 <= cr < len(self._buf) - 1:
                raise ProxyProtocolError("PROXY v1 header: the line must end with CRLF")
            return None
        line = bytes(self._buf[:end])
        return _parse_v1(line, end + 2)

    # version 2 (binary) -----------------------------------------------------------------

    def _v2(self) -> ProxyHeader | None:
        if len(self._buf) < V2_FIXED_LENGTH:
            # Check the version/command byte as soon as it is there: garbage fails early.
            if len(self._buf) > 12:
                _v2_command(self._buf[12])
            return None
        ver_cmd, fam_proto, length = struct.unpack_from("!BBH", self._buf, 12)
        local = _v2_command(ver_cmd)
        family_code, transport = fam_proto >> 4, fam_proto & 0xF
        if family_code not in _V2_FAMILIES or transport > 2:
            raise ProxyProtocolError(f"PROXY v2 header: unknown address family/transport 0x{fam_proto:02x}")
        family, block = _V2_FAMILIES[family_code]
        if length > self.max_v2_length:
            raise ProxyProtocolError(f"PROXY v2 header: {length} bytes of addresses and TLVs, "
                                     f"more than the {self.max_v2_length} accepted")
        if not local and length < block:
            raise ProxyProtocolError(f"PROXY v2 header: length {length} is shorter than the "
                                     f"{block}-byte address block of its family")
        total = V2_FIXED_LENGTH + length
        if len(self._buf) < total:
            return None
        body = bytes(self._buf[V2_FIXED_LENGTH:total])
        if local or transport == 0 or family == socket.AF_UNSPEC:
            # LOCAL: the balancer's own connection; UNSPEC: nothing to use. The spec
            # says to ignore the address block then; TLVs may follow a known one.
            return ProxyHeader(2, family if not local else socket.AF_UNSPEC, local=local,
                               length=total)
        if transport == 2:
            raise ProxyProtocolError("PROXY v2 header: a datagram (UDP) connection on a stream listener")
        src, dst = _v2_addresses(family, body[:block])
        return ProxyHeader(2, family, src, dst, tlvs=_tlvs(body[block:]), length=total)


def _parse_v1(line: bytes, length: int) -> ProxyHeader:
    parts = line.split(b" ")
    proto = parts[1] if len(parts) > 1 else b""
    if proto == b"UNKNOWN":  # the spec: ignore whatever follows
        return ProxyHeader(1, socket.AF_UNSPEC, length=length)
    if proto not in (b"TCP4", b"TCP6"):
        raise ProxyProtocolError(f"PROXY v1 header: unknown protocol {proto[:16]!r} "
                                 "(TCP4, TCP6 or UNKNOWN)")
    if len(parts) != 6:
        raise ProxyProtocolError("PROXY v1 header: expected 'PROXY TCP4|TCP6 SRC DST SPORT DPORT' "
                                 "with single spaces")
    version = 4 if proto == b"TCP4" else 6
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    try:
        src_ip, dst_ip = (_ip(p.decode("ascii"), version) for p in parts[2:4])
    except UnicodeDecodeError:
        raise ProxyProtocolError("PROXY v1 header: an address is not ASCII") from None
    src_port, dst_port = (_port(p) for p in parts[4:6])
    return ProxyHeader(1, family, (src_ip, src_port), (dst_ip, dst_port), length=length)


def _ip(text: str, version: int) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 header: {text[:46]!r} is not an IPv{version} address") from None
    if ip.version != version:
        raise ProxyProtocolError(f"PROXY v1 header: {text!r} is not an IPv{version} address")
    return str(ip)


def _port(text: bytes) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text.startswith(b"0")) \
            or int(text) > 65535:
        raise ProxyProtocolError(f"PROXY v1 header: {text[:8]!r} is not a port (0-65535, "
                                 "no leading zeros)")
    return int(text)


def _v2_command(ver_cmd: int) -> bool:
    """True for LOCAL, False for PROXY; anything else is refused."""
    if ver_cmd >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header: version {ver_cmd >> 4}, only 2 is known")
    command = ver_cmd & 0xF
    if command > 1:
        raise ProxyProtocolError(f"PROXY v2 header: unknown command {command} (0 LOCAL, 1 PROXY)")
    return command == 0


def _v2_addresses(family: int, block: bytes) -> tuple[Endpoint, Endpoint]:
    if family == socket.AF_INET:
        s, d, sp, dp = struct.unpack("!4s4sHH", block)
        return (socket.inet_ntop(family, s), sp), (socket.inet_ntop(family, d), dp)
    if family == socket.AF_INET6:
        s, d, sp, dp = struct.unpack("!16s16sHH", block)
        return (socket.inet_ntop(family, s), sp), (socket.inet_ntop(family, d), dp)
    return _unix_path(block[:_UNIX_PATH]), _unix_path(block[_UNIX_PATH:])


def _unix_path(raw: bytes) -> str:
    return os.fsdecode(raw.split(b"\x00", 1)[0])


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """The TLVs after the address block; one running past the header is an error."""
    result = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 3:
            raise ProxyProtocolError("PROXY v2 header: a TLV is cut off by the header's length")
        kind, size = struct.unpack_from("!BH", data, pos)
        pos += 3
        if pos + size > len(data):
            raise ProxyProtocolError(f"PROXY v2 header: TLV 0x{kind:02x} of {size} bytes runs "
                                     "past the header's length")
        result.append((kind, data[pos:pos + size]))
        pos += size
    return tuple(result)


# writing ---------------------------------------------------------------------------------


def encode(version: int, src: Endpoint | None, dst: Endpoint | None) -> bytes:
    """A header naming ``src`` as the client and ``dst`` as the address it reached;
    with ``src`` None a LOCAL one (v1: ``UNKNOWN``): the sender's own connection.

    IPv4-mapped IPv6 addresses on both sides become IPv4; mixed families become IPv6.
    A unix socket has no v1 form: v1 sends ``UNKNOWN`` for it.
    """
    if version not in (1, 2):
        raise ValueError(f"PROXY protocol version {version}: 1 or 2")
    if src is None or dst is None:
        return b"PROXY UNKNOWN\r\n" if version == 1 else V2_SIGNATURE + b"\x20\x00\x00\x00"
    if isinstance(src, str) or isinstance(dst, str):
        if version == 1 or not (isinstance(src, str) and isinstance(dst, str)):
            return encode(version, None, None)
        block = b"".join(os.fsencode(p).ljust(_UNIX_PATH, b"\x00")[:_UNIX_PATH] for p in (src, dst))
        return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x31, len(block)) + block
    s_ip, d_ip = _same_family(ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0]))
    if version == 1:
        proto = "TCP4" if s_ip.version == 4 else "TCP6"
        return f"PROXY {proto} {s_ip} {d_ip} {src[1]} {dst[1]}\r\n".encode("ascii")
    fam = 0x11 if s_ip.version == 4 else 0x21
    block = s_ip.packed + d_ip.packed + struct.pack("!HH", src[1], dst[1])
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, fam, len(block)) + block


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _same_family(a: IPAddress, b: IPAddress) -> tuple[IPAddress, IPAddress]:
    ua, ub = _unmapped(a), _unmapped(b)
    if ua.version == ub.version:
        return ua, ub
    return _mapped(ua), _mapped(ub)


def _unmapped(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _mapped(ip: IPAddress) -> ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address):
        return ip
    return ipaddress.IPv6Address(f"::ffff:{ip}")


# who may send one ------------------------------------------------------------------------

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (``10.0.0.0/8``, ``::1``), each value possibly comma-separated; a bare
    address is a /32 (/128). ValueError names the bad one."""
    result: list[Network] = []
    for value in values:
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                result.append(ipaddress.ip_network(item, strict=True))
            except ValueError as e:
                raise ValueError(f"{item!r} is not a network such as 10.0.0.0/8 or "
                                 f"2001:db8::/32 ({e})") from None
    return tuple(result)


def trusts(networks: Iterable[Network], host: str) -> bool:
    """Whether a peer at ``host`` (an IP; an IPv4-mapped IPv6 one counts as IPv4) is in
    ``networks``. A unix socket peer or anything that is no IP is in none."""
    try:
        ip = _unmapped(ipaddress.ip_address(host.split("%", 1)[0]))
    except ValueError:
        return False
    return any(ip in net for net in networks if net.version == ip.version)
