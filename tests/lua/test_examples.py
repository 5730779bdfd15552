"""The example scripts shipped in chassis_proxy/lua/examples do what their comments say."""

from __future__ import annotations

from pathlib import Path

import chassis_proxy.lua
from chassis_proxy.hooks import Decision, Injection

from chassis import logs
from tests.lua.conftest import Env, resultset
from tests.lua.test_hooks import result_for

EXAMPLES = Path(chassis_proxy.lua.__file__).parent / "examples"


def example(env: Env, name: str) -> None:
    env.script = EXAMPLES / name
    assert env.script.is_file()


def test_query_logger_logs_each_query_with_its_time(env: Env) -> None:
    example(env, "query-logger.lua")
    conn = env.conn()
    hooks = env.host(basedir=EXAMPLES).open(conn)
    assert hooks.read_query(b"\x03SELECT * FROM t").decision == Decision.SEND_QUERY
    (inj,) = list(conn.queries)
    assert (inj.id, inj.packet, inj.resultset_is_needed) == (1, b"\x03SELECT * FROM t", False)
    assert hooks.read_query_result(result_for(inj, None, response_time_us=412)).decision == Decision.NO_DECISION
    assert env.lines(logs.MESSAGE) == ["conn 1: (query-logger.lua:24) 0.412 ms  ok  SELECT * FROM t"]
    # other commands pass untouched
    assert hooks.read_query(b"\x0e").decision == Decision.NO_DECISION


def test_shortcuts_rewrite_commands(env: Env) -> None:
    example(env, "shortcuts.lua")
    conn = env.conn()
    hooks = env.host().open(conn)
    for typed, sent in [
        (b"ls", b"\x03SHOW TABLES"),
        (b"  PS ;", b"\x03SHOW FULL PROCESSLIST"),
        (b"whoami", b"\x03SELECT CURRENT_USER()"),
        (b"cd `shop`", b"\x02shop"),
    ]:
        assert hooks.read_query(b"\x03" + typed).decision == Decision.SEND_QUERY
        assert [i.packet for i in conn.queries] == [sent]
    assert hooks.read_query(b"\x03SELECT 1").decision == Decision.NO_DECISION
    assert len(conn.queries) == 0


def test_proxy_version_is_answered_locally(env: Env) -> None:
    example(env, "proxy-version.lua")
    hooks = env.host().open(env.conn())
    out = hooks.read_query(b"\x03 select PROXY_VERSION() ;")
    assert out.decision == Decision.SEND_RESULT
    columns, rows = resultset(out.response)
    assert [c.name for c in columns] == [b"proxy_version()", b"lua"]
    from chassis_proxy.lua.runtime import implementation

    assert rows[0][0] == b"0.8.5" and rows[0][1] is not None
    assert rows[0][1].startswith(implementation().encode())  # "LuaJIT 2.1...", or "Lua 5.1"
    assert hooks.read_query(b"\x03SELECT version()").decision == Decision.NO_DECISION
    inj = Injection(1, b"\x03x")
    assert hooks.read_query_result(result_for(inj, None)).decision == Decision.NO_DECISION
