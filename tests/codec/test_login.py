"""LoginTracker: every recorded login and COM_CHANGE_USER exchange is followed to its OK,
each auth path real servers take (auth switch, plugin rounds, caching_sha2 fast and full
with and without RSA, TLS, an ERR greeting) gives its events, and anything out of turn
or malformed raises ProtocolError saying what arrived and what was expected."""

from __future__ import annotations

import pytest
from chassis_mysql.commands import ComChangeUser
from chassis_mysql.constants import Capability, ErrorCode
from chassis_mysql.errors import ProtocolError
from chassis_mysql.handshake import (
    AuthMoreData,
    AuthSwitchRequest,
    HandshakeResponse41,
    HandshakeV10,
    SSLRequest,
)
from chassis_mysql.login import LoginEvent, LoginTracker
from chassis_mysql.packets import err_packet, ok_packet
from hypothesis import given
from hypothesis import strategies as st

from .recorded import CLIENTS, conversation

E = LoginEvent
RAW = ("raw_classic", "raw_modern")
SHA2 = "caching_sha2_password"
NATIVE = "mysql_native_password"
CAPS = (Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
        | Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA | Capability.TRANSACTIONS)
SCRAMBLE = b"abcdefghij0123456789"
PEM = b"-----BEGIN PUBLIC KEY-----\nMIIBIjANBg...\n-----END PUBLIC KEY-----\n"
OK = ok_packet()


def greeting(plugin: str = NATIVE, caps: int = CAPS | Capability.SSL) -> bytes:
    return HandshakeV10(server_version="8.0.36", connection_id=7, auth_plugin_data=SCRAMBLE,
                        capabilities=Capability(caps), auth_plugin_name=plugin).encode()


def response(plugin: str | None = NATIVE, auth: bytes = b"x" * 20) -> bytes:
    return HandshakeResponse41(CAPS, b"alice", auth, auth_plugin_name=plugin).encode()


def logged_in_to_response(plugin: str = NATIVE, client_plugin: str | None = NATIVE) -> LoginTracker:
    tracker = LoginTracker()
    assert tracker.server_packet(greeting(plugin)) == E.GREETING
    assert tracker.client_packet(response(client_plugin)) == E.RESPONSE
    return tracker


def play(tracker: LoginTracker, packets: list[tuple[str, bytes]]) -> list[str]:
    """Feed ``("s" | "c", payload)`` pairs, checking ``expects`` before each; the events' names."""
    events: list[str] = []
    for side, payload in packets:
        if side == "s":
            assert tracker.expects == "server", f"after {events}"
            events.append(tracker.server_packet(payload).name)
        else:
            assert tracker.expects == "client", f"after {events}"
            events.append(tracker.client_packet(payload).name)
    return events


# -- recorded conversations -----------------------------------------------------------

@pytest.mark.parametrize("name", [*CLIENTS, *RAW])
def test_recorded_login_ends_at_its_ok(name: str) -> None:
    conv = conversation(name)
    tracker = LoginTracker()
    assert tracker.expects == "server"
    events = []
    for direction, _, payload in conv:
        if tracker.done:
            break
        side = "server" if direction == "s" else "client"
        assert tracker.expects == side
        feed = tracker.server_packet if direction == "s" else tracker.client_packet
        events.append(feed(payload))
    assert events == [E.GREETING, E.RESPONSE, E.OK]
    assert tracker.done and tracker.succeeded and tracker.expects is None
    assert tracker.error is None
    hs = HandshakeV10.parse(conv[0][2])
    assert tracker.handshake == hs
    assert tracker.response == HandshakeResponse41.parse(conv[1][2])
    assert tracker.scramble == hs.auth_plugin_data
    assert tracker.plugin == NATIVE


@pytest.mark.parametrize("name", ["connector", *RAW])
def test_recorded_change_user_is_switched_answered_empty_and_accepted(name: str) -> None:
    conv = conversation(name)
    start = next(i for i, (d, _, p) in enumerate(conv) if d == "c" and p[:1] == b"\x11")
    caps = (int(HandshakeV10.parse(conv[0][2]).capabilities)
            & int(HandshakeResponse41.parse(conv[1][2]).capabilities))
    command = ComChangeUser.parse(conv[start][2], caps)
    tracker = LoginTracker(change_user_plugin=command.auth_plugin_name, scramble=b"old")
    assert tracker.plugin == NATIVE and tracker.expects == "server"
    exchange = [("s" if d == "s" else "c", p) for d, _, p in conv[start + 1 : start + 4]]
    assert play(tracker, exchange) == ["AUTH_SWITCH", "AUTH_DATA", "OK"]
    switch = AuthSwitchRequest.parse(exchange[0][1])
    assert tracker.scramble == switch.scramble != b"old"
    assert tracker.succeeded and tracker.handshake is None and tracker.response is None


