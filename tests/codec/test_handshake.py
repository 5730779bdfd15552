"""Connection-phase packets: real handshakes round-trip exactly, random ones too."""

from __future__ import annotations

import pytest
from chassis_mysql.constants import Capability, ServerStatus
from chassis_mysql.errors import ProtocolError
from chassis_mysql.handshake import (
    AuthMoreData,
    AuthSwitchRequest,
    AuthSwitchResponse,
    HandshakeResponse41,
    HandshakeV10,
    SSLRequest,
    handshake_with_capabilities,
    is_ssl_request,
)
from hypothesis import given
from hypothesis import strategies as st

from .recorded import CLIENTS, conversation


@pytest.mark.parametrize("client", CLIENTS)
def test_recorded_mariadb_handshake_round_trips_exactly(client: str) -> None:
    payload = conversation(client)[0][2]
    hs = HandshakeV10.parse(payload)
    assert hs.server_version.startswith("5.5.5-10.11")
    assert len(hs.auth_plugin_data) == 20
    assert hs.auth_plugin_name == "mysql_native_password"
    # MariaDB leaves CLIENT_MYSQL unset and puts its extended capabilities in the filler.
    assert not hs.capabilities & Capability.LONG_PASSWORD
    assert hs.capabilities & Capability.MARIADB_CLIENT_PROGRESS
    assert hs.encode() == payload
    assert payload.endswith(b"mysql_native_password\x00")


@pytest.mark.parametrize("client", CLIENTS)
def test_recorded_login_packets_round_trip_exactly(client: str) -> None:
    payload = conversation(client)[1][2]
    login = HandshakeResponse41.parse(payload)
    assert login.username == b"root"
    assert login.database == b"test"
    assert login.connect_attrs is not None and b"_client_name" in login.connect_attrs
    assert login.encode() == payload


def test_libmariadb_login_carries_extended_capabilities() -> None:
    login = HandshakeResponse41.parse(conversation("mysqlclient")[1][2])
    assert not login.capabilities & Capability.LONG_PASSWORD
    assert login.capabilities & Capability.MARIADB_CLIENT_CACHE_METADATA
    assert login.connect_attrs is not None
    assert login.connect_attrs[b"_client_name"] == b"libmariadb"


def test_handshake_without_nul_after_plugin_name_is_accepted() -> None:
    payload = conversation("pymysql")[0][2][:-1]
    hs = HandshakeV10.parse(payload)
    assert hs.auth_plugin_name == "mysql_native_password"
    assert not hs.auth_plugin_name_terminated
    assert hs.encode() == payload
    fixed = HandshakeV10(
        hs.server_version, hs.connection_id, hs.auth_plugin_data, hs.capabilities
    ).encode()
    assert fixed.endswith(b"mysql_native_password\x00")


def test_with_capabilities_masks_bits_and_keeps_the_rest() -> None:
    payload = conversation("pymysql")[0][2]
    hs = HandshakeV10.parse(payload)
    masked = hs.with_capabilities(hs.capabilities & ~Capability.COMPRESS)
    again = HandshakeV10.parse(masked.encode())
    assert not again.capabilities & Capability.COMPRESS
    assert again.auth_plugin_data == hs.auth_plugin_data
    assert again.capabilities | Capability.COMPRESS == hs.capabilities


def test_error_instead_of_handshake_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="protocol version 255"):
        HandshakeV10.parse(b"\xff\x15\x04Too many connections")


_scramble = st.binary(min_size=20, max_size=20).filter(lambda b: not b.endswith(b"\x00"))
_classic_caps = st.integers(0, 0xFFFFFFFF)
_ext_caps = st.integers(0, 0xFFFFFFFF)
_latin1 = st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=40)


