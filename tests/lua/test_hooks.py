"""Every hook: what it sees, what its return values do, and the defaults (reference 3.2)."""

from __future__ import annotations

import pytest
from chassis_proxy.hooks import Decision, Injection, InjectionResult, PeerInfo
from chassis_proxy.lua.runtime import available_runtimes

from chassis import logs
from tests.lua.conftest import Env, error_of, tcp

ERR_RESPONSE = """
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = %r }
  return proxy.PROXY_SEND_RESULT
"""


def result_for(inj: Injection, packets: list[bytes] | None, **kw: object) -> InjectionResult:
    first = packets[0] if packets else b"\x00\x00\x00\x02\x00\x00\x00"
    values: dict[str, object] = {
        "first_packet": first,
        "query_status": 0,
        "affected_rows": 0,
        "insert_id": 0,
        "warning_count": 0,
        "server_status": 2,
        "row_count": 0,
        "bytes": 0,
        "query_time_us": 10,
        "response_time_us": 20,
        "binary": False,
    }
    values.update(kw)
    return InjectionResult(injection=inj, packets=packets, **values)  # type: ignore[arg-type]


def test_a_script_without_hooks_decides_nothing(env: Env) -> None:
    hooks = env.host("x = 1").open(env.conn())
    assert hooks.connect_server().decision == Decision.NO_DECISION
    assert hooks.read_handshake().decision == Decision.NO_DECISION
    assert hooks.read_auth().decision == Decision.NO_DECISION
    assert hooks.read_auth_result(b"\x00\x00\x00\x02\x00\x00\x00").decision == Decision.NO_DECISION
    assert hooks.read_query(b"\x03SELECT 1").decision == Decision.NO_DECISION
    inj = Injection(1, b"\x03SELECT 1")
    assert hooks.read_query_result(result_for(inj, None)).decision == Decision.NO_DECISION
    hooks.disconnect_client()
    assert env.lines() == []


def test_non_number_returns_mean_no_decision(env: Env) -> None:
    hooks = env.host(
        """
function connect_server() return "2" end
function read_query() return true end
function read_auth() return {} end
"""
    ).open(env.conn())
    assert hooks.connect_server().decision == Decision.NO_DECISION
    assert hooks.read_query(b"\x03x").decision == Decision.NO_DECISION
    assert hooks.read_auth().decision == Decision.NO_DECISION


# -- connect_server --------------------------------------------------------------------------------


def test_connect_server_sees_the_client_addresses_and_the_backends(env: Env) -> None:
    hooks = env.host(
        """
function connect_server()
  local c = proxy.connection.client
  seen = c.src.name .. " " .. c.dst.name .. " " .. #proxy.global.backends
  proxy.connection.backend_ndx = 2
end
function read_query()"""
        + ERR_RESPONSE % "x"
        + """end
function read_auth()
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = seen .. " " .. tostring(proxy.connection.server) }
  return proxy.PROXY_SEND_RESULT
end
"""
    ).open(conn := env.conn(backend_list=[]))
    from tests.lua.conftest import Backend

    conn.backend_list = [Backend(tcp("10.0.0.1", 3306)), Backend(tcp("10.0.0.2", 3306))]
    assert hooks.connect_server().decision == Decision.NO_DECISION
    assert conn.backend_ndx == 2
    err = error_of(hooks.read_auth().response)
    assert err.message == "127.0.0.1:50123 127.0.0.1:4040 2 nil"


def test_connect_server_can_answer_without_a_backend(env: Env) -> None:
    hooks = env.host(
        """
function connect_server()
  proxy.response = { type = proxy.MYSQLD_PACKET_RAW,
    packets = { proto.to_challenge_packet({ server_version = 50034, server_status = 2 }) } }
  return proxy.PROXY_SEND_RESULT
end
proto = require("mysql.proto")
"""
    ).open(env.conn())
    out = hooks.connect_server()
    assert out.decision == Decision.SEND_RESULT
    assert out.response is not None and len(out.response) == 1
    assert out.response[0][0] == 0x0A and len(out.response[0]) == 53


def test_connect_server_may_keep_a_pooled_connection(env: Env) -> None:
    hooks = env.host("function connect_server() return proxy.PROXY_IGNORE_RESULT end").open(env.conn())
    assert hooks.connect_server().decision == Decision.IGNORE_RESULT


