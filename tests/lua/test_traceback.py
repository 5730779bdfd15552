"""``debug.traceback`` as scripts see it: Lua 5.1's arguments and format, the script's
frames only (the bridge's are cut), on both runtimes. End to end: tests/lua_e2e/test_tracebacks.py."""

from __future__ import annotations

import pytest
from chassis_proxy.lua.runtime import available_runtimes

from tests.lua.conftest import Env, resultset

RUNTIMES = [r for r in ("lua51", "luajit21") if r in available_runtimes()]

SCRIPT = """function deep(n, f) local r if n == 0 then r = f() else r = deep(n - 1, f) end return r end

function read_query(packet)
    local chunk = assert(loadstring("local r = " .. packet:sub(2) .. " return r", "=expr"))
    local text = setfenv(chunk, getfenv(1))()
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
        fields = { { name = "t", type = proxy.MYSQL_TYPE_STRING } }, rows = { { tostring(text) } } } }
    return proxy.PROXY_SEND_RESULT
end
"""


def traceback_of(env: Env, expr: str, runtime: str) -> str:
    hooks = env.host(SCRIPT, runtime=runtime).open(env.conn())
    _, rows = resultset(hooks.read_query(b"\x03" + expr.encode()).response)
    value = rows[0][0]
    assert value is not None
    return value.decode()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_arguments_as_in_lua_5_1(env: Env, runtime: str) -> None:
    # a table message is returned as it is; nil (given) too
    assert traceback_of(env, "type(debug.traceback({}))", runtime) == "table"
    assert traceback_of(env, "debug.traceback(nil)", runtime) == "nil"
    # levels count from the caller: 1 the expression's chunk, 2 read_query, 3 the bridge
    assert traceback_of(env, "debug.traceback('m', 3)", runtime) == "m\nstack traceback:"
    lines = traceback_of(env, "debug.traceback('m', 2)", runtime).split("\n")
    assert lines[:2] == ["m", "stack traceback:"] and len(lines) == 3, lines
    chunk = lines[2][1:].split(":")[0]  # [string "/tmp/..."], shortened by Lua past 43 characters
    assert chunk.startswith('[string "/') and lines[2] == f"\t{chunk}:5: in function <{chunk}:3>"
    lines = traceback_of(env, "debug.traceback('m')", runtime).split("\n")
    assert lines[2] == "\texpr:1: in main chunk" and len(lines) == 4, lines
    # another thread: its own frames, from level 0
    co = traceback_of(env, "(function() local co = coroutine.create(function() coroutine.yield() end) "
                           "coroutine.resume(co) return debug.traceback(co, 'co') end)()", runtime)
    assert co.startswith("co\nstack traceback:\n\t[C]: in function 'yield'"), co


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_deep_stack_shows_its_first_11_and_last_10_frames(env: Env, runtime: str) -> None:
    text = traceback_of(env, "deep(30, debug.traceback)", runtime)
    lines = text.split("\n")
    assert lines[0] == "stack traceback:"
    frames = [line.strip() for line in lines[1:]]
    assert len(frames) == 22 and frames[11] == "...", frames
    assert all("in function 'deep'" in f for f in frames[:11]), frames
    # the bottom: deep's outermost calls, the expression, read_query; nothing of the bridge
    assert frames[-1].endswith(":3>") and "expr:1:" in frames[-2], frames
    assert not any(s in text for s in ("limits.lua", "bridge.lua", "raw_pcall", "<python>"))
