"""Connection phase packets: the server's Handshake v10, the client's SSLRequest and
HandshakeResponse41, and the auth exchange (AuthSwitchRequest, AuthMoreData, the
client's AuthSwitchResponse).

``encode(parse(x)) == x`` for the packets real servers and clients send, so a proxy can
parse, adjust a few capability bits and re-encode without disturbing anything else.
Protocol identifiers that are ASCII by definition (server version, plugin names) are
``str`` (decoded as latin-1, which is lossless); user data whose character set depends
on the connection (user name, database, connect attributes) stays ``bytes``.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field, replace

from chassis_mysql.constants import (
    AUTH_MORE_DATA_HEADER,
    AUTH_SWITCH_HEADER,
    CLASSIC_CAPABILITIES_MASK,
    Capability,
    ServerStatus,
)
from chassis_mysql.errors import ProtocolError
from chassis_mysql.wire import Reader, read_lenenc_str, write_lenenc_int, write_lenenc_str

_CLIENT_MYSQL = int(Capability.LONG_PASSWORD)
_PART1 = 8  # bytes of the scramble sent before the capability flags

# The flags as plain ints: ``int & Capability.X`` goes through IntFlag's Python-level
# operators (about 100 times the cost of ``int & int``), and a login parses and encodes
# several of these packets.
_SECURE_CONNECTION = int(Capability.SECURE_CONNECTION)
_PLUGIN_AUTH = int(Capability.PLUGIN_AUTH)
_SSL = int(Capability.SSL)
_PROTOCOL_41 = int(Capability.PROTOCOL_41)
_LENENC_AUTH = int(Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA)
_CONNECT_WITH_DB = int(Capability.CONNECT_WITH_DB)
_CONNECT_ATTRS = int(Capability.CONNECT_ATTRS)
_ZSTD = int(Capability.ZSTD_COMPRESSION_ALGORITHM)


_CAPABILITIES: dict[int, Capability] = {}
_STATUSES: dict[int, ServerStatus] = {}


def _capabilities(value: int) -> Capability:
    """``Capability(value)``, remembered: a server (a client) sends the same flags at every
    login, and making an IntFlag costs about 20 times a dict lookup."""
    flags = _CAPABILITIES.get(value)
    if flags is None:
        if len(_CAPABILITIES) >= 256:
            _CAPABILITIES.clear()
        flags = _CAPABILITIES[value] = Capability(value)
    return flags


def _status(value: int) -> ServerStatus:
    """``ServerStatus(value)``, remembered like :func:`_capabilities`."""
    status = _STATUSES.get(value)
    if status is None:
        if len(_STATUSES) >= 256:
            _STATUSES.clear()
        status = _STATUSES[value] = ServerStatus(value)
    return status


def _latin1(raw: bytes) -> str:
    return raw.decode("latin-1")


def _ascii_bytes(text: str, what: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise ProtocolError(f"{what} must be latin-1 text: {text!r}") from None


def _no_nul(value: bytes, what: str) -> bytes:
    if b"\x00" in value:
        raise ProtocolError(f"{what} cannot contain a NUL byte (it is NUL-terminated)")
    return value


def split_capabilities(capabilities: int) -> tuple[int, int]:
    """Split a combined capability value into (classic 32 bits, MariaDB extended 32 bits)."""
    return capabilities & CLASSIC_CAPABILITIES_MASK, (capabilities >> 32) & 0xFFFFFFFF


def _extended_field(classic: int, extended: int) -> bytes:
    """The 4 filler bytes that carry MariaDB's extended capabilities (when CLIENT_MYSQL is unset)."""
    if classic & _CLIENT_MYSQL:
        return b"\x00\x00\x00\x00"
    return struct.pack("<I", extended)


#: What follows the server version: connection id, scramble part 1, filler, capabilities
#: (low 16 bits), charset, status, capabilities (high 16 bits), scramble length, 6
#: reserved bytes, MariaDB's extended capabilities.
_HANDSHAKE_FIXED = struct.Struct("<I8sxHBHHB6xI")
#: The capabilities that decide which fields a handshake has.
_HANDSHAKE_LAYOUT = _CLIENT_MYSQL | _SECURE_CONNECTION | _PLUGIN_AUTH