def test_connect_server_with_an_unhandled_value_is_logged_and_ignored(env: Env) -> None:
    hooks = env.host("function connect_server() return 7 end").open(env.conn())
    assert hooks.connect_server().decision == Decision.NO_DECISION
    assert "(connect_server) returned 7" in env.lines(logs.CRITICAL)[0]


# -- read_handshake ------------------------------------------------------------------------------


def test_read_handshake_sees_the_server_and_can_refuse_the_client(env: Env) -> None:
    server = PeerInfo(
        src=tcp("127.0.0.1", 40000),
        dst=tcp("127.0.0.1", 3306),
        mysqld_version=50505,
        thread_id=77,
        scramble_buffer=b"s" * 20 + b"\x00",
        auth_plugin_name="mysql_native_password",
    )
    hooks = env.host(
        """
function read_handshake()
  local s = proxy.connection.server
  if proxy.connection.client.src.address ~= "10.9.9.9" then
    proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errcode = 1045, sqlstate = "28000",
      errmsg = string.format("only local connects: %d %d %d %s %s", s.mysqld_version, s.thread_id,
        #s.scramble_buffer, s.auth_plugin_name, s.dst.name) }
    return proxy.PROXY_SEND_RESULT
  end
end
"""
    ).open(env.conn(server=server))
    err = error_of(hooks.read_handshake().response)
    assert (err.error_code, err.sql_state) == (1045, "28000")
    assert err.message == "only local connects: 50505 77 21 mysql_native_password 127.0.0.1:3306"


def test_read_handshake_send_query_is_a_deprecated_alias(env: Env) -> None:
    hooks = env.host(
        "function read_handshake()" + ERR_RESPONSE.replace("PROXY_SEND_RESULT", "PROXY_SEND_QUERY") % "no"
        + "end"
    ).open(env.conn())
    out = hooks.read_handshake()
    assert out.decision == Decision.SEND_RESULT and error_of(out.response).message == "no"
    assert "deprecated" in env.lines(logs.WARNING)[0]


# -- read_auth / read_auth_result -------------------------------------------------------------------


def test_read_auth_sees_the_login_and_can_deny_a_user(env: Env) -> None:
    conn = env.conn()
    conn.client.username = "mallory"
    conn.client.default_db = "shop"
    conn.client.scrambled_password = b"\x01" * 20
    hooks = env.host(
        """
function read_auth()
  local c = proxy.connection.client
  if c.username == "mallory" then
    proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errcode = 1045, sqlstate = "28000",
      errmsg = "Access denied for " .. c.username .. " to " .. c.default_db .. " " .. #c.scrambled_password }
    return proxy.PROXY_SEND_RESULT
  end
end
"""
    ).open(conn)
    err = error_of(hooks.read_auth().response)
    assert err.message == "Access denied for mallory to shop 20"


def test_read_auth_can_replace_the_login_packet(env: Env) -> None:
    conn = env.conn()
    hooks = env.host(
        """
function read_auth()
  proxy.queries:append(1, "new-login-packet")
  return proxy.PROXY_SEND_QUERY
end
"""
    ).open(conn)
    assert hooks.read_auth().decision == Decision.SEND_QUERY
    assert [i.packet for i in conn.queries] == [b"new-login-packet"]


def test_read_auth_send_query_with_an_empty_queue_forwards_the_login(env: Env) -> None:
    hooks = env.host("function read_auth() return proxy.PROXY_SEND_QUERY end").open(env.conn())
    assert hooks.read_auth().decision == Decision.NO_DECISION
    assert "proxy.queries is empty" in env.lines(logs.CRITICAL)[0]


def test_read_auth_result_gets_the_server_packet(env: Env) -> None:
    hooks = env.host(
        """
function read_auth_result(auth)
  if auth.packet:byte() == proxy.MYSQLD_PACKET_ERR then
    proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "login failed: " .. #auth.packet }
    return proxy.PROXY_SEND_RESULT
  end
end
"""
    ).open(env.conn())
    assert hooks.read_auth_result(b"\x00\x00\x00\x02\x00\x00\x00").decision == Decision.NO_DECISION
    err = error_of(hooks.read_auth_result(b"\xff\x15\x04#28000denied").response)
    assert err.message == "login failed: 15"


