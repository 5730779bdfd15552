"""proxy.response -> packets (reference 3.8), decoded with chassis_mysql; every case that
crashed MySQL Proxy 0.8.5 becomes an ERR for that client and one log line."""

from __future__ import annotations

import pytest
from chassis_mysql.constants import ColumnFlag, FieldType
from chassis_mysql.packets import ERR, OK
from chassis_proxy.hooks import Decision

from chassis import logs
from tests.lua.conftest import Env, error_of, resultset

FAILED = "(lua) handling proxy.response failed, check error-log"


def answer(env: Env, response: str, **kw: object) -> list[bytes]:
    hooks = env.host(
        f"function read_query(packet)\n  proxy.response = {response}\n  return proxy.PROXY_SEND_RESULT\nend\n", **kw
    ).open(env.conn())
    out = hooks.read_query(b"\x03SELECT 1")
    assert out.decision == Decision.SEND_RESULT
    assert out.response is not None
    return out.response


def test_ok_without_resultset(env: Env) -> None:
    (payload,) = answer(env, "{ type = proxy.MYSQLD_PACKET_OK, affected_rows = 3, insert_id = 12345678901 }")
    ok = OK.parse(payload)
    assert (ok.affected_rows, ok.last_insert_id, int(ok.status), ok.warnings, ok.info) == (3, 12345678901, 2, 0, "")


def test_ok_defaults_to_zero_rows_and_id(env: Env) -> None:
    (payload,) = answer(env, "{ type = proxy.MYSQLD_PACKET_OK, affected_rows = 'x' }")
    assert payload == b"\x00\x00\x00\x02\x00\x00\x00"


def test_ok_with_a_resultset(env: Env) -> None:
    payloads = answer(
        env,
        """{ type = proxy.MYSQLD_PACKET_OK, resultset = {
      fields = { { name = "id", type = proxy.MYSQL_TYPE_LONG }, { name = "name" }, { type = proxy.MYSQL_TYPE_DOUBLE } },
      rows = { { 1, "one", 1.5 }, { 12345678901234, nil, true }, { "x", {}, 0.1, "extra" }, {} } } }""",
    )
    columns, rows = resultset(payloads)
    assert [c.name for c in columns] == [b"id", b"name", b"no-field-name"]
    assert [int(c.type) for c in columns] == [FieldType.LONG, FieldType.STRING, FieldType.DOUBLE]
    c = columns[0]
    assert (c.catalog, c.schema, c.table, c.org_table, c.org_name) == (b"def", b"", b"", b"", b"")
    assert (c.charset, c.length, c.flags, c.decimals) == (8, 32, ColumnFlag.PRI_KEY, 0)
    assert rows == [
        [b"1", b"one", b"1.5"],
        [b"12345678901234", None, None],  # nil and booleans are NULL; numbers as Lua's tostring
        [b"x", None, b"0.1"],  # tables are NULL, extra cells ignored
        [None, None, None],  # missing cells are NULL
    ]
    assert payloads[len(columns) + 1] == b"\xfe\x00\x00\x02\x00"
    assert payloads[-1] == b"\xfe\x00\x00\x02\x00"


def test_a_resultset_without_rows_is_empty(env: Env) -> None:
    payloads = answer(env, "{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = { { name = 'a' } } } }")
    columns, rows = resultset(payloads)
    assert [c.name for c in columns] == [b"a"] and rows == []


def test_field_name_and_type_fallbacks_are_logged(env: Env) -> None:
    answer(env, "{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = { { name = {}, type = 'x' } }, rows = {} } }")
    warnings = env.lines(logs.WARNING)
    assert len(warnings) == 2
    assert "fields[1].name is not a string" in warnings[0] and "MYSQL_TYPE_STRING" in warnings[1]


def test_many_columns_use_a_length_encoded_count(env: Env) -> None:
    payloads = answer(
        env,
        """(function()
      local f, r = {}, {}
      for i = 1, 300 do f[i] = { name = "c" .. i } r[i] = i end
      return { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = f, rows = { r } } }
    end)()""",
    )
    assert payloads[0] == b"\xfc\x2c\x01"
    columns, rows = resultset(payloads)
    assert len(columns) == 300 and rows[0][299] == b"300"


def test_err(env: Env) -> None:
    response = "{ type = proxy.MYSQLD_PACKET_ERR, errmsg = 'no way', errcode = 1045, sqlstate = '28000' }"
    (payload,) = answer(env, response)
    err = ERR.parse(payload)
    assert (err.error_code, err.sql_state, err.message) == (1045, "28000", "no way")


def test_err_defaults_and_numeric_string_code(env: Env) -> None:
    err = ERR.parse(answer(env, "{ type = proxy.MYSQLD_PACKET_ERR, errmsg = 'x', errcode = '1234' }")[0])
    assert (err.error_code, err.sql_state) == (1234, "07000")


def test_err_without_errmsg(env: Env) -> None:
    err = ERR.parse(answer(env, "{ type = proxy.MYSQLD_PACKET_ERR, errcode = 1 }")[0])
    assert (err.error_code, err.message) == (1105, "(lua) proxy.response.errmsg is nil")


