"""proxy.commands: parse() for every COM_* and pretty_print(), through a real script."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from chassis_proxy.hooks import Decision

from tests.lualib.harness import Env, Lua, LuaRaised, lua_str


def parse(lua: Lua, packet: bytes) -> dict[str, Any]:
    got = lua.eval(f"return commands.parse({lua_str(packet)})")
    assert isinstance(got, dict)
    return got


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


CHANGE_USER = (
    b"\x11bob\x00" + b"\x14" + bytes(range(1, 21)) + b"shop\x00" + struct.pack("<H", 45)
    + b"mysql_native_password\x00"
)  # fmt: skip

CASES: list[tuple[bytes, dict[str, Any]]] = [
    (b"\x00", {"type_name": "COM_SLEEP"}),
    (b"\x01", {"type_name": "COM_QUIT"}),
    (b"\x02shop", {"type_name": "COM_INIT_DB", "schema": "shop"}),
    (b"\x03SELECT 1", {"type_name": "COM_QUERY", "query": "SELECT 1"}),
    (b"\x04items\x00na%", {"type_name": "COM_FIELD_LIST", "table": "items", "wildcard": "na%"}),
    (b"\x04items\x00", {"type_name": "COM_FIELD_LIST", "table": "items", "wildcard": ""}),
    (b"\x05newdb", {"type_name": "COM_CREATE_DB", "schema": "newdb"}),
    (b"\x06olddb", {"type_name": "COM_DROP_DB", "schema": "olddb"}),
    (b"\x07\x04", {"type_name": "COM_REFRESH", "flags": 4}),
    (b"\x08\x00", {"type_name": "COM_SHUTDOWN", "level": 0}),
    (b"\x08", {"type_name": "COM_SHUTDOWN"}),
    (b"\x09", {"type_name": "COM_STATISTICS"}),
    (b"\x0a", {"type_name": "COM_PROCESS_INFO"}),
    (b"\x0b", {"type_name": "COM_CONNECT"}),
    (b"\x0c" + u32(4711), {"type_name": "COM_PROCESS_KILL", "thread_id": 4711}),
    (b"\x0d", {"type_name": "COM_DEBUG"}),
    (b"\x0e", {"type_name": "COM_PING"}),
    (b"\x0f", {"type_name": "COM_TIME"}),
    (b"\x10", {"type_name": "COM_DELAYED_INSERT"}),
    (
        CHANGE_USER,
        {
            "type_name": "COM_CHANGE_USER", "username": "bob",
            "response": bytes(range(1, 21)).decode("latin-1"), "schema": "shop", "charset": 45,
            "auth_plugin_name": "mysql_native_password",
        },
    ),
    (
        b"\x12" + u32(4) + struct.pack("<H", 0) + u32(77) + b"mysql-bin.000001",
        {
            "type_name": "COM_BINLOG_DUMP", "binlog_pos": 4, "flags": 0, "server_id": 77,
            "binlog_file": "mysql-bin.000001",
        },
    ),
    (b"\x13\x04shop\x05items", {"type_name": "COM_TABLE_DUMP", "schema": "shop", "table": "items"}),
    (b"\x14", {"type_name": "COM_CONNECT_OUT"}),
    (
        b"\x15" + u32(12) + b"\x07replica" + b"\x04repl" + b"\x00" + struct.pack("<H", 3307) + u32(0) + u32(0),
        {"type_name": "COM_REGISTER_SLAVE", "server_id": 12, "hostname": "replica", "port": 3307},
    ),
    (b"\x16SELECT ?", {"type_name": "COM_STMT_PREPARE", "query": "SELECT ?"}),
    (
        b"\x17" + u32(0x01020304) + b"\x00" + u32(1),
        {"type_name": "COM_STMT_EXECUTE", "stmt_handler_id": 0x01020304, "flags": 0, "iteration_count": 1},
    ),
    (
        b"\x18" + u32(9) + struct.pack("<H", 2) + b"blob",
        {"type_name": "COM_STMT_SEND_LONG_DATA", "stmt_handler_id": 9, "param_id": 2, "data": "blob"},
    ),
    (b"\x19" + u32(9), {"type_name": "COM_STMT_CLOSE", "stmt_handler_id": 9}),
    (b"\x1a" + u32(9), {"type_name": "COM_STMT_RESET", "stmt_handler_id": 9}),
    (b"\x1b\x01\x00", {"type_name": "COM_SET_OPTION", "option": 1}),
    (b"\x1c" + u32(9) + u32(100), {"type_name": "COM_STMT_FETCH", "stmt_handler_id": 9, "num_rows": 100}),
    (b"\x1d", {"type_name": "COM_DAEMON"}),
    (b"\x1f", {"type_name": "COM_RESET_CONNECTION"}),
    (b"\xfa" + u32(3), {"type_name": "COM_STMT_BULK_EXECUTE", "stmt_handler_id": 3}),
    (b"\x99", {"type_name": "COM_(0x99)"}),
]  # fmt: skip


@pytest.mark.parametrize(("packet", "fields"), CASES, ids=[c[1]["type_name"] + f"-{i}" for i, c in enumerate(CASES)])
def test_parse_decodes_every_command(lua: Lua, packet: bytes, fields: dict[str, Any]) -> None:
    assert parse(lua, packet) == {"type": packet[0], **fields}


def test_parse_leaves_fields_of_a_truncated_packet_nil(lua: Lua) -> None:
    assert parse(lua, b"\x17\x01\x02") == {"type": 23, "type_name": "COM_STMT_EXECUTE"}


def test_parse_of_an_empty_packet_is_an_error_that_says_why(lua: Lua) -> None:
    with pytest.raises(LuaRaised, match="empty"):
        lua.eval('return commands.parse("")')
    with pytest.raises(LuaRaised, match="string expected, got nil"):
        lua.eval("return commands.parse(nil)")


def test_type_matches_the_proxy_constants(lua: Lua) -> None:
    got = lua.eval(
        "local c = commands.parse('\\3SELECT 1') "
        "local s = commands.parse('\\25\\1\\0\\0\\0') "
        "return { c.type == proxy.COM_QUERY, s.type == proxy.COM_STMT_CLOSE }"
    )
    assert got == [True, True]


@pytest.mark.parametrize(
    ("packet", "line"),
    [
        (b"\x03SELECT 1", "[COM_QUERY] SELECT 1"),
        (b"\x16SELECT ?", "[COM_STMT_PREPARE] SELECT ?"),
        (b"\x02shop", "[COM_INIT_DB] shop"),
        (b"\x01", "[COM_QUIT]"),
        (b"\x0e", "[COM_PING]"),
        (b"\x04items\x00", "[COM_FIELD_LIST] items"),
        (b"\x17" + u32(7) + b"\x00" + u32(1), "[COM_STMT_EXECUTE] 7"),
        (b"\x19" + u32(7), "[COM_STMT_CLOSE] 7"),
        (b"\x0c" + u32(42), "[COM_PROCESS_KILL] 42"),
        (b"\x09", "[COM_STATISTICS]"),
        (b"\x99", "[COM_(0x99)] ... no idea"),
    ],
)
def test_pretty_print_is_one_line_per_command(lua: Lua, packet: bytes, line: str) -> None:
    assert lua.eval(f"return commands.pretty_print(commands.parse({lua_str(packet)}))") == line


def test_a_script_answers_a_command_it_parsed(env: Env) -> None:
    host = env.host(
        """
        local commands = require("proxy.commands")
        function read_query(packet)
          local cmd = commands.parse(packet)
          if cmd.type == proxy.COM_INIT_DB then
            proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = commands.pretty_print(cmd) .. " refused" }
            return proxy.PROXY_SEND_RESULT
          end
        end
        function read_query_result() end
        """
    )
    c = env.connect(host)
    assert c.hooks.read_query(b"\x03SELECT 1").decision == Decision.NO_DECISION
    reply = c.hooks.read_query(b"\x02other")
    assert reply.decision == Decision.SEND_RESULT
    from chassis_mysql.packets import ERR

    assert reply.response is not None
    assert ERR.parse(reply.response[0]).message == "[COM_INIT_DB] other refused"