@given(
    _latin1,
    st.integers(0, 0xFFFFFFFF),
    _scramble,
    _classic_caps,
    _ext_caps,
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    _latin1,
)
def test_handshake_round_trips(
    version: str, conn_id: int, scramble: bytes, classic: int, ext: int, charset: int,
    status: int, plugin: str,
) -> None:  # fmt: skip
    classic |= Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
    caps = classic if classic & 1 else classic | (ext << 32)
    hs = HandshakeV10(version, conn_id, scramble, Capability(caps), charset,
                      ServerStatus(status), plugin)  # fmt: skip
    again = HandshakeV10.parse(hs.encode())
    assert again.encode() == hs.encode()
    assert (again.server_version, again.connection_id, again.auth_plugin_data) == (
        version, conn_id, scramble,
    )  # fmt: skip
    assert int(again.capabilities) == caps
    assert again.auth_plugin_name == plugin


@given(_latin1, _scramble, _classic_caps, _ext_caps, st.integers(0, 0xFFFFFFFF),
       st.integers(0, 0xFFFFFFFF), st.booleans())
def test_handshake_with_capabilities_is_parse_with_capabilities_encode(
    version: str, scramble: bytes, classic: int, ext: int, new_classic: int, new_ext: int,
    terminated: bool,
) -> None:  # fmt: skip
    """The byte-patching fast path gives what the long way gives, layout bits changed or not."""
    caps = classic if classic & 1 else classic | (ext << 32)
    new = new_classic if new_classic & 1 else new_classic | (new_ext << 32)
    hs = HandshakeV10(version, 7, scramble, Capability(caps), auth_plugin_name="p",
                      auth_plugin_name_terminated=terminated)  # fmt: skip
    payload = hs.encode()
    expected = HandshakeV10.parse(payload).with_capabilities(new).encode()
    assert handshake_with_capabilities(payload, new) == expected


@pytest.mark.parametrize("client", CLIENTS)
def test_recorded_handshake_with_masked_capabilities(client: str) -> None:
    payload = conversation(client)[0][2]
    caps = int(HandshakeV10.parse(payload).capabilities)
    masked = caps & ~int(Capability.COMPRESS | Capability.SSL | Capability.DEPRECATE_EOF
                         | Capability.MARIADB_CLIENT_PROGRESS)
    patched = handshake_with_capabilities(payload, masked)
    assert patched == HandshakeV10.parse(payload).with_capabilities(masked).encode()
    assert int(HandshakeV10.parse(patched).capabilities) == masked


_name = st.binary(max_size=30).filter(lambda b: b"\x00" not in b)


@given(
    _classic_caps,
    _ext_caps,
    _name,
    st.binary(max_size=300),
    st.none() | _name,
    st.none() | st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=30),
    st.none() | st.dictionaries(st.binary(max_size=20), st.binary(max_size=300), max_size=5),
    st.none() | st.integers(0, 22),
)
def test_handshake_response_round_trips(
    classic: int,
    ext: int,
    user: bytes,
    auth: bytes,
    db: bytes | None,
    plugin: str | None,
    attrs: dict[bytes, bytes] | None,
    zstd: int | None,
) -> None:
    classic |= Capability.PROTOCOL_41 | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA
    # Each optional field is sent exactly when its bit is set (the last ones may be absent).
    for bit, value in [
        (Capability.CONNECT_WITH_DB, db),
        (Capability.PLUGIN_AUTH, plugin),
        (Capability.CONNECT_ATTRS, attrs),
        (Capability.ZSTD_COMPRESSION_ALGORITHM, zstd),
    ]:
        classic = classic | bit if value is not None else classic & ~bit
    caps = classic if classic & 1 else classic | (ext << 32)
    login = HandshakeResponse41(
        Capability(caps), user, auth, 1 << 24, 33, db, plugin, attrs, zstd
    )
    payload = login.encode()
    assert not is_ssl_request(payload)
    assert HandshakeResponse41.parse(payload) == login