@dataclass(frozen=True, slots=True)
class HandshakeV10:
    """The server's first packet (protocol version 10).

    ``capabilities`` joins the lower and upper 16 bits and, for MariaDB servers (which
    leave ``CLIENT_MYSQL``/``LONG_PASSWORD`` unset), the extended capabilities from the
    filler as bits 32..63. ``auth_plugin_data`` is the whole scramble (both parts
    joined, usually 20 bytes) without the trailing NUL of part 2.
    """

    server_version: str
    connection_id: int
    auth_plugin_data: bytes
    capabilities: Capability
    charset: int = 45
    status: ServerStatus = ServerStatus.AUTOCOMMIT
    auth_plugin_name: str = "mysql_native_password"
    protocol_version: int = 10
    #: The length byte the server sent (``None``: derive it from the scramble).
    auth_plugin_data_len: int | None = None
    #: False for servers (and old proxies) that omit the NUL after the plugin name.
    auth_plugin_name_terminated: bool = True

    @classmethod
    def parse(cls, payload: bytes) -> HandshakeV10:
        """Parse a Handshake v10 payload (an ERR payload raises ProtocolError: check is_err first)."""
        r = Reader(payload)
        protocol_version = r.u8()
        if protocol_version != 10:
            raise ProtocolError(
                f"unsupported handshake protocol version {protocol_version} (expected 10); "
                "is the backend a MySQL/MariaDB server?"
            )
        server_version = _latin1(r.nul_str())
        connection_id, part1, classic, charset, status, high, data_len, extended = \
            _HANDSHAKE_FIXED.unpack(r.fixed(_HANDSHAKE_FIXED.size))
        classic |= high << 16
        caps = classic if classic & _CLIENT_MYSQL else classic | (extended << 32)
        scramble = part1
        if classic & _SECURE_CONNECTION:
            part2 = r.fixed(min(max(13, data_len - _PART1), r.remaining()))
            if part2.endswith(b"\x00"):
                part2 = part2[:-1]
            scramble = part1 + part2
        plugin = ""
        terminated = True
        if classic & _PLUGIN_AUTH:
            rest = r.rest()
            nul = rest.find(b"\x00")
            if nul < 0:
                plugin, terminated = _latin1(rest), False
            else:
                plugin = _latin1(rest[:nul])
                if nul != len(rest) - 1:
                    raise ProtocolError("unexpected bytes after the handshake's auth plugin name")
        return cls(
            server_version=server_version,
            connection_id=connection_id,
            auth_plugin_data=scramble,
            capabilities=_capabilities(caps),
            charset=charset,
            status=_status(status),
            auth_plugin_name=plugin,
            protocol_version=protocol_version,
            auth_plugin_data_len=data_len,
            auth_plugin_name_terminated=terminated,
        )

    def encode(self) -> bytes:
        """The payload (always with the NUL after the plugin name unless told otherwise)."""
        classic, extended = split_capabilities(int(self.capabilities))
        data = self.auth_plugin_data
        if len(data) < _PART1:
            raise ProtocolError(f"auth_plugin_data needs at least 8 bytes, got {len(data)}")
        if self.auth_plugin_data_len is not None:
            data_len = self.auth_plugin_data_len
        elif classic & _PLUGIN_AUTH:
            data_len = len(data) + 1
        else:
            data_len = 0
        out = [
            bytes((self.protocol_version,)),
            _no_nul(_ascii_bytes(self.server_version, "server_version"), "server_version"),
            b"\x00",
            struct.pack("<I", self.connection_id & 0xFFFFFFFF),
            data[:_PART1],
            b"\x00",
            struct.pack(
                "<HBHHB", classic & 0xFFFF, self.charset, int(self.status), classic >> 16, data_len
            ),
            b"\x00" * 6,
            _extended_field(classic, extended),
        ]
        if classic & _SECURE_CONNECTION:
            part2 = data[_PART1:]
            out.append(part2.ljust(max(13, data_len - _PART1, len(part2)), b"\x00"))
        if classic & _PLUGIN_AUTH:
            out.append(_ascii_bytes(self.auth_plugin_name, "auth_plugin_name"))
            if self.auth_plugin_name_terminated:
                out.append(b"\x00")
        return b"".join(out)

    def with_capabilities(self, capabilities: int) -> HandshakeV10:
        """A copy with other capability flags (e.g. COMPRESS masked off by a proxy)."""
        return replace(self, capabilities=Capability(capabilities))