# -- the paths real servers take -------------------------------------------------------

def test_greeting_sets_plugin_and_scramble_and_waits_for_the_client() -> None:
    tracker = LoginTracker()
    assert tracker.plugin == "" and tracker.scramble == b"" and tracker.handshake is None
    assert tracker.server_packet(greeting(SHA2)) == E.GREETING
    assert tracker.plugin == SHA2 and tracker.scramble == SCRAMBLE
    assert tracker.handshake is not None and tracker.handshake.connection_id == 7
    assert tracker.expects == "client" and not tracker.done


def test_err_in_place_of_the_greeting_ends_the_login() -> None:
    tracker = LoginTracker()
    too_many = err_packet(ErrorCode.CON_COUNT_ERROR, "Too many connections", "08004")
    assert tracker.server_packet(too_many) == E.ERR
    assert tracker.done and not tracker.succeeded and tracker.expects is None
    assert tracker.error is not None and tracker.error.error_code == ErrorCode.CON_COUNT_ERROR
    assert tracker.handshake is None


def test_host_blocked_greeting_without_sql_state_is_an_err() -> None:
    blocked = b"\xff\x69\x04Host '10.0.0.1' is blocked because of many connection errors"
    tracker = LoginTracker()
    assert tracker.server_packet(blocked) == E.ERR
    assert tracker.error is not None and tracker.error.sql_state is None
    assert tracker.error.message.startswith("Host '10.0.0.1' is blocked")


def test_refused_login_keeps_the_parsed_err() -> None:
    tracker = logged_in_to_response()
    denied = err_packet(ErrorCode.ACCESS_DENIED_ERROR, "Access denied for user 'alice'", "28000")
    assert tracker.server_packet(denied) == E.ERR
    assert tracker.error is not None and tracker.error.sql_state == "28000"
    assert tracker.done and not tracker.succeeded


def test_ssl_request_then_the_response_after_tls() -> None:
    tracker = LoginTracker()
    tracker.server_packet(greeting())
    assert not tracker.expects_tls
    ssl = SSLRequest(CAPS | Capability.SSL).encode()
    assert tracker.client_packet(ssl) == E.SSL_REQUEST
    assert tracker.expects == "client" and tracker.expects_tls and tracker.response is None
    assert tracker.client_packet(response()) == E.RESPONSE
    assert not tracker.expects_tls and tracker.expects == "server"
    assert tracker.server_packet(OK) == E.OK


def test_a_second_ssl_request_after_tls_is_refused() -> None:
    tracker = LoginTracker()
    tracker.server_packet(greeting())
    ssl = SSLRequest(CAPS | Capability.SSL).encode()
    tracker.client_packet(ssl)
    with pytest.raises(ProtocolError, match=r"HandshakeResponse41.*SSLRequest"):
        tracker.client_packet(ssl)


def test_client_naming_another_plugin_changes_the_plugin_in_effect() -> None:
    tracker = logged_in_to_response(plugin=SHA2, client_plugin=NATIVE)
    assert tracker.plugin == NATIVE
    tracker = logged_in_to_response(plugin=SHA2, client_plugin=None)
    assert tracker.plugin == SHA2


def test_caching_sha2_fast_path_leaves_the_client_silent() -> None:
    tracker = logged_in_to_response(SHA2, SHA2)
    assert play(tracker, [("s", b"\x01\x03"), ("s", OK)]) == ["FAST_AUTH_OK", "OK"]
    assert tracker.succeeded


def test_caching_sha2_full_path_on_a_secure_leg_sends_the_password() -> None:
    tracker = logged_in_to_response(SHA2, SHA2)
    events = play(tracker, [("s", b"\x01\x04"), ("c", b"s3cret\x00"), ("s", OK)])
    assert events == ["FULL_AUTH", "AUTH_DATA", "OK"]
    assert tracker.public_key is None


def test_caching_sha2_full_path_with_the_servers_rsa_key() -> None:
    tracker = logged_in_to_response(SHA2, SHA2)
    events = play(tracker, [("s", b"\x01\x04"), ("c", b"\x02"), ("s", b"\x01" + PEM),
                            ("c", b"\x9a" * 256), ("s", OK)])
    assert events == ["FULL_AUTH", "PUBLIC_KEY_REQUEST", "PUBLIC_KEY", "AUTH_DATA", "OK"]
    assert tracker.public_key == PEM


