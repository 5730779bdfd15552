"""The injection object of read_query_result(inj) and inj.resultset (reference 3.7)."""

from __future__ import annotations

from chassis_mysql.constants import Capability, ColumnFlag, FieldType, ServerStatus
from chassis_mysql.packets import eof_packet, err_packet, ok_packet
from chassis_mysql.resultset import (
    ColumnDefinition,
    DateTimeValue,
    TimeValue,
    encode_binary_row,
    text_column,
    text_resultset,
)
from chassis_proxy.hooks import Decision, Injection

from chassis import logs
from tests.lua.conftest import Env, error_of
from tests.lua.test_hooks import result_for

# read_query_result answers with an ERR whose message is what `describe(inj)` returns
SCRIPT = """
function read_query_result(inj)
  local ok, text = pcall(describe, inj)
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = ok and text or ("error: " .. tostring(text)) }
  return proxy.PROXY_SEND_RESULT
end
"""


def describe(env: Env, body: str, inj: Injection, packets: list[bytes] | None, **kw: object) -> str:
    hooks = env.host(SCRIPT + "function describe(inj)\n" + body + "\nend\n").open(env.conn())
    out = hooks.read_query_result(result_for(inj, packets, **kw))
    if packets is None:  # a streamed result cannot be replaced: read the log instead
        assert out.decision == Decision.NO_DECISION
        return env.lines(logs.CRITICAL)[0]
    return error_of(out.response).message


def people() -> list[bytes]:
    columns = [
        ColumnDefinition(name=b"id", type=FieldType.LONG, table=b"p", org_table=b"people", org_name=b"pid"),
        text_column("name"),
    ]
    status = ServerStatus.AUTOCOMMIT | ServerStatus.IN_TRANS
    return text_resultset(columns, [[1, "ann"], [2, None], [3, "cy"]], status=status)


def test_rows_iterate_the_text_resultset(env: Env) -> None:
    body = """
  local out = {}
  for row in inj.resultset.rows do out[#out + 1] = row[1] .. "=" .. tostring(row[2]) end
  -- each access of .rows starts again
  for row in inj.resultset.rows do out[#out + 1] = row[1] break end
  return table.concat(out, ",")
"""
    inj = Injection(1, b"\x03SELECT id, name FROM people", True)
    assert describe(env, body, inj, people(), row_count=3, bytes=20) == "1=ann,2=nil,3=cy,1"


def test_fields(env: Env) -> None:
    body = """
  local f = inj.resultset.fields
  local a = f[1]
  return table.concat({ #f, a.name, a.type, a.table, a.org_table, a.org_name, f[2].name, f[2].type,
    tostring(f[3]), tostring(f[0]), tostring(a.charset) }, " ")
"""
    got = describe(env, body, Injection(1, b"\x03q", True), people())
    assert got == "2 id 3 p people pid name 253 nil nil nil"


def test_summary_fields_and_flags(env: Env) -> None:
    body = """
  local r = inj.resultset
  local f = r.flags
  return table.concat({ r.query_status, tostring(r.affected_rows), tostring(r.insert_id), r.warning_count,
    r.row_count, r.bytes, tostring(f.in_trans), tostring(f.auto_commit), tostring(f.no_good_index_used),
    tostring(f.no_index_used), #r.raw, r.raw:byte(), tostring(r.unknown) }, " ")
"""
    got = describe(
        env, body, Injection(1, b"\x03q", True), people(), affected_rows=None, insert_id=None,
        row_count=3, bytes=21, warning_count=1,
        server_status=int(ServerStatus.AUTOCOMMIT | ServerStatus.IN_TRANS | ServerStatus.NO_INDEX_USED),
    )  # fmt: skip
    assert got == "0 nil nil 1 3 21 true true false true 1 2 nil"


def test_ok_result(env: Env) -> None:
    body = """
  local r = inj.resultset
  local n = 0
  for _ in r.rows do n = n + 1 end
  return table.concat({ r.query_status, r.affected_rows, r.insert_id, #r.fields, n, #r.raw }, " ")
"""
    ok = ok_packet(affected_rows=4, last_insert_id=9)
    got = describe(env, body, Injection(1, b"\x03INSERT", True), [ok], affected_rows=4, insert_id=9)
    assert got == "0 4 9 0 0 7"


def test_err_result(env: Env) -> None:
    body = """
  local r = inj.resultset
  local e = proto.from_err_packet(r.raw)
  return r.query_status .. " " .. #r.fields .. " " .. e.errcode .. " " .. e.errmsg
"""
    err = err_packet(1146, "Table 'x' doesn't exist", "42S02")
    got = describe(env, "proto = require('mysql.proto')" + body, Injection(1, b"\x03q", True), [err],
                   query_status=255, affected_rows=None, insert_id=None)  # fmt: skip
    assert got == "255 0 1146 Table 'x' doesn't exist"