@pytest.mark.parametrize(
    ("flags", "auth"),
    [
        (Capability.SECURE_CONNECTION, b"\x01" * 20),
        (Capability(0), b"old-style"),
    ],
)
def test_auth_response_length_forms(flags: Capability, auth: bytes) -> None:
    caps = Capability.PROTOCOL_41 | Capability.LONG_PASSWORD | flags
    login = HandshakeResponse41(caps, b"u", auth)
    assert HandshakeResponse41.parse(login.encode()).auth_response == auth


def test_long_auth_response_needs_lenenc_capability() -> None:
    caps = Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION
    with pytest.raises(ProtocolError, match="LENENC"):
        HandshakeResponse41(caps, b"u", b"x" * 256).encode()


def test_pre_41_clients_are_refused() -> None:
    payload = HandshakeResponse41(Capability.LONG_PASSWORD, b"u").encode()
    with pytest.raises(ProtocolError, match=r"4\.1"):
        HandshakeResponse41.parse(payload)


def test_ssl_request_round_trips_and_is_recognised() -> None:
    caps = Capability.PROTOCOL_41 | Capability.SSL | Capability.SECURE_CONNECTION
    req = SSLRequest(Capability(caps | Capability.MARIADB_CLIENT_PROGRESS), 1 << 24, 45)
    payload = req.encode()
    assert len(payload) == 32
    assert is_ssl_request(payload)
    assert SSLRequest.parse(payload) == req
    with pytest.raises(ProtocolError):
        HandshakeResponse41.parse(payload)
    assert not is_ssl_request(HandshakeResponse41(Capability(caps), b"root").encode())


def test_auth_switch_request_from_change_user() -> None:
    conv = conversation("connector")
    payload = next(p for d, _, p in conv if d == "s" and p.startswith(b"\xfemysql_native"))
    switch = AuthSwitchRequest.parse(payload)
    assert switch.plugin_name == "mysql_native_password"
    assert len(switch.scramble) == 20
    assert switch.encode() == payload
    assert AuthSwitchRequest.parse(b"\xfe") == AuthSwitchRequest(None)
    assert AuthSwitchRequest(None).encode() == b"\xfe"


def test_auth_more_data_and_switch_response() -> None:
    assert AuthMoreData.parse(b"\x01\x03").data == AuthMoreData.FAST_AUTH_SUCCESS
    assert AuthMoreData(b"\x04").encode() == b"\x01\x04"
    assert AuthSwitchResponse.parse(b"abc").encode() == b"abc"
    with pytest.raises(ProtocolError):
        AuthMoreData.parse(b"\x00")
    with pytest.raises(ProtocolError):
        AuthSwitchRequest.parse(b"\x01")


def _login_with_attrs(body: bytes) -> bytes:
    caps = (Capability.PROTOCOL_41 | Capability.LONG_PASSWORD | Capability.SECURE_CONNECTION
            | Capability.CONNECT_ATTRS)
    head = HandshakeResponse41(caps, b"u", b"").encode()
    return head + bytes((len(body),)) + body


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x01k\x05abc", "truncated"),  # the value's length runs past the attributes
        (b"\x01k", "truncated"),  # a name without a value
        (b"\xfbk\x01v", "NULL marker for connect attribute name"),
        (b"\x01k\xfb", "NULL marker for connect attribute value"),
        (b"\x01k\xfc\x05", "truncated"),  # a two-byte length cut short
    ],
)
def test_malformed_connect_attributes_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        HandshakeResponse41.parse(_login_with_attrs(body))


def test_connect_attributes_with_long_and_short_values() -> None:
    attrs = {b"a": b"x" * 300, b"": b"", b"b" * 251: b"v", b"c": b"y" * 250}
    caps = (Capability.PROTOCOL_41 | Capability.LONG_PASSWORD | Capability.SECURE_CONNECTION
            | Capability.CONNECT_ATTRS)
    login = HandshakeResponse41(caps, b"u", b"", connect_attrs=attrs)
    assert HandshakeResponse41.parse(login.encode()).connect_attrs == attrs