# -- read_query -------------------------------------------------------------------------------------


def test_read_query_gets_the_whole_packet(env: Env) -> None:
    hooks = env.host(
        "function read_query(p)" + ERR_RESPONSE.replace("%r", "p:byte() .. '|' .. p:sub(2)") + "end"
    ).open(env.conn())
    assert error_of(hooks.read_query(b"\x03SELECT 'a\x00b'").response).message == "3|SELECT 'a\x00b'"


def test_read_query_send_query_sends_the_queue(env: Env) -> None:
    conn = env.conn()
    hooks = env.host(
        """
function read_query(packet)
  proxy.queries:append(2, packet, { resultset_is_needed = true })
  proxy.queries:prepend(1, string.char(proxy.COM_QUERY) .. "SELECT NOW()")
  proxy.queries:append(3, "\\003SELECT 3", {})
  return proxy.PROXY_SEND_QUERY
end
"""
    ).open(conn)
    assert hooks.read_query(b"\x03SELECT 2").decision == Decision.SEND_QUERY
    assert [(i.id, i.packet, i.resultset_is_needed) for i in conn.queries] == [
        (1, b"\x03SELECT NOW()", False),
        (2, b"\x03SELECT 2", True),
        (3, b"\x03SELECT 3", False),
    ]


def test_the_queue_is_emptied_before_read_query(env: Env) -> None:
    conn = env.conn()
    conn.queries.append(Injection(9, b"stale"))
    hooks = env.host(
        "function read_query() n = #proxy.queries"
        + ERR_RESPONSE.replace("%r", "tostring(n)")
        + "end"
    ).open(conn)
    assert error_of(hooks.read_query(b"\x03x").response).message == "0"


def test_queries_reset_len_and_length_operator(env: Env) -> None:
    hooks = env.host(
        """
function read_query(packet)
  proxy.queries:append(1, packet)
  proxy.queries:append(2, packet)
  local a, b = #proxy.queries, proxy.queries:len()
  proxy.queries:reset()
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = a .. b .. #proxy.queries }
  return proxy.PROXY_SEND_RESULT
end
"""
    ).open(env.conn())
    assert error_of(hooks.read_query(b"\x03x").response).message == "220"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ("proxy.queries:append('one', 'x')", "bad argument #1 to 'append' (integer expected, got string)"),
        ("proxy.queries:append(1.5, 'x')", "bad argument #1 to 'append' (integer expected, got non-integer number)"),
        ("proxy.queries:prepend(1, 42)", "bad argument #2 to 'prepend' (string expected, got number)"),
        ("proxy.queries:append(1, 'x', 'opts')", "bad argument #3 to 'append' (table expected, got string)"),
        (
            "proxy.queries:append(1, 'x', { resultset_is_needed = 1 })",
            "bad argument #3 to 'append' (:append(..., { resultset_is_needed = boolean } ), is number)",
        ),
        ("proxy.queries.append(1, 'x')", "calling 'append' on bad self"),
    ],
)
def test_queue_arguments_are_checked(env: Env, call: str, message: str) -> None:
    conn = env.conn()
    hooks = env.host(f"function read_query()\n  {call}\n  return proxy.PROXY_SEND_QUERY\nend\n").open(conn)
    assert hooks.read_query(b"\x03x").decision == Decision.NO_DECISION
    (line,) = env.lines(logs.CRITICAL)
    assert 'script.lua"]:2: ' + message in line
    assert len(conn.queries) == 0


def test_numeric_string_ids_are_accepted(env: Env) -> None:
    conn = env.conn()
    hooks = env.host("function read_query(p) proxy.queries:append('7', p) return proxy.PROXY_SEND_QUERY end").open(conn)
    assert hooks.read_query(b"\x03x").decision == Decision.SEND_QUERY
    assert conn.queries.pop().id == 7


def test_appending_without_send_query_discards_the_queue(env: Env) -> None:
    conn = env.conn()
    hooks = env.host("function read_query(p) proxy.queries:append(1, p) end").open(conn)
    assert hooks.read_query(b"\x03x").decision == Decision.NO_DECISION
    assert len(conn.queries) == 0
    assert "discarded" in env.lines(logs.CRITICAL)[0]


