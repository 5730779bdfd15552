"""The PROXY protocol codec on bytes: v1 and v2, whole, split, malformed, oversized."""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chassis.proxy_protocol import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    Endpoint,
    HeaderReader,
    ProxyHeader,
    ProxyProtocolError,
    encode,
    looks_like_header,
    parse_networks,
    trusts,
)

Feed = Callable[[bytes], tuple[ProxyHeader, bytes]]
MYSQL_LOGIN = b"\x55\x00\x00\x01\x8d\xa6\x0f\x00"  # a handshake response's first bytes


def read_whole(data: bytes) -> tuple[ProxyHeader, bytes]:
    reader = HeaderReader()
    header = reader.feed(data)
    assert header is not None
    return header, reader.rest


def read_bytewise(data: bytes) -> tuple[ProxyHeader, bytes]:
    """Feed one byte at a time: None until the last byte of the header, then the header."""
    reader = HeaderReader()
    header = None
    for i in range(len(data)):
        header = reader.feed(data[i:i + 1])
        if header is not None:
            reader.feed(data[i + 1:])
            break
    assert header is not None
    return header, reader.rest


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", ver_cmd, fam, len(body) if length is None else length) + body


V2_TCP4 = v2(0x21, 0x11, socket.inet_aton("192.0.2.7") + socket.inet_aton("10.0.0.1")
             + struct.pack("!HH", 51234, 3306))


# version 1 ------------------------------------------------------------------------------


@pytest.mark.parametrize("feed", [read_whole, read_bytewise])
def test_v1_tcp4_gives_the_addresses_and_keeps_what_follows(feed: Feed) -> None:
    line = b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 3306\r\n"
    header, rest = feed(line + MYSQL_LOGIN)
    assert header == ProxyHeader(1, socket.AF_INET, ("192.0.2.7", 51234), ("10.0.0.1", 3306),
                                 length=len(line))
    assert rest == MYSQL_LOGIN


def test_v1_tcp6_and_unknown() -> None:
    header, _ = read_whole(b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n")
    assert (header.family, header.src, header.dst) == (socket.AF_INET6, ("2001:db8::1", 1), ("::1", 65535))
    header, rest = read_whole(b"PROXY UNKNOWN whatever follows is ignored\r\nX")
    assert (header.family, header.src, header.dst, rest) == (socket.AF_UNSPEC, None, None, b"X")


def test_v1_of_the_greatest_length_is_read_and_one_byte_more_is_refused() -> None:
    tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
    assert read_bytewise(tcp6)[0].src == ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)
    longest = tcp6.replace(b"TCP6", b"UNKNOWN")  # the spec's worst case
    assert len(longest) == V1_MAX_LENGTH
    assert read_bytewise(longest)[0].family == socket.AF_UNSPEC
    too_long = b"PROXY UNKNOWN " + b"x" * (V1_MAX_LENGTH - 15) + b"\r\n"
    assert len(too_long) == V1_MAX_LENGTH + 1
    reader = HeaderReader()
    with pytest.raises(ProxyProtocolError, match="longer than 107"):
        for i in range(len(too_long)):
            reader.feed(too_long[i:i + 1])
    assert i == V1_MAX_LENGTH - 1  # refused as soon as the 107th byte is no LF