def test_local_infile_request_has_no_query_status(env: Env) -> None:
    body = "return tostring(inj.resultset.query_status) .. ' ' .. #inj.resultset.fields"
    got = describe(env, body, Injection(1, b"\x03LOAD DATA LOCAL", True), [b"\xfb/tmp/f.csv"], query_status=None)
    assert got == "nil 0"


def test_only_the_first_result_of_a_multi_resultset_is_exposed(env: Env) -> None:
    more = ServerStatus.AUTOCOMMIT | ServerStatus.MORE_RESULTS_EXISTS
    first = text_resultset([text_column("a")], [["1"], ["2"]], status=more)
    second = text_resultset([text_column("b"), text_column("c")], [["x", "y"]])
    body = """
  local out = {}
  for row in inj.resultset.rows do out[#out + 1] = row[1] end
  return #inj.resultset.fields .. ":" .. table.concat(out, ",")
"""
    assert describe(env, body, Injection(1, b"\x03q", True), first + second) == "1:1,2"


def test_binary_rows_are_shown_as_text(env: Env) -> None:
    columns = [
        ColumnDefinition(name=b"i", type=FieldType.LONGLONG),
        ColumnDefinition(name=b"u", type=FieldType.TINY, flags=ColumnFlag.UNSIGNED),
        ColumnDefinition(name=b"d", type=FieldType.DOUBLE),
        ColumnDefinition(name=b"s", type=FieldType.VAR_STRING),
        ColumnDefinition(name=b"dt", type=FieldType.DATETIME),
        ColumnDefinition(name=b"day", type=FieldType.DATE),
        ColumnDefinition(name=b"t", type=FieldType.TIME),
        ColumnDefinition(name=b"n", type=FieldType.LONG),
    ]
    row = encode_binary_row(
        [-5, 250, 2.5, b"hi", DateTimeValue(2024, 2, 29, 13, 4, 5), DateTimeValue(2024, 1, 2),
         TimeValue(True, 1, 2, 3, 4), None],
        columns,
    )  # fmt: skip
    packets = [b"\x08", *(c.encode() for c in columns), eof_packet(), row, eof_packet()]
    body = """
  local out = {}
  for row in inj.resultset.rows do
    for i = 1, 8 do out[#out + 1] = tostring(row[i]) end
  end
  return table.concat(out, "|")
"""
    got = describe(env, body, Injection(1, b"\x17\x01\x00\x00\x00", True), packets, binary=True)
    assert got == "-5|250|2.5|hi|2024-02-29 13:04:05|2024-01-02|-26:03:04|nil"


def test_unbuffered_results_refuse_raw_fields_and_rows(env: Env) -> None:
    hooks = env.host(
        """
function read_query_result(inj)
  local out = {}
  for _, key in ipairs({ "raw", "fields", "rows" }) do
    local ok, err = pcall(function() return inj.resultset[key] end)
    out[#out + 1] = tostring(ok) .. " " .. tostring(err)
  end
  proxy.global.seen = table.concat(out, "\\n")
end
function read_query()
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = proxy.global.seen }
  return proxy.PROXY_SEND_RESULT
end
"""
    ).open(env.conn())
    hooks.read_query_result(result_for(Injection(1, b"\x03q"), None))
    lines = error_of(hooks.read_query(b"\x03x").response).message.split("\n")
    assert [line.split(": ", 1)[1] for line in lines] == [
        f".resultset.{key} isn't available if 'resultset_is_needed ~= true'" for key in ("raw", "fields", "rows")
    ]
    # the script's own pcall sees Lua's chunk name: the path, shortened at its end past 60 characters
    assert all(line.startswith('false [string "/') and '"]:5: ' in line for line in lines)


def test_unbuffered_results_still_have_the_summary(env: Env) -> None:
    hooks = env.host(
        """
function read_query_result(inj)
  local r = inj.resultset
  proxy.global.seen = r.row_count .. " " .. r.bytes .. " " .. inj.query_time .. " " .. tostring(r.affected_rows)
end
function read_query()
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = proxy.global.seen }
  return proxy.PROXY_SEND_RESULT
end
"""
    ).open(env.conn())
    hooks.read_query_result(result_for(Injection(1, b"\x03q"), None, row_count=7, bytes=99, query_time_us=1234,
                                       affected_rows=None))  # fmt: skip
    assert error_of(hooks.read_query(b"\x03x").response).message == "7 99 1234 nil"


def test_unknown_injection_keys_are_nil_and_logged(env: Env) -> None:
    got = describe(env, "return tostring(inj.nope)", Injection(1, b"\x03q", True), [ok_packet()])
    assert got == "nil"
    assert "inj[nope] ... not found" in env.lines(logs.MESSAGE)[0]


def test_the_injection_is_read_only(env: Env) -> None:
    got = describe(env, "inj.id = 5", Injection(1, b"\x03q", True), [ok_packet()])
    assert got.startswith("error: ") and "inj.id is read-only" in got


