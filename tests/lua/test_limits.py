"""--lua-hook-timeout and --lua-max-memory: a looping or hungry hook is interrupted, its
client gets the default (or an ERR with --proxy-lua-on-error=reject), and the Lua state
keeps serving every other connection."""

from __future__ import annotations

import time

import pytest
from chassis_proxy.hooks import Decision, ScriptLoadError
from chassis_proxy.lua import EXEC_FAILED, parse_memory_size
from chassis_proxy.lua.runtime import available_runtimes

from chassis import logs
from tests.lua.conftest import PROBE, Env, error_of, probe


@pytest.fixture(autouse=True, params=available_runtimes())
def each_runtime(request: pytest.FixtureRequest, env: Env) -> str:
    """Every limit is tested on LuaJIT and on PUC Lua 5.1 (the fallback): they differ in
    how hooks, coroutines and error handlers interact."""
    env.runtime = request.param
    return str(request.param)


TIMEOUT = 0.2
# Upper bounds only prove that a call returns: the machine may be loaded, the deadline is
# wall-clock time.
SLACK = 10.0


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


LOOPS = {
    "while_true": "while true do end",
    "numeric_for": "local x = 0 for i = 1, 1e15 do x = x + i end",
    "repeat": "local i = 0 repeat i = i + 1 until false",
    "recursion_free_calls": "local function f(n) return n + 1 end local n = 0 while true do n = f(n) end",
    "string_work": "local s = '' while true do s = ('x'):rep(10) .. s:sub(1, 5) end",
    "pcall_swallows": "while true do pcall(function() while true do end end) end",
    "xpcall_swallows": "while true do xpcall(function() while true do end end, function(e) return e end) end",
    "xpcall_handler_loops": "xpcall(function() error('x') end, function() while true do end end)",
    "coroutine_resume": "local co = coroutine.create(function() while true do end end) "
    "while true do coroutine.resume(co) end",
    "coroutine_wrap": "local f = coroutine.wrap(function() while true do end end) f()",
    "error_in_loop_caught": "while true do local ok = pcall(error, 'x') end",
}


@pytest.mark.parametrize("loop", list(LOOPS.values()), ids=list(LOOPS))
def test_a_looping_hook_is_interrupted_and_the_query_forwarded(env: Env, loop: str) -> None:
    host = env.host(PROBE + f"function read_auth()\n  {loop}\nend\n", hook_timeout=TIMEOUT)
    hooks = host.open(env.conn())
    out, elapsed = timed(hooks.read_auth)
    assert out.decision == Decision.NO_DECISION
    assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    (line,) = env.lines(logs.CRITICAL)
    assert line == "conn 1: (read_auth) read_auth() ran longer than --lua-hook-timeout=0.2s and was interrupted"
    # the same connection and a new one keep working
    assert probe(hooks, "1 + 1") == [True, "2"]
    assert probe(host.open(env.conn()), "'still alive'") == [True, "still alive"]


def test_an_interrupted_read_query_is_rejected_with_on_error_reject(env: Env) -> None:
    host = env.host("function read_query() while true do end end", hook_timeout=TIMEOUT, on_error="reject")
    out = host.open(env.conn()).read_query(b"\x03DELETE FROM t")
    assert out.decision == Decision.SEND_RESULT
    assert "read_query() failed" in error_of(out.response).message


def test_a_looping_top_level_refuses_the_client(env: Env) -> None:
    host = env.host("while true do end", hook_timeout=TIMEOUT)
    with pytest.raises(ScriptLoadError) as exc:
        host.open(env.conn())
    assert str(exc.value) == EXEC_FAILED
    assert "the script's top level ran longer than --lua-hook-timeout=0.2s" in env.lines(logs.CRITICAL)[0]


def test_usleep_never_sleeps_past_the_deadline(env: Env) -> None:
    host = env.host("function read_auth() require('glib2').usleep(5000000) end", hook_timeout=TIMEOUT)
    out, elapsed = timed(host.open(env.conn()).read_auth)
    assert out.decision == Decision.NO_DECISION and elapsed < TIMEOUT + SLACK
    assert "ran longer than" in env.lines(logs.CRITICAL)[0]


def test_each_hook_call_gets_its_own_time(env: Env) -> None:
    hooks = env.host(PROBE + "function read_auth() require('glib2').usleep(350000) end", hook_timeout=1.0).open(
        env.conn()
    )
    for _ in range(3):  # 3 x 0.35 s > 1 s, but each call is well under the limit
        assert hooks.read_auth().decision == Decision.NO_DECISION
    assert env.lines(logs.CRITICAL) == []