def test_send_query_with_an_empty_queue_forwards_the_original(env: Env) -> None:
    hooks = env.host("function read_query(p) return proxy.PROXY_SEND_QUERY end").open(env.conn())
    assert hooks.read_query(b"\x03x").decision == Decision.NO_DECISION
    assert "proxy.queries is empty" in env.lines(logs.CRITICAL)[0]


def test_internal_value_3_is_not_a_crash(env: Env) -> None:
    hooks = env.host("function read_query(p) return 3 end").open(env.conn())
    assert hooks.read_query(b"\x03x").decision == Decision.NO_DECISION
    assert "(read_query) returned 3" in env.lines(logs.CRITICAL)[0]


def test_proxy_response_is_reset_before_each_read_query_only(env: Env) -> None:
    hooks = env.host(
        """
function read_auth()
  proxy.response.type = proxy.MYSQLD_PACKET_ERR
  proxy.response.errmsg = "from read_auth"
end
function read_auth_result()
  return proxy.PROXY_SEND_RESULT   -- proxy.response survives from read_auth
end
function read_query()
  return proxy.PROXY_SEND_RESULT   -- but not into read_query
end
"""
    ).open(env.conn())
    hooks.read_auth()
    assert error_of(hooks.read_auth_result(b"\x00\x00\x00\x02\x00\x00\x00").response).message == "from read_auth"
    out = hooks.read_query(b"\x03x")
    assert error_of(out.response).message == "(lua) handling proxy.response failed, check error-log"
    assert "proxy.response.type isn't set" in env.lines(logs.CRITICAL)[0]


@pytest.mark.parametrize("runtime", available_runtimes())
def test_each_read_query_sees_a_fresh_proxy_response(env: Env, runtime: str) -> None:
    # the bridge renews proxy.response only when the last one was touched: scripts must not
    # tell (a kept table is never proxy.response again, a fresh one is empty, nil stays nil)
    env.runtime = runtime
    hooks = env.host(
        """
local kept, kept_late, step = nil, nil, 0
local function check(cond, what) if not cond then error(what, 0) end end
function read_query(packet)
  step = step + 1
  local r = proxy.response
  check(type(r) == "table" and next(r) == nil, "not a fresh table at step " .. step)
  check(r ~= kept and r ~= kept_late, "a kept table came back at step " .. step)
  check(proxy.response == r, "not the same table twice at step " .. step)
  if step == 1 then kept = r; r.type = proxy.MYSQLD_PACKET_ERR end
  if step == 3 then proxy.response = nil; check(proxy.response == nil, "nil did not stay") end
  if step == 4 then proxy.response = { type = proxy.MYSQLD_PACKET_OK } end
end
function read_query_result(inj)
  if step == 3 then check(proxy.response == nil, "nil did not last into read_query_result") end
  if step == 5 then kept_late = proxy.response; kept_late.errmsg = "late" end
end
"""
    ).open(env.conn())
    for step in range(1, 8):
        assert hooks.read_query(b"\x03x").decision == Decision.NO_DECISION, env.lines()
        if step in (3, 5):
            hooks.read_query_result(result_for(Injection(1, b"\x03x"), None))
        assert not env.lines(logs.CRITICAL), (step, env.lines())


@pytest.mark.parametrize("runtime", available_runtimes())
@pytest.mark.parametrize("max_memory", [0, 16 << 20])
def test_read_query_endings_with_and_without_a_memory_ceiling(env: Env, max_memory: int, runtime: str) -> None:
    # without a ceiling read_query takes bridge.lua's call_read_query, with one (and room)
    # call_read_query_armed: both answer in short, and every ending reads the same
    env.runtime = runtime
    hooks = env.host(
        """
function read_query(packet)
  local what = packet:sub(2)
  if what == "nothing" then return end
  if what == "string" then return "x" end
  if what == "ignore" then return proxy.PROXY_IGNORE_RESULT end
  if what == "answer" then
    proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "answered" }
    return proxy.PROXY_SEND_RESULT
  end
  if what == "queue" then proxy.queries:append(1, packet) return proxy.PROXY_SEND_QUERY end
  if what == "loop" then while true do end end
  if what == "hungry" then local t = {} while true do t[#t + 1] = ("x"):rep(1048576) .. #t end end
  error("broken " .. what, 0)
end
""",
        max_memory=max_memory,
        hook_timeout=0.5,
    ).open(env.conn())
    for _ in range(2):
        assert hooks.read_query(b"\x03nothing").decision == Decision.NO_DECISION
        assert hooks.read_query(b"\x03string").decision == Decision.NO_DECISION
        assert hooks.read_query(b"\x03queue").decision == Decision.SEND_QUERY
        assert error_of(hooks.read_query(b"\x03answer").response).message == "answered"
        assert hooks.read_query(b"\x03ignore").decision == Decision.NO_DECISION  # logged
        assert hooks.read_query(b"\x03boom").decision == Decision.NO_DECISION
        assert hooks.read_query(b"\x03loop").decision == Decision.NO_DECISION
        if max_memory:
            assert hooks.read_query(b"\x03hungry").decision == Decision.NO_DECISION
    lines = env.lines(logs.CRITICAL)
    assert sum("returned 4, which this hook does not handle" in line for line in lines) == 2
    assert sum(line.endswith("(read_query) broken boom") for line in lines) == 2, lines
    assert sum("--lua-hook-timeout" in line or "timed out" in line for line in lines) == 2, lines
    if max_memory:
        assert sum("memory" in line for line in lines) == 2, lines