def test_caching_sha2_full_path_with_a_key_the_client_already_has() -> None:
    tracker = logged_in_to_response(SHA2, SHA2)
    events = play(tracker, [("s", b"\x01\x04"), ("c", b"\x9a" * 256), ("s", OK)])
    assert events == ["FULL_AUTH", "AUTH_DATA", "OK"]


def test_caching_sha2_full_path_refused_after_the_key_request() -> None:
    tracker = logged_in_to_response(SHA2, SHA2)
    denied = err_packet(ErrorCode.ACCESS_DENIED_ERROR, "Access denied", "28000")
    events = play(tracker, [("s", b"\x01\x04"), ("c", b"\x02"), ("s", denied)])
    assert events == ["FULL_AUTH", "PUBLIC_KEY_REQUEST", "ERR"]
    assert tracker.public_key is None and not tracker.succeeded


def test_switch_to_caching_sha2_then_its_fast_path() -> None:
    """A client starting with native password is switched; 01 03 then means fast auth."""
    tracker = logged_in_to_response(SHA2, NATIVE)
    switch = AuthSwitchRequest(SHA2, b"N" * 20 + b"\x00").encode()
    events = play(tracker, [("s", switch), ("c", b"y" * 32), ("s", b"\x01\x03"), ("s", OK)])
    assert events == ["AUTH_SWITCH", "AUTH_DATA", "FAST_AUTH_OK", "OK"]
    assert tracker.plugin == SHA2 and tracker.scramble == b"N" * 20


def test_01_03_from_another_plugin_is_plugin_data_the_client_answers() -> None:
    tracker = logged_in_to_response()
    events = play(tracker, [("s", b"\x01\x03"), ("c", b"answer"), ("s", OK)])
    assert events == ["AUTH_MORE_DATA", "AUTH_DATA", "OK"]


def test_mariadb_ed25519_switch_and_signature() -> None:
    tracker = logged_in_to_response()
    nonce = bytes(range(32))
    switch = AuthSwitchRequest("client_ed25519", nonce).encode()
    events = play(tracker, [("s", switch), ("c", b"\x55" * 64), ("s", OK)])
    assert events == ["AUTH_SWITCH", "AUTH_DATA", "OK"]
    assert tracker.plugin == "client_ed25519" and tracker.scramble == nonce


def test_empty_answer_to_an_auth_switch() -> None:
    tracker = logged_in_to_response()
    switch = AuthSwitchRequest(NATIVE, SCRAMBLE + b"\x00").encode()
    assert play(tracker, [("s", switch), ("c", b""), ("s", OK)]) == ["AUTH_SWITCH", "AUTH_DATA", "OK"]


def test_old_one_byte_auth_switch_means_old_password_with_the_greetings_scramble() -> None:
    tracker = logged_in_to_response()
    assert tracker.server_packet(b"\xfe") == E.AUTH_SWITCH
    assert tracker.plugin == "mysql_old_password" and tracker.scramble == SCRAMBLE
    assert tracker.expects == "client"


def test_several_plugin_rounds() -> None:
    tracker = logged_in_to_response()
    events = play(tracker, [("s", b"\x01round1"), ("c", b"a1"), ("s", b"\x01round2"), ("c", b"a2"),
                            ("s", OK)])
    assert events == ["AUTH_MORE_DATA", "AUTH_DATA", "AUTH_MORE_DATA", "AUTH_DATA", "OK"]


@pytest.mark.parametrize(("first", "events"), [
    (OK, ["OK"]),
    (err_packet(ErrorCode.ACCESS_DENIED_ERROR, "Access denied", "28000"), ["ERR"]),
    (b"\x01\x03", ["FAST_AUTH_OK", "OK"]),
    (b"\x01\x04", ["FULL_AUTH", "AUTH_DATA", "OK"]),
])
def test_change_user_starts_with_the_servers_answer(first: bytes, events: list[str]) -> None:
    tracker = LoginTracker(change_user_plugin=SHA2, scramble=SCRAMBLE)
    assert tracker.plugin == SHA2 and tracker.scramble == SCRAMBLE
    packets = [("s", first)]
    if events[0] == "FAST_AUTH_OK":
        packets.append(("s", OK))
    elif events[0] == "FULL_AUTH":
        packets += [("c", b"pw\x00"), ("s", OK)]
    assert play(tracker, packets) == events
    assert tracker.done