def handshake_with_capabilities(payload: bytes, capabilities: int) -> bytes:
    """``HandshakeV10.parse(payload).with_capabilities(capabilities).encode()``, by
    rewriting the capability bytes in place: a proxy masks a few bits of every greeting
    it relays. Flags that change the packet's layout take the long way."""
    pos = payload.find(b"\x00", 1) + 14  # the low 16 bits, after the version's NUL,
    end = pos + _HANDSHAKE_FIXED.size - 13  # the connection id, scramble part 1, filler
    if pos < 14 or len(payload) < end or payload[0] != 10:
        return HandshakeV10.parse(payload).with_capabilities(capabilities).encode()
    old = int.from_bytes(payload[pos:pos + 2], "little") | \
        int.from_bytes(payload[pos + 5:pos + 7], "little") << 16
    classic, extended = split_capabilities(capabilities)
    if (old ^ classic) & _HANDSHAKE_LAYOUT:
        return HandshakeV10.parse(payload).with_capabilities(capabilities).encode()
    return b"".join((payload[:pos], (classic & 0xFFFF).to_bytes(2, "little"), payload[pos + 2:pos + 5],
                     (classic >> 16).to_bytes(2, "little"), payload[pos + 7:end - 4],
                     _extended_field(classic, extended), payload[end:]))


def _parse_client_prefix(r: Reader) -> tuple[int, int, int]:
    """Capabilities (with MariaDB's extension), max packet size and charset: the first 32 bytes."""
    classic = r.u32()
    max_packet = r.u32()
    charset = r.u8()
    r.fixed(19)
    extended = r.u32()
    caps = classic if classic & _CLIENT_MYSQL else classic | (extended << 32)
    return caps, max_packet, charset


def _encode_client_prefix(capabilities: int, max_packet: int, charset: int) -> bytes:
    classic, extended = split_capabilities(capabilities)
    return (
        struct.pack("<IIB", classic, max_packet & 0xFFFFFFFF, charset)
        + b"\x00" * 19
        + _extended_field(classic, extended)
    )


#: Size of an SSLRequest payload (and of the fixed prefix of HandshakeResponse41).
SSL_REQUEST_SIZE = 32


def is_ssl_request(payload: bytes) -> bool:
    """True for the client's 32-byte SSLRequest (a real HandshakeResponse41 is longer)."""
    return (
        len(payload) == SSL_REQUEST_SIZE
        and bool(payload[1] & (_SSL >> 8))
        and bool(payload[1] & (_PROTOCOL_41 >> 8))
    )


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """The short response a client sends before starting TLS (CLIENT_SSL set)."""

    capabilities: Capability
    max_packet: int = 16 * 1024 * 1024
    charset: int = 45

    @classmethod
    def parse(cls, payload: bytes) -> SSLRequest:
        """Parse the 32-byte SSLRequest payload."""
        if len(payload) != SSL_REQUEST_SIZE:
            raise ProtocolError(f"SSLRequest must be 32 bytes, got {len(payload)}")
        caps, max_packet, charset = _parse_client_prefix(Reader(payload))
        if not caps & _SSL:
            raise ProtocolError("SSLRequest without the CLIENT_SSL capability")
        return cls(Capability(caps), max_packet, charset)

    def encode(self) -> bytes:
        """The 32-byte payload."""
        return _encode_client_prefix(int(self.capabilities), self.max_packet, self.charset)


def _encode_attrs(attrs: dict[bytes, bytes]) -> bytes:
    body = b"".join(write_lenenc_str(k) + write_lenenc_str(v) for k, v in attrs.items())
    return write_lenenc_int(len(body)) + body


def _parse_attrs(r: Reader) -> dict[bytes, bytes]:
    size = r.lenenc_int_nonnull("connect attributes length")
    buf = r.fixed(size)
    end = len(buf)
    attrs: dict[bytes, bytes] = {}
    pos = 0
    # Inline for the usual one-byte lengths (a client sends a dozen attributes at every
    # login); anything else takes the general reader, which also reports the errors.
    while pos < end:
        n = buf[pos]
        stop = pos + 1 + n
        if n < 0xFB and stop < end and buf[stop] < 0xFB and stop + 1 + buf[stop] <= end:
            key = buf[pos + 1:stop]
            pos = stop + 1 + buf[stop]
            attrs[key] = buf[stop + 1:pos]
            continue
        key, pos = _lenenc_nonnull(buf, pos, "connect attribute name")
        attrs[key], pos = _lenenc_nonnull(buf, pos, "connect attribute value")
    return attrs