def test_a_lua_error_in_read_query_forwards_the_original_query(env: Env) -> None:
    conn = env.conn()
    hooks = env.host("function read_query(p) proxy.queries:append(1, p) error('broken') end").open(conn)
    assert hooks.read_query(b"\x03x").decision == Decision.NO_DECISION
    assert len(conn.queries) == 0
    (line,) = env.lines(logs.CRITICAL)
    assert line.startswith("conn 1: (read_query) ") and line.endswith('/script.lua"]:1: broken')


def test_on_error_reject_answers_with_an_err(env: Env) -> None:
    conn = env.conn()
    hooks = env.host("function read_query(p) error('broken') end", on_error="reject").open(conn)
    out = hooks.read_query(b"\x03DROP TABLE x")
    assert out.decision == Decision.SEND_RESULT
    err = error_of(out.response)
    assert err.error_code == 1105 and "read_query() failed" in err.message
    assert "--proxy-lua-on-error=reject" in err.message


def test_on_error_reject_covers_the_auth_hooks(env: Env) -> None:
    hooks = env.host("function read_auth() error('deny list unavailable') end", on_error="reject").open(env.conn())
    out = hooks.read_auth()
    assert out.decision == Decision.SEND_RESULT and error_of(out.response).error_code == 1105


# -- read_query_result -------------------------------------------------------------------------------


def test_read_query_result_sees_the_injection_and_can_drop_it(env: Env) -> None:
    hooks = env.host(
        """
function read_query_result(inj)
  seen = inj.id .. ":" .. inj.type .. ":" .. inj.query .. ":" .. inj.query_time .. ":" .. inj.response_time
  if inj.id == 1 then return proxy.PROXY_IGNORE_RESULT end
end
function read_auth()"""
        + ERR_RESPONSE.replace("%r", "seen")
        + "end"
    ).open(env.conn())
    ok = b"\x00\x01\x00\x02\x00\x00\x00"
    out = hooks.read_query_result(result_for(Injection(1, b"\x03SELECT 1", True), [ok]))
    assert out.decision == Decision.IGNORE_RESULT
    assert error_of(hooks.read_auth().response).message == "1:1:\x03SELECT 1:10:20"
    out = hooks.read_query_result(result_for(Injection(2, b"\x03SELECT 2", True), [ok]))
    assert out.decision == Decision.NO_DECISION


def test_read_query_result_can_replace_a_buffered_result(env: Env) -> None:
    hooks = env.host(
        """
function read_query_result(inj)
  proxy.response = { type = proxy.MYSQLD_PACKET_OK, affected_rows = 5, insert_id = 6 }
  return proxy.PROXY_SEND_RESULT
end
"""
    ).open(env.conn())
    out = hooks.read_query_result(result_for(Injection(1, b"\x03x", True), [b"\x00\x00\x00\x02\x00\x00\x00"]))
    from chassis_mysql.packets import OK

    assert out.response is not None
    ok = OK.parse(out.response[0])
    assert (ok.affected_rows, ok.last_insert_id, int(ok.status), ok.warnings) == (5, 6, 2, 0)