def test_server_role_feeds_its_own_greeting_and_auth_switch() -> None:
    """The admin plugin: its own packets are the server's, what it reads the client's."""
    tracker = LoginTracker()
    own = HandshakeV10(server_version="5.7.0-admin", connection_id=1, auth_plugin_data=SCRAMBLE,
                       capabilities=CAPS, auth_plugin_name=NATIVE)
    assert tracker.server_packet(own.encode()) == E.GREETING
    assert tracker.client_packet(response("client_ed25519")) == E.RESPONSE
    switch = AuthSwitchRequest(NATIVE, b"Z" * 20 + b"\x00")
    assert tracker.server_packet(switch.encode()) == E.AUTH_SWITCH
    assert tracker.scramble == b"Z" * 20
    assert tracker.client_packet(b"s" * 20) == E.AUTH_DATA
    assert tracker.server_packet(OK) == E.OK and tracker.succeeded


# -- refusals --------------------------------------------------------------------------

def test_client_packet_before_the_greeting_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"the client sent a 3-byte packet starting 0x61 where "
                                            r"the server's greeting .* was expected"):
        LoginTracker().client_packet(b"abc")


def test_server_packet_while_the_client_owes_its_response_is_refused() -> None:
    tracker = LoginTracker()
    tracker.server_packet(greeting())
    with pytest.raises(ProtocolError, match=r"server sent .* where the client's HandshakeResponse41"):
        tracker.server_packet(OK)


def test_server_packet_while_the_client_owes_an_auth_answer_is_refused() -> None:
    tracker = logged_in_to_response()
    tracker.server_packet(b"\x01data")
    with pytest.raises(ProtocolError, match="the client's auth answer was expected"):
        tracker.server_packet(OK)


def test_client_packet_while_the_server_owes_the_result_is_refused() -> None:
    tracker = logged_in_to_response()
    with pytest.raises(ProtocolError, match=r"client sent a 1-byte packet .* where the server's OK"):
        tracker.client_packet(b"\x02")


def test_client_packet_after_fast_auth_ok_is_refused() -> None:
    tracker = logged_in_to_response(SHA2, SHA2)
    tracker.server_packet(b"\x01\x03")
    with pytest.raises(ProtocolError, match="client sent"):
        tracker.client_packet(b"pw\x00")


@pytest.mark.parametrize("ending", [OK, err_packet(1045, "Access denied", "28000")])
@pytest.mark.parametrize("side", ["server", "client"])
def test_any_packet_after_the_login_ended_is_refused(ending: bytes, side: str) -> None:
    tracker = logged_in_to_response()
    tracker.server_packet(ending)
    feed = tracker.server_packet if side == "server" else tracker.client_packet
    with pytest.raises(ProtocolError, match=f"the {side} sent .* after the login ended"):
        feed(b"\x03SELECT 1")


def test_empty_server_packet_is_refused() -> None:
    with pytest.raises(ProtocolError, match="empty packet where the server's greeting"):
        LoginTracker().server_packet(b"")
    tracker = logged_in_to_response()
    with pytest.raises(ProtocolError, match="empty packet where the server's OK"):
        tracker.server_packet(b"")


@pytest.mark.parametrize("head", [0x02, 0x04, 0x0A, 0xFB, 0xFC])
def test_unexpected_header_byte_in_the_auth_exchange_is_refused(head: int) -> None:
    tracker = logged_in_to_response()
    with pytest.raises(ProtocolError, match=f"starting 0x{head:02x} where the server's OK, ERR"):
        tracker.server_packet(bytes((head, 1, 2)))


def test_malformed_greeting_is_refused() -> None:
    with pytest.raises(ProtocolError, match=r"greeting is not a valid HandshakeV10.*version 9"):
        LoginTracker().server_packet(b"\x09" + greeting()[1:])
    with pytest.raises(ProtocolError, match="greeting is not a valid HandshakeV10"):
        LoginTracker().server_packet(greeting()[:20])


def test_malformed_err_is_refused() -> None:
    with pytest.raises(ProtocolError, match="malformed ERR"):
        LoginTracker().server_packet(b"\xff\x01")


def test_malformed_auth_switch_is_refused() -> None:
    tracker = logged_in_to_response()
    with pytest.raises(ProtocolError, match="malformed auth switch"):
        tracker.server_packet(b"\xfeno-nul-after-the-name")


