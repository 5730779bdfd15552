"""COM_CHANGE_USER answered with a bare ``0xFE`` (switch to the old password) or ``0x01``
(more authentication data): the proxy relays it and the client's answer, in step (the
suite's ``invalid_response_packets``; MySQL Proxy 0.8.5 closed the client there: "COM_CHANGE_USER's
auth-method-switch detected, but is currently not supported").

The server is a second chassis whose script plays one (``connect_server`` answers with a
greeting, ``read_query`` with ``proxy.response``), as the suite's mock servers do; the
proxy under test forwards everything. The client is a raw socket, since no client library
lets a test answer an old-password switch with chosen bytes.
"""

from __future__ import annotations

import struct

import pytest

from tests.lua_e2e.conftest import LuaProxyFactory
from tests.proxy.rawclient import RawClient, login_packet

pytestmark = pytest.mark.timeout(60)

MOCK = """
local proto = require("mysql.proto")

function connect_server()
    proxy.response = { type = proxy.MYSQLD_PACKET_RAW, packets = { proto.to_challenge_packet({}) } }
    return proxy.PROXY_SEND_RESULT
end

function read_query(packet)
    local first = packet:byte()
    if first == proxy.COM_CHANGE_USER then
        -- "0xFE" or "0x01" comes as the user name's first letter: f or m
        local bare = packet:sub(2, 2) == "f" and "\\254" or "\\001"
        proxy.response = { type = proxy.MYSQLD_PACKET_RAW, packets = { bare } }
    elseif packet:sub(1, 7) == "answer:" then
        -- the client's answer to the switch: a script playing a server judges it
        proxy.response = { type = proxy.MYSQLD_PACKET_OK }
    elseif first == proxy.COM_QUERY then
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = { { name = "q", type = proxy.MYSQL_TYPE_STRING } }, rows = { { packet:sub(2) } } } }
    else
        proxy.response = { type = proxy.MYSQLD_PACKET_OK }
    end
    return proxy.PROXY_SEND_RESULT
end
"""

FORWARD = "function read_query(packet) end\n"


def change_user(user: str) -> bytes:
    """COM_CHANGE_USER: user, empty auth response, no database, charset 45, a plugin."""
    return b"\x11" + user.encode() + b"\0" + b"\0" + b"\0" + struct.pack("<H", 45) + b"mysql_native_password\0"


@pytest.mark.parametrize(("user", "bare"), [("fe", b"\xfe"), ("more", b"\x01")])
def test_a_bare_auth_switch_or_more_data_is_relayed_with_the_clients_answer(
        lua_proxy: LuaProxyFactory, user: str, bare: bytes) -> None:
    mock = lua_proxy(MOCK)
    proxy = lua_proxy(FORWARD, backends=[f"{mock.host}:{mock.port}"])
    with RawClient(proxy.host, proxy.port) as client:
        client.read_packet()  # greeting
        client.send_packet(login_packet("root"), 1)
        assert client.read_packet()[1][0] == 0x00
        client.send_packet(change_user(user), 0)
        assert client.read_packet() == (1, bare)
        client.send_packet(b"answer:12", 2)  # what the client owes: not a command
        seq, ok = client.read_packet()
        assert (seq, ok[0]) == (3, 0x00)
        # in step: the next command gets its own answer
        client.send_packet(b"\x03SELECT 'next'", 0)
        assert client.read_packet() == (1, b"\x01")
    assert proxy.critical_lines() == [] and mock.critical_lines() == []