def test_replacing_or_dropping_a_streamed_result_is_refused(env: Env) -> None:
    hooks = env.host(
        """
function read_query_result(inj)
  if inj.id == 1 then return proxy.PROXY_SEND_RESULT end
  return proxy.PROXY_IGNORE_RESULT
end
"""
    ).open(env.conn())
    assert hooks.read_query_result(result_for(Injection(1, b"\x03x"), None)).decision == Decision.NO_DECISION
    assert hooks.read_query_result(result_for(Injection(2, b"\x03x"), None)).decision == Decision.NO_DECISION
    lines = env.lines(logs.CRITICAL)
    assert "not buffered" in lines[0] and "already streamed" in lines[1]


def test_read_query_result_may_queue_more_queries(env: Env) -> None:
    conn = env.conn()
    hooks = env.host(
        """
function read_query_result(inj)
  if inj.resultset.warning_count > 0 then
    proxy.queries:append(2, string.char(proxy.COM_QUERY) .. "SHOW WARNINGS", { resultset_is_needed = true })
  end
end
"""
    ).open(conn)
    ok_with_warning = b"\x00\x00\x00\x02\x00\x01\x00"
    hooks.read_query_result(result_for(Injection(1, b"\x03x", True), [ok_with_warning], warning_count=1))
    assert [i.packet for i in conn.queries] == [b"\x03SHOW WARNINGS"]


def test_a_lua_error_in_read_query_result_forwards_the_result(env: Env) -> None:
    hooks = env.host("function read_query_result(inj) error('oops') end").open(env.conn())
    out = hooks.read_query_result(result_for(Injection(1, b"\x03x", True), [b"\x00\x00\x00\x02\x00\x00\x00"]))
    assert out.decision == Decision.NO_DECISION
    assert "(read_query_result)" in env.lines(logs.CRITICAL)[0]


# -- disconnect_client -------------------------------------------------------------------------------


def test_disconnect_client_runs_and_releases_the_instance(env: Env) -> None:
    host = env.host(
        """
function disconnect_client()
  proxy.global.gone = (proxy.global.gone or 0) + 1
  proxy.connection.backend_ndx = 0
  return proxy.PROXY_IGNORE_RESULT
end
function read_query()"""
        + ERR_RESPONSE.replace("%r", "tostring(proxy.global.gone)")
        + "end"
    )
    conn = env.conn(backend_ndx=1)
    first = host.open(conn)
    first.disconnect_client()
    assert conn.backend_ndx == 0
    assert not host._instances
    # after the disconnect the instance answers nothing
    assert first.read_query(b"\x03x").decision == Decision.NO_DECISION
    assert error_of(host.open(env.conn()).read_query(b"\x03x").response).message == "1"


def test_an_error_in_disconnect_client_is_logged(env: Env) -> None:
    host = env.host("function disconnect_client() error('bye') end")
    host.open(env.conn()).disconnect_client()
    assert "(disconnect_client)" in env.lines(logs.CRITICAL)[0]
    assert not host._instances


def test_has_hook_reports_what_the_script_defines(env: Env) -> None:
    hooks = env.host("function read_query() end").open(env.conn())
    assert hooks.has_hook("read_query") and not hooks.has_hook("read_query_result")


@pytest.mark.parametrize("max_memory", [0, 16 << 20])
def test_hook_metrics_count_every_call_of_a_defined_hook(env: Env, max_memory: int) -> None:
    # HookCalls.hook_stats: calls and seconds per hook, whichever way the call ended and
    # whichever entry read_query took; a hook the script does not define is not counted
    host = env.host(
        """
function read_auth() end
function read_query(packet)
  local what = packet:sub(2)
  if what == "number" then return proxy.PROXY_IGNORE_RESULT end
  if what == "raise" then error("asked to fail") end
end
""",
        max_memory=max_memory,
    )
    hooks = host.open(env.conn())
    hooks.read_auth()
    for what in (b"nothing", b"number", b"raise", b"nothing"):
        hooks.read_query(b"\x03" + what)
    hooks.connect_server()  # not defined
    stats = host.calls.hook_stats()
    assert stats["read_query"][0] == 4 and stats["read_query"][1] > 0
    assert stats["read_auth"][0] == 1 and stats["read_auth"][1] > 0
    assert stats["script"][0] == 1
    assert "connect_server" not in stats