def test_an_invalid_row_raises_in_the_script(env: Env) -> None:
    packets = [b"\x01", text_column("a").encode(), eof_packet(), b"\x05ab", eof_packet()]
    body = "for row in inj.resultset.rows do end return 'unreachable'"
    got = describe(env, body, Injection(1, b"\x03q", True), packets)
    assert got.startswith("error: ") and "row 1 is invalid" in got


def test_rows_across_several_batches_keep_order_and_nulls(env: Env) -> None:
    """The rows iterator takes a few rows per call into Python (ROWS_BATCH_VALUES values,
    ROWS_BATCH_BYTES bytes): 1,000 rows of 3 columns, NULLs and a long value included,
    come out whole and in order, and the count, the holes and # are those of one row."""
    columns = [text_column("n"), text_column("maybe"), text_column("blob")]
    rows = [[i, None if i % 7 == 0 else f"v{i}", "x" * (5000 if i == 500 else 3)] for i in range(1, 1001)]
    packets = text_resultset(columns, rows)
    body = """
  local n, nulls, sum, long = 0, 0, 0, 0
  for row in inj.resultset.rows do
    n = n + 1
    if tonumber(row[1]) ~= n then return "out of order at " .. n end
    if row[2] == nil then nulls = nulls + 1 elseif row[2] ~= "v" .. n then return "bad value at " .. n end
    if #row[3] > 3 then long = n end
    sum = sum + #row
  end
  return n .. " " .. nulls .. " " .. long .. " " .. sum
"""
    got = describe(env, body, Injection(1, b"\x03q", True), packets)
    assert got == f"1000 {1000 // 7} 500 3000"


def test_an_invalid_row_after_good_ones_raises_when_reached(env: Env) -> None:
    packets = [b"\x01", text_column("a").encode(), b"\x01a", b"\x01b", b"\x05ab", b"\x01d", eof_packet()]
    packets.insert(2, eof_packet())
    body = """
  local seen = {}
  local ok, err = pcall(function() for row in inj.resultset.rows do seen[#seen + 1] = row[1] end end)
  return table.concat(seen, ",") .. "|" .. tostring(ok) .. "|" .. tostring(err)
"""
    got = describe(env, body, Injection(1, b"\x03q", True), packets)
    seen, ok, err = got.split("|", 2)
    assert (seen, ok) == ("a,b", "false") and "row 3 is invalid" in err


def test_tracked_system_variables_of_an_ok_result(env: Env) -> None:
    """MariaDB's last_gtid (session_track_system_variables) is on the resultset when the
    client negotiated SESSION_TRACK (rw-splitting.lua's causal reads use it)."""
    variable = b"\x09last_gtid\x060-1-42"
    block = b"\x00" + bytes([len(variable)]) + variable
    status = ServerStatus.AUTOCOMMIT | ServerStatus.SESSION_STATE_CHANGED
    ok = b"\x00\x01\x00" + int(status).to_bytes(2, "little") + b"\x00\x00\x00" + bytes([len(block)]) + block
    script = SCRIPT + """function describe(inj)
  local v = inj.resultset.session_variables
  return v and v.last_gtid or "none"
end
"""
    def last_gtid(caps: int, first: bytes, status: int) -> str:
        conn = env.conn()
        conn.client_capabilities = caps  # type: ignore[attr-defined]
        hooks = env.host(script).open(conn)
        out = hooks.read_query_result(result_for(Injection(1, b"\x03INSERT", True), [first],
                                                 server_status=int(status)))
        return error_of(out.response).message

    track = int(Capability.PROTOCOL_41 | Capability.SESSION_TRACK)
    assert last_gtid(track, ok, status) == "0-1-42"
    assert last_gtid(int(Capability.PROTOCOL_41), ok, status) == "none"  # not negotiated
    assert last_gtid(track, ok_packet(), ServerStatus.AUTOCOMMIT) == "none"  # nothing changed


def test_an_injection_kept_past_its_hook_reads_its_own_rows(env: Env) -> None:
    """The inj object holds its own result: a script that keeps one reads the same rows
    later, after other results came in (the view crosses into Lua with the object)."""
    hooks = env.host("""
kept = {}
function read_query_result(inj)
  kept[#kept + 1] = inj
end
function read_query(packet)
  local out = {}
  for _, inj in ipairs(kept) do
    for row in inj.resultset.rows do out[#out + 1] = inj.id .. ":" .. tostring(row[2]) end
    out[#out + 1] = inj.id .. ":" .. inj.resultset.fields[1].org_name
  end
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = table.concat(out, ",") }
  return proxy.PROXY_SEND_RESULT
end
""").open(env.conn())
    others = text_resultset([text_column("a"), text_column("b")], [["x", "other"]])
    hooks.read_query_result(result_for(Injection(1, b"\x03SELECT 1", True), people()))
    hooks.read_query_result(result_for(Injection(2, b"\x03SELECT 2", True), others))
    out = hooks.read_query(b"\x03SELECT 3")
    assert error_of(out.response).message == "1:ann,1:nil,1:cy,1:pid,2:other,2:a"