def test_err_message_is_cut_at_512_bytes_and_sqlstate_at_5(env: Env) -> None:
    response = "{ type = proxy.MYSQLD_PACKET_ERR, errmsg = string.rep('y', 600), sqlstate = 'HY0001' }"
    err = ERR.parse(answer(env, response)[0])
    assert len(err.message) == 512 and err.sql_state == "HY000"


def test_err_with_code_zero_is_sent_as_written(env: Env) -> None:
    # the suite's error_struct: 0.8.5 sent errno 0 with the script's SQL state and empty
    # message (libmariadb shows such an ERR as its own error 5026, libmysqlclient 5.x as 0)
    response = "{ type = proxy.MYSQLD_PACKET_ERR, errmsg = '', errcode = '0000', sqlstate = 'xxxxx' }"
    assert answer(env, response) == [b"\xff\x00\x00#xxxxx"]


def test_errno_is_not_read_only_errcode(env: Env) -> None:
    err = ERR.parse(answer(env, "{ type = proxy.MYSQLD_PACKET_ERR, errmsg = 'x', errno = 1205 }")[0])
    assert err.error_code == 1105


def test_raw_packets(env: Env) -> None:
    payloads = answer(env, "{ type = proxy.MYSQLD_PACKET_RAW, packets = { '\\255\\001\\000#HY000raw', 'two', 3 } }")
    assert payloads == [b"\xff\x01\x00#HY000raw", b"two", b"3"]


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("nil", "proxy.response isn't set"),
        ("'text'", "proxy.response has to be a table, is a string"),
        ("{}", "proxy.response.type isn't set"),
        ("{ type = 'ok' }", "proxy.response.type has to be a number, is a string"),
        ("{ type = 7 }", "proxy.response.type is unknown: 7"),
        ("{ type = proxy.MYSQLD_PACKET_RAW }", "proxy.response.packets isn't set"),
        ("{ type = proxy.MYSQLD_PACKET_RAW, packets = 'x' }", "proxy.response.packets has to be a table"),
        # the hard crashes of MySQL Proxy 0.8.5:
        ("{ type = proxy.MYSQLD_PACKET_RAW, packets = { 'a', {} } }", "packets should be an array of strings, [2]"),
        ("{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = {}, rows = {} } }", "fields is empty"),
        ("{ type = proxy.MYSQLD_PACKET_OK, resultset = { rows = {} } }", "resultset.fields has to be a table"),
        ("{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = { { name = 'a' } }, rows = 5 } }",
         "resultset.rows has to be a table, is a number"),
        ("{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = { 'a' }, rows = {} } }",
         "fields[1] should be a table, but is a string"),
        ("{ type = proxy.MYSQLD_PACKET_OK, resultset = { fields = { { name = 'a' } }, rows = { 1 } } }",
         "rows[1] should be a table, but is a number"),
    ],
)
def test_unusable_responses_give_an_err_and_one_log_line(env: Env, response: str, reason: str) -> None:
    err = error_of(answer(env, response))
    assert (err.error_code, err.sql_state, err.message) == (1105, "07000", FAILED)
    (line,) = env.lines(logs.CRITICAL)
    assert line.startswith("conn 1: (read_query) ") and reason in line


def test_a_metamethod_error_while_reading_the_response_is_contained(env: Env) -> None:
    err = error_of(answer(env, "setmetatable({}, { __index = function() error('boom') end })"))
    assert err.message == FAILED
    assert "boom" in env.lines(logs.CRITICAL)[0]


def test_the_host_keeps_answering_after_a_bad_response(env: Env) -> None:
    hooks = env.host(
        """
function read_query(packet)
  if packet:sub(2) == "bad" then proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = {} } }
  else proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = 1 } end
  return proxy.PROXY_SEND_RESULT
end
"""
    ).open(env.conn())
    assert error_of(hooks.read_query(b"\x03bad").response).message == FAILED
    assert OK.parse(hooks.read_query(b"\x03good").response[0]).affected_rows == 1  # type: ignore[index]


def test_result_sets_follow_the_negotiated_deprecate_eof(env: Env) -> None:
    from dataclasses import dataclass

    from chassis_mysql.constants import Capability
    from chassis_mysql.resultset import column_count

    from tests.lua.conftest import Conn

    @dataclass
    class ModernConn(Conn):
        client_capabilities: int = int(Capability.PROTOCOL_41 | Capability.DEPRECATE_EOF)

    hooks = env.host(
        "function read_query() proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = "
        "{ fields = { { name = 'a' } }, rows = { { 'x' } } } } return proxy.PROXY_SEND_RESULT end"
    ).open(ModernConn(connection_id=1))
    payloads = hooks.read_query(b"\x03q").response
    assert payloads is not None
    assert column_count(payloads[0]) == 1 and len(payloads) == 4  # count, definition, row, OK
    assert payloads[2] == b"\x01x"  # the row comes right after the definition: no EOF
    ok = OK.parse(payloads[-1], Capability.PROTOCOL_41 | Capability.DEPRECATE_EOF)
    assert ok.header == 0xFE and int(ok.status) == 2