@pytest.mark.parametrize("line, why", [
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 51234\r\n", "single spaces"),
    (b"PROXY TCP4  192.0.2.7 10.0.0.1 1 2\r\n", "single spaces"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2 3\r\n", "single spaces"),
    (b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n", "not an IPv4"),
    (b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n", "not an IPv6"),
    (b"PROXY TCP4 192.0.2.777 10.0.0.1 1 2\r\n", "not an IPv4"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n", "not a port"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 0080 2\r\n", "not a port"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 -1 2\r\n", "not a port"),
    (b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n", "unknown protocol"),
    (b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n", "CRLF"),
    (b"PROXY TCP4 192.0.2.7\r10.0.0.1 1 2\r\n", "CRLF"),
    (b"PROXY TCP4 \xff\xfe 10.0.0.1 1 2\r\n", "ASCII"),
])
def test_malformed_v1_is_refused_with_the_reason(line: bytes, why: str) -> None:
    with pytest.raises(ProxyProtocolError, match=why):
        read_bytewise(line)


def test_a_mysql_packet_or_garbage_is_not_a_header() -> None:
    for data in (MYSQL_LOGIN, b"GET / HTTP/1.0\r\n", b"PROXX", b"\r\n\r\n\x01"):
        with pytest.raises(ProxyProtocolError, match="not a PROXY protocol header"):
            HeaderReader().feed(data)


def test_a_truncated_header_is_still_waiting() -> None:
    reader = HeaderReader()
    assert reader.feed(b"PROXY TCP4 192.0.2.7 10.0.0.1 1") is None
    assert reader.feed(b"23 3306\r") is None  # a CR alone: the LF may come next
    assert reader.feed(b"\n") is not None
    reader = HeaderReader()
    assert reader.feed(V2_TCP4[:-1]) is None
    assert reader.feed(V2_TCP4[-1:]) is not None


# version 2 ------------------------------------------------------------------------------


@pytest.mark.parametrize("feed", [read_whole, read_bytewise])
def test_v2_tcp4(feed: Feed) -> None:
    header, rest = feed(V2_TCP4 + MYSQL_LOGIN)
    assert header == ProxyHeader(2, socket.AF_INET, ("192.0.2.7", 51234), ("10.0.0.1", 3306),
                                 length=len(V2_TCP4))
    assert rest == MYSQL_LOGIN


def test_v2_tcp6_unix_and_tlvs_skipped() -> None:
    body = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + socket.inet_pton(socket.AF_INET6, "::1") \
        + struct.pack("!HH", 1, 2)
    tlvs = b"\x04\x00\x03abc" + b"\x02\x00\x00"  # NOOP with 3 bytes, an empty AUTHORITY
    header, rest = read_bytewise(v2(0x21, 0x21, body + tlvs) + b"rest")
    assert (header.src, header.dst, header.tlvs, rest) == (("2001:db8::7", 1), ("::1", 2),
                                                          ((4, b"abc"), (2, b"")), b"rest")
    unix = b"/run/client.sock".ljust(108, b"\x00") + b"/run/server.sock".ljust(108, b"\x00")
    header, _ = read_whole(v2(0x21, 0x31, unix))
    assert (header.family, header.src, header.dst) == (socket.AF_UNIX, "/run/client.sock", "/run/server.sock")


def test_v2_local_and_unspec_carry_no_address() -> None:
    # LOCAL: whatever the family and block say, the receiver keeps the socket's addresses
    for data in (v2(0x20, 0x00, b""), v2(0x20, 0x11, b"\x00" * 12), v2(0x20, 0x11, b"xy")):
        header, rest = read_bytewise(data + b"Z")
        assert (header.local, header.src, header.dst, rest) == (True, None, None, b"Z")
    header, _ = read_whole(v2(0x21, 0x00, b"ignored"))
    assert (header.local, header.family, header.src) == (False, socket.AF_UNSPEC, None)


@pytest.mark.parametrize("data, why", [
    (v2(0x11, 0x11, b"\x00" * 12), "version 1"),
    (v2(0x22, 0x11, b"\x00" * 12), "unknown command 2"),
    (v2(0x21, 0x41, b"\x00" * 12), "unknown address family"),
    (v2(0x21, 0x13, b"\x00" * 12), "unknown address family"),
    (v2(0x21, 0x12, b"\x00" * 12), "datagram"),
    (v2(0x21, 0x11, b"\x00" * 11), "shorter than the 12-byte address block"),
    (v2(0x21, 0x21, b"\x00" * 12), "shorter than the 36-byte"),
    (v2(0x21, 0x11, b"\x00" * 12 + b"\x01\x00"), "TLV is cut off"),
    (v2(0x21, 0x11, b"\x00" * 12 + b"\x01\x00\x05ab"), "runs past"),
])
def test_malformed_v2_is_refused_with_the_reason(data: bytes, why: str) -> None:
    with pytest.raises(ProxyProtocolError, match=why):
        read_bytewise(data)


def test_v2_length_over_the_bound_is_refused_before_its_bytes_arrive() -> None:
    reader = HeaderReader(max_v2_length=300)
    with pytest.raises(ProxyProtocolError, match="301 bytes of addresses and TLVs, more than the 300"):
        reader.feed(V2_SIGNATURE + b"\x21\x11\x01\x2d")  # the fixed part alone
    assert HeaderReader(max_v2_length=300).feed(v2(0x21, 0x11, b"\x00" * 300)) is not None


def test_v2_garbage_version_fails_at_its_byte() -> None:
    with pytest.raises(ProxyProtocolError, match="version 3"):
        HeaderReader().feed(V2_SIGNATURE + b"\x31")


@given(st.binary(max_size=40))
def test_random_bytes_never_raise_anything_but_a_protocol_error(data: bytes) -> None:
    reader = HeaderReader()
    try:
        reader.feed(data)
    except ProxyProtocolError:
        pass


@given(st.binary(max_size=200))
def test_random_bytes_after_a_signature_never_raise_anything_else(data: bytes) -> None:
    for prefix in (V2_SIGNATURE, b"PROXY TCP4 ", b"PROXY TCP6 "):
        try:
            HeaderReader().feed(prefix + data)
        except ProxyProtocolError:
            pass


# looks_like_header ---------------------------------------------------------------------


def test_looks_like_header_decides_as_soon_as_it_can() -> None:
    assert looks_like_header(b"") is None
    assert looks_like_header(b"PROX") is None
    assert looks_like_header(b"PROXY ") is True
    assert looks_like_header(b"PROXY TCP4") is True
    assert looks_like_header(V2_SIGNATURE[:11]) is None
    assert looks_like_header(V2_SIGNATURE) is True
    assert looks_like_header(b"P\x00") is False
    assert looks_like_header(MYSQL_LOGIN) is False
    assert looks_like_header(b"\r\n\r\n\x01") is False


# encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("src, dst", [
    (("192.0.2.7", 51234), ("10.0.0.1", 3306)),
    (("2001:db8::7", 1), ("::1", 65535)),
])
def test_encode_reads_back(version: int, src: Endpoint, dst: Endpoint) -> None:
    header, rest = read_bytewise(encode(version, src, dst) + b"after")
    assert (header.version, header.src, header.dst, rest) == (version, src, dst, b"after")


def test_encode_local_unix_and_mixed_families() -> None:
    assert encode(1, None, None) == b"PROXY UNKNOWN\r\n"
    local, _ = read_whole(encode(2, None, None))
    assert local.local and local.src is None
    unix, _ = read_whole(encode(2, "/run/a.sock", "/run/b.sock"))
    assert (unix.src, unix.dst) == ("/run/a.sock", "/run/b.sock")
    assert encode(1, "/run/a.sock", "/run/b.sock") == b"PROXY UNKNOWN\r\n"
    # a dual-stack listener's IPv4 clients: mapped on both sides -> IPv4
    assert encode(1, ("::ffff:127.0.0.2", 5), ("::ffff:127.0.0.1", 6)) == b"PROXY TCP4 127.0.0.2 127.0.0.1 5 6\r\n"
    mixed, _ = read_whole(encode(1, ("127.0.0.2", 5), ("::1", 6)))
    assert mixed.family == socket.AF_INET6 and mixed.dst == ("::1", 6)
    assert isinstance(mixed.src, tuple)
    assert ipaddress.IPv6Address(mixed.src[0]).ipv4_mapped == ipaddress.IPv4Address("127.0.0.2")
    with pytest.raises(ValueError):
        encode(3, None, None)


# networks ------------------------------------------------------------------------------


def test_networks_parse_comma_separated_and_repeated() -> None:
    nets = parse_networks(["127.0.0.1/32, 10.0.0.0/8", "::1", ""])
    assert [str(n) for n in nets] == ["127.0.0.1/32", "10.0.0.0/8", "::1/128"]
    assert trusts(nets, "127.0.0.1") and trusts(nets, "10.9.8.7") and trusts(nets, "::1")
    assert trusts(nets, "::ffff:127.0.0.1")  # a dual-stack listener's IPv4 peer
    assert not trusts(nets, "127.0.0.2") and not trusts(nets, "/run/x.sock")
    with pytest.raises(ValueError, match=r"'10\.0\.0\.1/8' is not a network"):
        parse_networks(["10.0.0.1/8"])  # host bits set: a typo more likely than intended
    with pytest.raises(ValueError, match="'eth0' is not a network"):
        parse_networks(["eth0"])