def _lenenc_nonnull(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    value, after = read_lenenc_str(buf, pos)
    if value is None:
        raise ProtocolError(f"unexpected NULL marker for {what} at offset {pos}")
    return value, after


@dataclass(frozen=True, slots=True)
class HandshakeResponse41:
    """The client's login packet (CLIENT_PROTOCOL_41).

    Optional parts are present as their capability bits say: ``database`` with
    CONNECT_WITH_DB, ``auth_plugin_name`` with PLUGIN_AUTH, ``connect_attrs`` with
    CONNECT_ATTRS, ``zstd_level`` with ZSTD_COMPRESSION_ALGORITHM. A field that is
    ``None`` was absent (some clients set a bit and end the packet early).
    """

    capabilities: Capability
    username: bytes
    auth_response: bytes = b""
    max_packet: int = 16 * 1024 * 1024
    charset: int = 45
    database: bytes | None = None
    auth_plugin_name: str | None = None
    connect_attrs: dict[bytes, bytes] | None = field(default=None, hash=False)
    zstd_level: int | None = None

    @classmethod
    def parse(cls, payload: bytes) -> HandshakeResponse41:
        """Parse the client's HandshakeResponse41 payload."""
        if is_ssl_request(payload):
            raise ProtocolError("got an SSLRequest where a HandshakeResponse41 was expected")
        r = Reader(payload)
        caps, max_packet, charset = _parse_client_prefix(r)
        if not caps & _PROTOCOL_41:
            raise ProtocolError(
                "client does not speak protocol 4.1 (CLIENT_PROTOCOL_41 unset); "
                "pre-4.1 clients are not supported"
            )
        username = r.nul_str()
        if caps & _LENENC_AUTH:
            auth = r.lenenc_str_nonnull("auth response")
        elif caps & _SECURE_CONNECTION:
            auth = r.fixed(r.u8())
        else:
            auth = r.nul_str()
        database = None
        if caps & _CONNECT_WITH_DB and not r.at_end():
            database = r.nul_str()
        plugin = None
        if caps & _PLUGIN_AUTH and not r.at_end():
            plugin = _latin1(r.nul_str())
        attrs = None
        if caps & _CONNECT_ATTRS and not r.at_end():
            attrs = _parse_attrs(r)
        zstd = None
        if caps & _ZSTD and not r.at_end():
            zstd = r.u8()
        r.expect_end("HandshakeResponse41")
        return cls(
            capabilities=_capabilities(caps),
            username=username,
            auth_response=auth,
            max_packet=max_packet,
            charset=charset,
            database=database,
            auth_plugin_name=plugin,
            connect_attrs=attrs,
            zstd_level=zstd,
        )

    def encode(self) -> bytes:
        """The payload; optional fields are written when their bit is set and they are not None."""
        caps = int(self.capabilities)
        out = [
            _encode_client_prefix(caps, self.max_packet, self.charset),
            _no_nul(self.username, "username"),
            b"\x00",
        ]
        auth = self.auth_response
        if caps & _LENENC_AUTH:
            out.append(write_lenenc_str(auth))
        elif caps & _SECURE_CONNECTION:
            if len(auth) > 255:
                raise ProtocolError(
                    "auth response over 255 bytes needs CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA"
                )
            out.append(bytes((len(auth),)) + auth)
        else:
            out.append(_no_nul(auth, "auth response") + b"\x00")
        if caps & _CONNECT_WITH_DB and self.database is not None:
            out.append(_no_nul(self.database, "database") + b"\x00")
        if caps & _PLUGIN_AUTH and self.auth_plugin_name is not None:
            name = _ascii_bytes(self.auth_plugin_name, "auth_plugin_name")
            out.append(_no_nul(name, "auth_plugin_name") + b"\x00")
        if caps & _CONNECT_ATTRS and self.connect_attrs is not None:
            out.append(_encode_attrs(self.connect_attrs))
        if caps & _ZSTD and self.zstd_level is not None:
            out.append(bytes((self.zstd_level,)))
        return b"".join(out)


def is_auth_switch_request(payload: bytes) -> bool:
    """True for an AuthSwitchRequest (0xFE) in the connection phase."""
    return len(payload) >= 1 and payload[0] == AUTH_SWITCH_HEADER


def is_auth_more_data(payload: bytes) -> bool:
    """True for AuthMoreData (0x01) in the connection phase."""
    return len(payload) >= 1 and payload[0] == AUTH_MORE_DATA_HEADER


@dataclass(frozen=True, slots=True)
class AuthSwitchRequest:
    """The server asks the client to authenticate with another plugin (0xFE + name + data).

    ``plugin_name`` is ``None`` for the pre-4.1 one-byte form (``0xFE`` alone) that
    means "use mysql_old_password with the first scramble". ``data`` is kept exactly,
    including the NUL many servers append to the scramble; :attr:`scramble` strips it.
    """

    plugin_name: str | None
    data: bytes = b""

    @classmethod
    def parse(cls, payload: bytes) -> AuthSwitchRequest:
        """Parse an AuthSwitchRequest payload."""
        if not is_auth_switch_request(payload):
            raise ProtocolError("not an AuthSwitchRequest (first byte must be 0xfe)")
        if len(payload) == 1:
            return cls(None)
        r = Reader(payload, 1)
        name = _latin1(r.nul_str())
        return cls(name, r.rest())

    def encode(self) -> bytes:
        """The payload."""
        if self.plugin_name is None:
            return b"\xfe"
        name = _ascii_bytes(self.plugin_name, "plugin_name")
        return b"\xfe" + _no_nul(name, "plugin_name") + b"\x00" + self.data

    @property
    def scramble(self) -> bytes:
        """The plugin data without the trailing NUL terminator, if any."""
        return self.data[:-1] if self.data.endswith(b"\x00") else self.data


@dataclass(frozen=True, slots=True)
class AuthMoreData:
    """Extra authentication data from the server (0x01 + data).

    For caching_sha2_password: ``b"\\x03"`` is fast-auth success, ``b"\\x04"`` asks for
    full authentication, and a PEM blob is the server's public key.
    """

    data: bytes

    FAST_AUTH_SUCCESS = b"\x03"
    PERFORM_FULL_AUTHENTICATION = b"\x04"

    @classmethod
    def parse(cls, payload: bytes) -> AuthMoreData:
        """Parse an AuthMoreData payload."""
        if not is_auth_more_data(payload):
            raise ProtocolError("not an AuthMoreData packet (first byte must be 0x01)")
        return cls(payload[1:])

    def encode(self) -> bytes:
        """The payload."""
        return b"\x01" + self.data


@dataclass(frozen=True, slots=True)
class AuthSwitchResponse:
    """The client's answer in an auth exchange: the plugin's raw bytes, no framing of its own."""

    data: bytes

    @classmethod
    def parse(cls, payload: bytes) -> AuthSwitchResponse:
        """Wrap the payload (any bytes are valid)."""
        return cls(bytes(payload))

    def encode(self) -> bytes:
        """The payload."""
        return self.data


@functools.lru_cache(maxsize=64)  # a backend says the same at every login
def version_number(server_version: str) -> int:
    """``"5.5.5-10.11.6-MariaDB"`` -> 50505, as MySQL Proxy computes ``mysqld_version``
    (0 when the text has no number in front)."""
    head = server_version.split("-", 1)[0]
    parts = [*head.split("."), "0", "0"][:3]
    try:
        major, minor, patch = (int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)
    except ValueError:
        return 0
    return major * 10000 + minor * 100 + patch


def with_classic_capabilities(response: bytes, capabilities: int) -> bytes:
    """A HandshakeResponse41 payload with its 4 classic capability bytes replaced.

    For a relay that changes one bit (TLS on its own leg, compression masked) and must
    keep every other byte exactly as the client sent it.
    """
    return (capabilities & 0xFFFFFFFF).to_bytes(4, "little") + response[4:]


def is_protocol_320_response(payload: bytes) -> bool:
    """True for a well-formed pre-4.1 client login (HandshakeResponse320): 2 capability
    bytes without CLIENT_PROTOCOL_41, 3 of max packet size, the user name and NUL, then the
    old 8-byte scramble (with CONNECT_WITH_DB: scramble, NUL, database, NUL) and nothing
    else; names printable ASCII. MySQL Proxy refused those clients; garbage is not one."""
    if len(payload) < 6:
        return False
    caps = payload[0] | (payload[1] << 8)
    if caps & _PROTOCOL_41:
        return False
    parts = payload[5:].split(b"\x00")
    user, rest = parts[0], parts[1:]
    if caps & _CONNECT_WITH_DB:
        fields = [user, *rest[:2]]
        well_formed = len(rest) == 3 and rest[2] == b""
    else:
        fields = [user, *rest[:1]]
        well_formed = len(rest) == 1 or (len(rest) == 2 and rest[1] == b"")
    scramble = fields[1] if len(fields) > 1 else b""
    return (well_formed and bool(user) and len(scramble) <= 8
            and all(0x20 <= b < 0x7F for field in fields for b in field))