def test_malformed_response_is_refused() -> None:
    tracker = LoginTracker()
    tracker.server_packet(greeting())
    with pytest.raises(ProtocolError, match="5-byte packet is not a valid HandshakeResponse41"):
        tracker.client_packet(b"\x00\x02\x00\x00\x00")


def test_repr_names_the_next_side() -> None:
    assert repr(LoginTracker()) == "<LoginTracker expects=server plugin=''>"


# -- properties -----------------------------------------------------------------------

ROUNDS = {
    "switch": ([("s", AuthSwitchRequest("client_ed25519", b"n" * 32).encode()), ("c", b"s" * 64)],
               ["AUTH_SWITCH", "AUTH_DATA"]),
    "more": ([("s", AuthMoreData(b"\x07data").encode()), ("c", b"a")],
             ["AUTH_MORE_DATA", "AUTH_DATA"]),
    "sha2": ([("s", AuthSwitchRequest(SHA2, SCRAMBLE + b"\x00").encode()), ("c", b"h" * 32)],
             ["AUTH_SWITCH", "AUTH_DATA"]),
}
SHA2_ENDINGS = {
    "fast": ([("s", b"\x01\x03")], ["FAST_AUTH_OK"]),
    "clear": ([("s", b"\x01\x04"), ("c", b"pw\x00")], ["FULL_AUTH", "AUTH_DATA"]),
    "rsa": ([("s", b"\x01\x04"), ("c", b"\x02"), ("s", b"\x01" + PEM), ("c", b"e" * 256)],
            ["FULL_AUTH", "PUBLIC_KEY_REQUEST", "PUBLIC_KEY", "AUTH_DATA"]),
}


@given(rounds=st.lists(st.sampled_from(sorted(ROUNDS)), max_size=5),
       ending=st.sampled_from([None, *sorted(SHA2_ENDINGS)]),
       tls=st.booleans(), refused=st.booleans())
def test_any_chain_of_auth_rounds_is_followed_to_its_end(
        rounds: list[str], ending: str | None, tls: bool, refused: bool) -> None:
    packets = [("s", greeting())]
    expected = ["GREETING"]
    if tls:
        packets.append(("c", SSLRequest(CAPS | Capability.SSL).encode()))
        expected.append("SSL_REQUEST")
    packets.append(("c", response()))
    expected.append("RESPONSE")
    for name in rounds:
        packets += ROUNDS[name][0]
        expected += ROUNDS[name][1]
    if ending is not None:
        if not rounds or rounds[-1] != "sha2":
            packets += ROUNDS["sha2"][0]
            expected += ROUNDS["sha2"][1]
        packets += SHA2_ENDINGS[ending][0]
        expected += SHA2_ENDINGS[ending][1]
    packets.append(("s", err_packet(1045, "Access denied", "28000") if refused else OK))
    expected.append("ERR" if refused else "OK")
    tracker = LoginTracker()
    assert play(tracker, packets) == expected
    assert tracker.done and tracker.succeeded is not refused and tracker.expects is None


@given(st.lists(st.tuples(st.sampled_from("sc"), st.binary(max_size=80)), max_size=12))
def test_garbage_from_either_side_raises_only_protocol_error(packets: list[tuple[str, bytes]]) -> None:
    tracker = LoginTracker()
    for side, payload in [("s", greeting()), *packets]:
        feed = tracker.server_packet if side == "s" else tracker.client_packet
        try:
            feed(payload)
        except ProtocolError:
            return


def test_with_classic_capabilities_changes_only_the_four_capability_bytes() -> None:
    from chassis_mysql.handshake import with_classic_capabilities

    response = HandshakeResponse41(capabilities=Capability.PROTOCOL_41 | Capability.SSL
                                   | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH,
                                   username=b"u", auth_response=b"x" * 20,
                                   auth_plugin_name="mysql_native_password").encode()
    patched = with_classic_capabilities(response, int(HandshakeResponse41.parse(response).capabilities)
                                        & ~int(Capability.SSL))
    assert patched[4:] == response[4:]
    assert not HandshakeResponse41.parse(patched).capabilities & Capability.SSL


def test_a_pre_4_1_login_is_recognised() -> None:
    from chassis_mysql.handshake import is_protocol_320_response

    assert is_protocol_320_response(b"\x01\x20\x00\x00\x01root\x00")
    modern = HandshakeResponse41(capabilities=Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION,
                                 username=b"root").encode()
    assert not is_protocol_320_response(modern)
    assert not is_protocol_320_response(b"\x01")
