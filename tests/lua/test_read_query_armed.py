"""read_query runs once per client command, so the host arms --lua-max-memory itself
around it (bridge.lua's ``call_read_query_armed``) instead of bridge.lua calling back into
Python twice: only while there is room for the packet, and the ceiling is lifted again
after every way the call can end. Near the ceiling bridge.lua arms it as for every other
hook. Either way a hungry read_query gets a memory error and the state goes on."""

from __future__ import annotations

from typing import Any

import pytest
from chassis_mysql.constants import ErrorCode
from chassis_proxy.hooks import Decision
from chassis_proxy.lua.runtime import available_runtimes

from chassis import logs
from tests.lua.conftest import Env

MEMORY = 32 * 1024 * 1024

SCRIPT = """
function read_query(packet)
  local what = packet:sub(2)
  proxy.global.calls = (proxy.global.calls or 0) + 1
  if what == "hungry" then
    local t = {} while true do t[#t + 1] = ('x'):rep(100000) .. #t end
  elseif what == "raise" then
    error("asked to fail")
  elseif what == "loop" then
    while true do end
  elseif what == "queue" then
    proxy.queries:append(1, string.char(proxy.COM_QUERY) .. "SELECT 1")
    return proxy.PROXY_SEND_QUERY
  end
end

function read_auth()
  -- fill the state up to `fill` bytes under the ceiling, in 256 KiB strings (collecting the
  -- garbage string.rep leaves as it goes: Lua does not when an allocation fails)
  proxy.global.ballast = {}
  local n = proxy.global.fill / 262144
  for i = 1, n do proxy.global.ballast[i] = ('b'):rep(262144 - 32) .. i collectgarbage() end
end
"""


@pytest.fixture(params=available_runtimes())
def host(request: pytest.FixtureRequest, env: Env) -> Any:
    env.runtime = request.param
    return env.host(SCRIPT, max_memory=MEMORY, hook_timeout=0.2)


def armed_calls(host: Any) -> list[bytes]:
    """Record the calls that take the armed entry point."""
    calls: list[bytes] = []
    real = host.calls.call_read_query_armed

    def recording(state: Any, packet: bytes) -> Any:
        calls.append(packet)
        return real(state, packet)

    host.calls.call_read_query_armed = recording
    return calls


def lifted(host: Any) -> bool:
    """The ceiling is off (lupa reports the armed ceiling as set, a lifted one as 0 or
    as a wrapped-around huge number)."""
    return bool(host.lua.runtime.get_max_memory() != MEMORY)


@pytest.mark.parametrize("what", ["fine", "queue", "raise", "loop", "hungry"])
def test_read_query_lifts_the_ceiling_after_any_ending(env: Env, host: Any, what: str) -> None:
    calls = armed_calls(host)
    hooks = host.open(env.conn())
    out = hooks.read_query(b"\x03" + what.encode())
    expected = Decision.SEND_QUERY if what == "queue" else Decision.NO_DECISION
    assert out.decision == expected
    if host.lua.memory_enforced_by_allocator:
        assert calls == [b"\x03" + what.encode()]
    assert lifted(host)
    if what in ("raise", "loop", "hungry"):
        (line,) = env.lines(logs.CRITICAL)
        assert line.startswith("conn 1: (read_query) ")
    if what == "hungry":
        assert "ran out of memory (--lua-max-memory=32M)" in env.lines(logs.CRITICAL)[0]
    # the state goes on
    assert hooks.read_query(b"\x03fine").decision == Decision.NO_DECISION
    assert lifted(host)


def test_near_the_ceiling_bridge_lua_arms_it(env: Env, host: Any) -> None:
    if not host.lua.memory_enforced_by_allocator:
        pytest.skip("this Lua runtime's allocator cannot enforce a ceiling")
    calls = armed_calls(host)
    hooks = host.open(env.conn())
    hooks.read_query(b"\x03fine")
    assert len(calls) == 1  # plenty of room: armed by the host
    host.lua.runtime.execute(
        f"proxy.global.fill = {MEMORY - host.lua.runtime.get_memory_used() - 640 * 1024}")
    assert hooks.read_auth().decision == Decision.NO_DECISION
    assert env.lines(logs.CRITICAL) == []
    used = host.lua.runtime.get_memory_used()
    assert MEMORY - used < 1024 * 1024, used  # less than the host's headroom is left
    assert hooks.read_query(b"\x03fine").decision == Decision.NO_DECISION
    assert len(calls) == 1  # not armed by the host this time
    assert hooks.read_query(b"\x03hungry").decision == Decision.NO_DECISION
    assert "ran out of memory" in env.lines(logs.CRITICAL)[0]
    assert lifted(host)
    # and Python may go on allocating in the state: 8 MiB more than the ceiling leaves
    assert len(host.lua.table(list(range(1 << 20)))) == 1 << 20


GARBAGE_SCRIPT = """
function read_query(packet)
  local junk = packet:upper() .. packet:lower()   -- three copies of the packet, all garbage
  return #junk > 0 and nil
end

function read_auth()
  local junk = {}
  for i = 1, 40 do junk[i] = ('g'):rep(262144) .. i end   -- 10 MiB of garbage
end
"""


@pytest.mark.parametrize("hook", ["read_query", "read_auth"])
def test_the_garbage_of_a_big_hook_is_collected_before_the_next_hook(env: Env, hook: str) -> None:
    """Neither Lua collects when an allocation fails: garbage left by one client's big hook
    would fail the next client's hook on the ceiling."""
    host = env.host(GARBAGE_SCRIPT, max_memory=MEMORY)
    hooks = host.open(env.conn())
    host.lua.collect()
    before = host.lua.memory_used()
    if hook == "read_query":
        assert hooks.read_query(b"\x03" + b"q" * (3 * 1024 * 1024)).decision == Decision.NO_DECISION
    else:
        assert hooks.read_auth().decision == Decision.NO_DECISION
    # what stays is LuaJIT's string buffer (halved by each collection), not the garbage
    assert host.lua.memory_used() - before < MEMORY // 4
    assert env.lines(logs.CRITICAL) == []


def test_a_packet_the_script_cannot_hold_twice_gets_err_1153(env: Env) -> None:
    host = env.host(GARBAGE_SCRIPT, max_memory=MEMORY)
    hooks = host.open(env.conn())
    out = hooks.read_query(b"\x03" + b"q" * (MEMORY // 2))
    assert out.decision == Decision.SEND_RESULT and out.response is not None
    (err,) = out.response
    assert err[0] == 0xFF and int.from_bytes(err[1:3], "little") == ErrorCode.NET_PACKET_TOO_LARGE
    assert b"--lua-max-memory=32M" in err
    (line,) = env.lines(logs.WARNING)
    assert f"a command of {MEMORY // 2 + 1} bytes cannot be shown" in line
    # one byte less than half of what is left fits
    room = (MEMORY - host.lua.memory_used()) // 2 - 1024
    assert hooks.read_query(b"\x03" + b"q" * room).decision == Decision.NO_DECISION
