"""The modules scripts require (reference 3.10): mysql.proto, mysql.password,
mysql.tokenizer, chassis, posix, glib2 and lfs."""

from __future__ import annotations

import hashlib
import os
import pwd
import time
from pathlib import Path
from typing import Any

import pytest
from chassis_mysql.auth import check_native_password, scramble_native_password
from chassis_mysql.constants import Capability, FieldType, ServerStatus
from chassis_mysql.handshake import HandshakeResponse41, HandshakeV10
from chassis_mysql.packets import err_packet
from chassis_mysql.resultset import encode_binary_value
from chassis_proxy.lua import LuaConnectionHooks

from chassis import logs
from tests.lua.conftest import PROBE, Env, probe


@pytest.fixture
def lua(env: Env) -> LuaConnectionHooks:
    return env.host(
        PROBE
        + """
proto = require("mysql.proto")
password = require("mysql.password")
tokenizer = require("mysql.tokenizer")
glib2 = require("glib2")
posix = require("posix")
lfs = require("lfs")
function hex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
function unhex(h) return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end)) end
function dump(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if type(v) == "string" then v = "0x" .. hex(v) end
    out[#out + 1] = k .. "=" .. tostring(v)
  end
  return table.concat(out, " ")
end
"""
    ).open(env.conn())


def one(hooks: LuaConnectionHooks, expr: str) -> Any:
    """The single value of ``expr`` (which must not raise)."""
    ok, *values = probe(hooks, expr)
    assert ok is True and len(values) == 1, values
    return values[0]


def lua_bytes(data: bytes) -> str:
    return f"unhex('{data.hex()}')"