def test_scripts_cannot_remove_the_time_limit(env: Env) -> None:
    hooks = env.host(PROBE, hook_timeout=TIMEOUT).open(env.conn())
    ok, msg = probe(hooks, "debug.sethook(function() end, '', 1)")
    assert ok is False and "reserved by chassis" in msg
    assert probe(hooks, "debug.sethook()") == [True]  # clearing is a no-op
    if env.runtime == "luajit21":
        assert probe(hooks, "jit.on()") == [True]  # a no-op: the JIT stays off
        assert probe(hooks, "(jit.status())") == [True, False]


def test_no_time_limit_with_zero(env: Env) -> None:
    hooks = env.host("function read_auth() require('glib2').usleep(300000) end", hook_timeout=0).open(env.conn())
    out, elapsed = timed(hooks.read_auth)
    assert out.decision == Decision.NO_DECISION and elapsed >= 0.3
    assert env.lines(logs.CRITICAL) == []


MEMORY = "32M"


def test_a_script_allocating_too_much_gets_a_memory_error(env: Env) -> None:
    host = env.host(
        PROBE + "function read_auth() local t = {} while true do t[#t + 1] = ('x'):rep(100000) .. #t end end",
        max_memory=MEMORY,
    )
    hooks = host.open(env.conn())
    out, elapsed = timed(hooks.read_auth)
    assert out.decision == Decision.NO_DECISION and elapsed < SLACK
    (line,) = env.lines(logs.CRITICAL)
    assert line == "conn 1: (read_auth) read_auth() ran out of memory (--lua-max-memory=32M) and was interrupted"
    # the memory came back and everyone goes on
    assert host.lua.memory_used() < parse_memory_size(MEMORY) // 2
    assert probe(hooks, "#('y'):rep(1000000)") == [True, "1000000"]
    assert probe(host.open(env.conn()), "'fine'") == [True, "fine"]


def test_one_huge_string_is_refused_before_it_is_allocated(env: Env) -> None:
    hooks = env.host(PROBE + "function read_auth() return #('x'):rep(2^40) end", max_memory=MEMORY).open(env.conn())
    out, elapsed = timed(hooks.read_auth)
    assert out.decision == Decision.NO_DECISION and elapsed < SLACK
    assert "ran out of memory" in env.lines(logs.CRITICAL)[0]


def test_pcall_cannot_swallow_a_memory_error(env: Env) -> None:
    hooks = env.host(
        PROBE
        + """
function read_auth()
  local ok = pcall(function() local t = {} while true do t[#t + 1] = {} end end)
  proxy.global.survived = true
end
""",
        max_memory=MEMORY,
    ).open(env.conn())
    hooks.read_auth()
    assert "ran out of memory" in env.lines(logs.CRITICAL)[0]
    assert probe(hooks, "proxy.global.survived") == [True, None]


def test_memory_error_with_on_error_reject(env: Env) -> None:
    host = env.host("function read_query() local t = {} while true do t[#t+1] = {} end end",
                    max_memory=MEMORY, on_error="reject")  # fmt: skip
    out = host.open(env.conn()).read_query(b"\x03SELECT 1")
    assert out.decision == Decision.SEND_RESULT and error_of(out.response).error_code == 1105


def test_memory_sizes() -> None:
    assert parse_memory_size("256M") == 256 * 1024**2
    assert parse_memory_size("1g") == 1024**3
    assert parse_memory_size("512k") == 512 * 1024
    assert parse_memory_size("1000") == 1000
    assert parse_memory_size(0) == 0
    with pytest.raises(ValueError, match="use bytes or a number with K, M or G"):
        parse_memory_size("lots")


def test_memory_limit_without_allocator_support(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where lupa cannot cap the allocator (its docs say: 64-bit LuaJIT), the count hook
    checks the collector's count instead."""
    from chassis_proxy.lua import runtime as lua_runtime

    module = lua_runtime._runtimes[env.runtime or lua_runtime.DEFAULT_RUNTIME]
    real = module.LuaRuntime

    def no_max_memory(*args: object, **kwargs: object) -> object:
        if "max_memory" in kwargs:
            raise lua_runtime.LuaError[0]("max_memory is not supported here")
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "LuaRuntime", no_max_memory)
    host = env.host(
        PROBE + "function read_auth() local t = {} while true do t[#t + 1] = ('x'):rep(100000) .. #t end end",
        max_memory=MEMORY,
    )
    assert not host.lua.memory_enforced_by_allocator
    hooks = host.open(env.conn())
    assert hooks.read_auth().decision == Decision.NO_DECISION
    assert "ran out of memory" in env.lines(logs.CRITICAL)[0]
    assert probe(hooks, "'alive'") == [True, "alive"]