def fields(dump: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in dump.split(" ") if dump else []:
        k, v = item.split("=", 1)
        out[k] = bytes.fromhex(v[2:]) if v.startswith("0x") else (int(v) if v.lstrip("-").isdigit() else v)
    return out


# -- mysql.proto ---------------------------------------------------------------------------------------


def test_modules_set_their_globals_like_mysql_proxy(lua: LuaConnectionHooks) -> None:
    assert probe(lua, "rawget(_G, 'proto') ~= nil, rawget(_G, 'password') ~= nil, rawget(_G, 'tokenizer') ~= nil, "
                      "rawget(_G, 'glib2') ~= nil, rawget(_G, 'posix') ~= nil, rawget(_G, 'lfs') ~= nil, "
                      "require('mysql.proto') == proto") == [True] * 8  # fmt: skip


def test_ok_packet_round_trip(lua: LuaConnectionHooks) -> None:
    assert probe(lua, "hex(proto.to_ok_packet({}))") == [True, "00000000000000"]
    enc = one(lua, "hex(proto.to_ok_packet({ affected_rows = 300, insert_id = 7, server_status = 3, warnings = 1 }))")
    assert bytes.fromhex(enc) == b"\x00\xfc\x2c\x01\x07\x03\x00\x01\x00"
    dump = one(lua, f"dump(proto.from_ok_packet({lua_bytes(bytes.fromhex(enc))}))")
    assert fields(dump) == {"affected_rows": 300, "insert_id": 7, "server_status": 3, "warnings": 1}


def test_err_packet_round_trip(lua: LuaConnectionHooks) -> None:
    enc = one(lua, "hex(proto.to_err_packet({ errmsg = 'bad', errcode = 1064 }))")
    assert bytes.fromhex(enc) == b"\xff\x28\x04#07000bad"
    payload = err_packet(1146, "no such table", "42S02")
    assert fields(probe(lua, f"dump(proto.from_err_packet({lua_bytes(payload)}))")[1]) == {
        "errcode": 1146, "errmsg": b"no such table", "sqlstate": b"42S02",
    }  # fmt: skip
    assert probe(lua, "hex(proto.to_err_packet({}))") == [True, "ff0000233037303030"]


def test_eof_packet_round_trip(lua: LuaConnectionHooks) -> None:
    assert probe(lua, "hex(proto.to_eof_packet({ server_status = 2, warnings = 5 }))") == [True, "fe05000200"]
    decoded = fields(one(lua, "dump(proto.from_eof_packet(unhex('fe05000200')))"))
    assert decoded == {"server_status": 2, "warnings": 5}


def test_to_challenge_packet_defaults_are_mysql_proxys(lua: LuaConnectionHooks) -> None:
    enc = one(lua, "hex(proto.to_challenge_packet({ server_status = 2, server_version = 50034 }))")
    raw = bytes.fromhex(enc)
    assert len(raw) == 53
    hs = HandshakeV10.parse(raw)
    assert hs.server_version == "5.00.34"
    assert hs.auth_plugin_data == b"01234567890123456789"
    assert int(hs.capabilities) == Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION
    assert probe(lua, "proto.to_challenge_packet({}):sub(2, 7)") == [True, "5.0.99"]


def test_from_challenge_packet_of_a_mariadb_handshake(lua: LuaConnectionHooks) -> None:
    caps = Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH | Capability.CONNECT_WITH_DB
    hs = HandshakeV10("5.5.5-10.11.6-MariaDB", 42, b"abcdefghijklmnopqrst", caps, charset=45,
                      status=ServerStatus.AUTOCOMMIT, auth_plugin_name="mysql_native_password")  # fmt: skip
    got = fields(probe(lua, f"dump(proto.from_challenge_packet({lua_bytes(hs.encode())}))")[1])
    assert got == {
        "protocol_version": 10, "server_version": 50505, "thread_id": 42, "capabilities": int(caps),
        "charset": 45, "server_status": 2, "challenge": b"abcdefghijklmnopqrst\x00",
        "auth_plugin_name": b"mysql_native_password",
    }  # fmt: skip


def test_response_packet_round_trip(lua: LuaConnectionHooks) -> None:
    caps = int(
        Capability.PROTOCOL_41 | Capability.SECURE_CONNECTION | Capability.CONNECT_WITH_DB | Capability.PLUGIN_AUTH
    )
    scramble = bytes(range(20))
    enc = one(
        lua,
        f"hex(proto.to_response_packet({{ server_capabilities = {caps}, capabilities = {caps}, username = 'app', "
        f"response = {lua_bytes(scramble)}, database = 'shop', auth_plugin_name = 'mysql_native_password', "
        f"max_packet_size = 16777216, charset = 33 }}))",
    )
    raw = bytes.fromhex(enc)
    parsed = HandshakeResponse41.parse(raw)
    assert (parsed.username, parsed.auth_response, parsed.database, parsed.auth_plugin_name, parsed.charset) == (
        b"app", scramble, b"shop", "mysql_native_password", 33,
    )  # fmt: skip
    got = fields(probe(lua, f"dump(proto.from_response_packet({lua_bytes(raw)}, {caps}))")[1])
    assert got == {
        "capabilities": caps, "server_capabilities": caps, "max_packet_size": 16777216, "charset": 33,
        "username": b"app", "response": scramble, "database": b"shop", "auth_plugin_name": b"mysql_native_password",
    }  # fmt: skip


def test_to_response_packet_needs_server_capabilities(lua: LuaConnectionHooks) -> None:
    assert probe(lua, "proto.to_response_packet({ username = 'x' })") == [
        False, "probe:1: .server_capabilities has to be set (no server is attached to take it from)",
    ]  # fmt: skip
    assert probe(lua, "proto.to_response_packet({ server_capabilities = {} })")[1].endswith(
        ".server_capabilities has to be a number"
    )


def test_masterinfo_round_trip(lua: LuaConnectionHooks) -> None:
    text = "15\nmysql-bin.000007\n1234\n10.0.0.1\nrepl\nsecret\n3306\n60\n0\n\n\n\n\n\n1\n"
    got = fields(probe(lua, f"dump(proto.from_masterinfo_string({text!r}))")[1])
    assert got["master_log_file"] == b"mysql-bin.000007" and got["master_port"] == 3306
    assert got["master_ssl_verify_server_cert"] == 1 and "master_ssl_ca" not in got
    assert probe(lua, f"proto.to_masterinfo_string(proto.from_masterinfo_string({text!r})) == {text!r}") == [True, True]
    ok, msg = probe(lua, "proto.from_masterinfo_string('14\\nfile')")
    assert ok is False and "from_masterinfo_string() failed" in msg


def test_prepared_statement_packets(lua: LuaConnectionHooks) -> None:
    assert probe(lua, "proto.from_stmt_prepare_packet('\\022SELECT ?').stmt_text") == [True, "SELECT ?"]
    prepare_ok = b"\x00\x05\x00\x00\x00\x02\x00\x03\x00\x00\x01\x00"
    assert fields(probe(lua, f"dump(proto.from_stmt_prepare_ok_packet({lua_bytes(prepare_ok)}))")[1]) == {
        "stmt_id": 5, "num_columns": 2, "num_params": 3, "warnings": 1,
    }  # fmt: skip
    params = [(FieldType.LONGLONG, 0, -7), (FieldType.VAR_STRING, 0, b"abc"), (FieldType.DOUBLE, 0, 1.5),
              (FieldType.TINY, 0x8000, 200), (FieldType.LONG, 0, None)]  # fmt: skip
    bitmap = bytes([1 << 4])
    types = b"".join((int(t) | flag).to_bytes(2, "little") for t, flag, _ in params)
    values = b"".join(encode_binary_value(t, v, bool(f)) for t, f, v in params if v is not None)
    execute = b"\x17\x05\x00\x00\x00\x00\x01\x00\x00\x00" + bitmap + b"\x01" + types + values
    dump = one(
        lua,
        f"""(function()
      local e = proto.from_stmt_execute_packet({lua_bytes(execute)}, 5)
      local out = {{ e.stmt_id, e.flags, e.iteration_count, tostring(e.new_params_bound) }}
      for i, p in ipairs(e.params) do out[#out + 1] = p.type .. ":" .. tostring(p.value) end
      return table.concat(out, " ")
    end)()""",
    )
    assert dump == "5 0 1 true 8:-7 253:abc 5:1.5 1:200 3:nil"
    assert probe(lua, f"proto.stmt_id_from_stmt_execute_packet({lua_bytes(execute)})") == [True, "5"]
    assert probe(lua, "proto.from_stmt_close_packet('\\025\\007\\000\\000\\000').stmt_id") == [True, "7"]
    assert probe(lua, f"proto.from_stmt_execute_packet({lua_bytes(execute[:10])}, 0).new_params_bound") == [True, False]


@pytest.mark.parametrize(
    "call",
    [
        "proto.from_ok_packet('\\255')",
        "proto.from_err_packet('\\000')",
        "proto.from_eof_packet('')",
        "proto.from_challenge_packet('\\009xyz')",
        "proto.from_stmt_prepare_ok_packet('\\000\\001')",
        "proto.from_stmt_close_packet('\\003SELECT')",
    ],
)
def test_decoders_raise_on_malformed_input(lua: LuaConnectionHooks, call: str) -> None:
    ok, msg = probe(lua, call)
    assert ok is False and msg.startswith("probe:1: ") and "failed" in msg


def test_encoders_check_their_argument(lua: LuaConnectionHooks) -> None:
    assert probe(lua, "proto.to_ok_packet('x')") == [
        False, "probe:1: bad argument #1 to 'to_ok_packet' (table expected, got string)",
    ]  # fmt: skip


# -- mysql.password ------------------------------------------------------------------------------------


def test_password_functions_match_mysql_native_password(lua: LuaConnectionHooks) -> None:
    salt = b"0123456789abcdefghij"
    sha1 = hashlib.sha1(b"s3cret").digest()
    assert probe(lua, "hex(password.hash('s3cret'))") == [True, sha1.hex()]
    scrambled = one(lua, f"hex(password.scramble({lua_bytes(salt)}, password.hash('s3cret')))")
    assert bytes.fromhex(scrambled) == scramble_native_password(b"s3cret", salt)
    double = hashlib.sha1(sha1).digest()
    assert check_native_password(bytes.fromhex(scrambled), salt, double)
    # the 21-byte challenge of plugin-auth servers works too
    for challenge in (salt, salt + b"\x00"):
        c, d, r = lua_bytes(challenge), lua_bytes(double), lua_bytes(bytes.fromhex(scrambled))
        assert probe(lua, f"password.check({c}, {r}, {d}), hex(password.unscramble({c}, {r}, {d}))") == [
            True, True, sha1.hex(),
        ]  # fmt: skip
    assert probe(lua, f"password.check({lua_bytes(salt)}, 'x', {lua_bytes(double)})") == [True, False]
    assert probe(lua, f"password.scramble({lua_bytes(salt)}, '')") == [True, ""]


# -- mysql.tokenizer -----------------------------------------------------------------------------------


def tokens(lua: LuaConnectionHooks, sql: str) -> list[tuple[str, str]]:
    ok, out = probe(
        lua,
        f"""(function()
      local t = tokenizer.tokenize({sql!r})
      local out = {{}}
      for i = 1, #t do out[#out + 1] = t[i].token_name .. "\\t" .. t[i].text .. "\\t" .. t[i].token_id end
      return table.concat(out, "\\n")
    end)()""",
    )
    assert ok is True, out
    result = []
    for line in out.split("\n") if out else []:
        name, text, tid = line.split("\t")
        from chassis_proxy.lua.modules.tokenizer import TOKEN_IDS

        assert TOKEN_IDS[name] == int(tid)
        result.append((name, text))
    return result


def test_tokenizer_ids_and_names(lua: LuaConnectionHooks) -> None:
    assert tokens(lua, "SELECT a.b, count(*) FROM `db`.t WHERE x = 'it''s' AND y >= 1.5e3") == [
        ("TK_SQL_SELECT", "SELECT"), ("TK_LITERAL", "a"), ("TK_DOT", "."), ("TK_LITERAL", "b"),
        ("TK_COMMA", ","), ("TK_FUNCTION", "count"), ("TK_OBRACE", "("), ("TK_STAR", "*"),
        ("TK_CBRACE", ")"), ("TK_SQL_FROM", "FROM"), ("TK_LITERAL", "db"), ("TK_DOT", "."),
        ("TK_LITERAL", "t"), ("TK_SQL_WHERE", "WHERE"), ("TK_LITERAL", "x"), ("TK_EQ", "="),
        ("TK_STRING", "it's"), ("TK_SQL_AND", "AND"), ("TK_LITERAL", "y"), ("TK_GE", ">="),
        ("TK_FLOAT", "1.5e3"),
    ]  # fmt: skip
    assert probe(lua, "tokenizer.tokenize('select')[1].token_id, tokenizer.tokenize('CREATE')[1].token_id, "
                      "tokenizer.tokenize('int')[1].token_id, tokenizer.tokenize('Table')[1].token_id") == [
        True, "204", "59", "123", "222",
    ]  # fmt: skip


def test_tokenizer_comments_strings_and_operators(lua: LuaConnectionHooks) -> None:
    assert tokens(lua, "/* c */ /*!40101 SET x */ -- line\n# h\n\"dq\\\"x\" <> != := && || ; 12 .5 @v") == [
        ("TK_COMMENT", " c "), ("TK_COMMENT_MYSQL", "40101 SET x "), ("TK_COMMENT", "line"),
        ("TK_UNKNOWN", "#"), ("TK_LITERAL", "h"), ("TK_STRING", 'dq\\"x'), ("TK_NE", "<>"), ("TK_NE", "!="),
        ("TK_ASSIGN", ":="), ("TK_LOGICAL_AND", "&&"), ("TK_LOGICAL_OR", "||"), ("TK_SEMICOLON", ";"),
        ("TK_INTEGER", "12"), ("TK_FLOAT", ".5"), ("TK_LITERAL", "@v"),
    ]  # fmt: skip


def test_token_list_object(lua: LuaConnectionHooks) -> None:
    assert probe(
        lua,
        "(function() local t = tokenizer.tokenize('a b c') t[2] = nil "
        "return #t, tostring(t[2]), t[3].text, tostring(t[0]), tostring(t[4]) end)()",
    ) == [True, "3", "nil", "c", "nil", "nil"]
    ok, msg = probe(lua, "tokenizer.tokenize('a')[1].nope")
    assert ok is False and "token.nope does not exist" in msg


# -- chassis ------------------------------------------------------------------------------------------


def test_chassis_log_functions_write_source_and_line(env: Env) -> None:
    hooks = env.host(
        PROBE
        + """
local chassis = require("chassis")
function logall()
  chassis.critical("c")
  chassis.warning("w")
  chassis.message("m")
  chassis.info("i")
  chassis.debug("d")
  chassis.error("e")
  chassis.log("warning", "via log")
  print("printed", 2)
  os.print("to stdout")
end
""",
        basedir=str(env.tmp_path),
    ).open(env.conn())
    assert probe(hooks, "logall()") == [True]
    records = [(r.levelno, r.getMessage()) for r in env.caplog.records]
    assert env.script is not None
    line = env.script.read_text().splitlines().index('  chassis.critical("c")') + 1
    assert records == [
        (logs.CRITICAL, f"conn 1: (script.lua:{line}) c"),
        (logs.WARNING, f"conn 1: (script.lua:{line + 1}) w"),
        (logs.MESSAGE, f"conn 1: (script.lua:{line + 2}) m"),
        (logs.INFO, f"conn 1: (script.lua:{line + 3}) i"),
        (logs.DEBUG, f"conn 1: (script.lua:{line + 4}) d"),
        (logs.ERROR, f"conn 1: (script.lua:{line + 5}) e"),
        (logs.WARNING, f"conn 1: (script.lua:{line + 6}) via log"),
        (logs.MESSAGE, f"conn 1: (script.lua:{line + 7}) printed\t2"),
    ]
    ok, msg = probe(hooks, "chassis.log('loud', 'x')")
    assert ok is False and "invalid option 'loud'" in msg


def test_chassis_set_shutdown_and_stats(env: Env) -> None:
    calls: list[str] = []
    host = env.host(PROBE + "chassis = require('chassis')", set_shutdown=lambda: calls.append("stop"),
                    stats=lambda: {"proxy": {"connections": 3}})  # fmt: skip
    hooks = host.open(env.conn())
    assert probe(hooks, "chassis.set_shutdown()") == [True]
    assert calls == ["stop"]
    values = probe(hooks, "(function() local s = chassis.get_stats() return s.chassis.lua_mem_bytes > 0, "
                          "s.chassis.lua_mem_bytes_max, s.proxy.connections end)()")  # fmt: skip
    assert values == [True, True, str(256 * 1024 * 1024), "3"]
    assert probe(hooks, "chassis.get_stats('proxy').connections, chassis.get_stats('nope')") == [True, "3", None]


# -- posix, glib2, lfs ---------------------------------------------------------------------------------


def test_posix(lua: LuaConnectionHooks) -> None:
    me = pwd.getpwuid(os.getuid())
    assert probe(lua, "posix.getpid(), posix.getuid(), posix.getpwuid(posix.getuid()).name, "
                      "posix.getpwuid(posix.getuid()).dir, posix.getpwuid(4000000000), posix.kill(posix.getpid(), 0), "
                      "posix.kill(2^30, 0)") == [
        True, str(os.getpid()), str(os.getuid()), me.pw_name, me.pw_dir, None, "0", "-1",
    ]  # fmt: skip


def test_glib2(lua: LuaConnectionHooks) -> None:
    expr = "glib2.md5('abc'), glib2.get_current_time().tv_sec, glib2.get_current_time().tv_usec"
    ok, md5, sec, usec = probe(lua, expr)
    assert ok is True
    assert md5 == hashlib.md5(b"abc").hexdigest()
    assert abs(int(sec) - time.time()) < 5 and 0 <= int(usec) < 1_000_000
    start = time.monotonic()
    assert probe(lua, "glib2.usleep(50000)") == [True]
    assert time.monotonic() - start >= 0.05


def test_lfs(lua: LuaConnectionHooks, tmp_path: Path) -> None:
    d = tmp_path / "data"
    assert probe(lua, f"lfs.mkdir({str(d)!r})") == [True, True]
    (d / "f.txt").write_text("hello")
    assert probe(lua, f"lfs.attributes({str(d / 'f.txt')!r}).mode, lfs.attributes({str(d / 'f.txt')!r}).size, "
                      f"lfs.attributes({str(d)!r}, 'mode'), lfs.attributes({str(d)!r}).permissions:len()") == [
        True, "file", "5", "directory", "9",
    ]  # fmt: skip
    ok, missing, msg = probe(lua, f"lfs.attributes({str(d / 'nope')!r})")
    assert missing is None and "No such file" in msg
    ok, names = probe(lua, f"(function() local n = {{}} for f in lfs.dir({str(d)!r}) do n[#n+1] = f end "
                           "return table.concat(n, ',') end)()")  # fmt: skip
    assert names == ".,..,f.txt"
    assert probe(lua, f"lfs.touch({str(d / 'new')!r})") == [True, True]
    assert (d / "new").exists()
    assert probe(lua, "lfs.currentdir()") == [True, os.getcwd()]
    (d / "f.txt").unlink()
    (d / "new").unlink()
    assert probe(lua, f"lfs.rmdir({str(d)!r})") == [True, True]
    assert not d.exists()
    ok, msg = probe(lua, f"lfs.dir({str(d)!r})")
    assert ok is False and "cannot open" in msg
