"""A hook the script does not define is answered without calling into Lua, yet hooks are
looked up at each call as in MySQL Proxy: one defined later (in the env, in _G, with
rawset, behind a metatable of _G) is called from then on, one set to nil is not
(bridge.lua's "Which hooks a script may define")."""

from __future__ import annotations

from typing import Any

import pytest
from chassis_proxy.hooks import Decision
from chassis_proxy.lua.runtime import available_runtimes

from tests.lua.conftest import Env, error_of

ANSWER = """proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = %r }
  return proxy.PROXY_SEND_RESULT"""


@pytest.fixture(params=available_runtimes(), autouse=True)
def runtime(request: pytest.FixtureRequest, env: Env) -> None:
    env.runtime = request.param


def crossings(host: Any) -> list[bytes]:
    """Record the hooks called through bridge.lua's call_hook."""
    names: list[bytes] = []

    def recording(real: Any) -> Any:
        def call(state: Any, name: bytes) -> Any:
            names.append(name)
            return real(state, name)
        return call

    calls = host.calls
    calls._entry["call_hook"] = recording(calls._entry["call_hook"])
    calls._hook_armed = recording(calls._hook_armed)
    return names


def message(outcome: Any) -> str | None:
    if outcome.decision != Decision.SEND_RESULT:
        return None
    return str(error_of(outcome.response).message)


def test_hooks_the_script_does_not_define_are_not_called(env: Env) -> None:
    host = env.host("function read_auth() end\nfunction read_query() end")
    names = crossings(host)
    hooks = host.open(env.conn())
    for out in (hooks.connect_server(), hooks.read_handshake(), hooks.read_auth(),
                hooks.read_auth_result(b"\x00\x00\x00\x02\x00\x00\x00")):
        assert out.decision == Decision.NO_DECISION
    hooks.disconnect_client()
    assert names == [b"read_auth"]


def test_a_hook_defined_inside_another_hook_is_called_from_then_on(env: Env) -> None:
    host = env.host(f"""
function read_auth()
  function read_handshake()
    {ANSWER % "late"}
  end
end""")
    hooks, other = host.open(env.conn()), host.open(env.conn())
    assert hooks.read_handshake().decision == Decision.NO_DECISION
    hooks.read_auth()
    assert message(hooks.read_handshake()) == "late"
    assert message(hooks.read_handshake()) == "late"
    # the other connection's env has none
    assert other.read_handshake().decision == Decision.NO_DECISION


def test_a_hook_defined_in_G_later_is_called_by_every_connection(env: Env) -> None:
    host = env.host(f"""
function read_auth()
  _G.connect_server = function()
    {ANSWER % "from _G"}
  end
end""")
    before = host.open(env.conn())
    assert before.connect_server().decision == Decision.NO_DECISION
    before.read_auth()
    assert message(before.connect_server()) == "from _G"
    assert message(host.open(env.conn()).connect_server()) == "from _G"


def test_a_hook_defined_by_a_module_later_is_called(env: Env) -> None:
    env.write(f"""
function disconnect_client() proxy.global.bye = (proxy.global.bye or 0) + 1 end
function read_auth_result()
  {ANSWER % "module"}
end
return {{}}""", "late_hooks.lua")
    host = env.host("function read_auth() require('late_hooks') end",
                    lua_path=f"{env.tmp_path}/?.lua")
    hooks = host.open(env.conn())
    assert hooks.read_auth_result(b"\x00").decision == Decision.NO_DECISION
    hooks.read_auth()
    assert message(hooks.read_auth_result(b"\x00")) == "module"
    hooks.disconnect_client()
    assert host.lua.runtime.eval("proxy.global.bye") == 1


def test_a_hook_set_to_nil_is_no_longer_called(env: Env) -> None:
    host = env.host(f"""
function read_handshake()
  {ANSWER % "here"}
end
function read_auth() read_handshake = nil end""")
    hooks = host.open(env.conn())
    assert message(hooks.read_handshake()) == "here"
    hooks.read_auth()
    assert hooks.read_handshake().decision == Decision.NO_DECISION


def test_a_hook_rawset_into_the_env_or_G_is_called(env: Env) -> None:
    host = env.host(f"""
local function answer(what)
  return function()
    {ANSWER.replace("%r", "what")}
  end
end
function read_auth()
  rawset(getfenv(1), "read_handshake", answer("env"))
  rawset(_G, "connect_server", answer("G"))
end""")
    hooks = host.open(env.conn())
    hooks.read_auth()
    assert message(hooks.read_handshake()) == "env"
    assert message(hooks.connect_server()) == "G"


def test_a_hook_behind_a_metatable_of_G_is_called(env: Env) -> None:
    host = env.host(f"""
local mt0 = getmetatable(_G)
local emt = getmetatable(getfenv(1))
proxy.global.seen = tostring(mt0) .. " " .. tostring(rawget(emt, "__newindex")) .. " "
  .. tostring(rawget(emt, "__index") == _G)
function read_auth()
  setmetatable(_G, {{ __index = function(_, k)
    if k == "read_auth_result" then return function()
      {ANSWER % "behind"}
    end end
  end }})
end""")
    hooks = host.open(env.conn())
    # the metatables MySQL Proxy gives: none on _G, { __index = _G } on the env
    assert host.lua.runtime.eval("proxy.global.seen") == b"nil nil true"
    assert hooks.read_auth_result(b"\x00").decision == Decision.NO_DECISION
    hooks.read_auth()
    assert message(hooks.read_auth_result(b"\x00")) == "behind"
    assert message(host.open(env.conn()).read_auth_result(b"\x00")) == "behind"


@pytest.mark.parametrize("call", [
    "rawset(1, 2, 3)", "rawset({}, 1)", "setmetatable(1, {})", "setmetatable({}, 1)",
    "setmetatable({})", "setmetatable(setmetatable({}, { __metatable = 1 }), {})",
    "getmetatable()", "debug.getmetatable()", "debug.setmetatable(1, 2)",
    "local t = { f = rawset } t:f()", "rawset({}, nil, 1)",
])
def test_the_wrapped_builtins_fail_as_the_builtins_do(env: Env, call: str) -> None:
    host = env.host("x = 1")
    plain = host.lua.runtime.__class__(encoding=None)  # the same Lua, without the bridge
    code = f"return select(2, pcall(loadstring({call!r}, '=probe')))"
    expected = plain.eval(f"(function() {code} end)()")
    assert host.lua.runtime.eval(f"(function() {code} end)()") == expected


def test_sees_results_follows_a_read_query_result_defined_later(env: Env) -> None:
    """The command loop builds an injection's result only when sees_results() says
    read_query_result may run: it must turn True once a hook defines one."""
    host = env.host("""
function read_query(packet)
  if packet:sub(2) == "define" then
    function read_query_result(inj) end
  end
end""")
    hooks, other = host.open(env.conn()), host.open(env.conn())
    assert hooks.sees_results() is False
    hooks.read_query(b"\x03SELECT 1")
    assert hooks.sees_results() is False
    hooks.read_query(b"\x03define")
    assert hooks.sees_results() is True
    assert other.sees_results() is False  # its env has none
    hooks.detach()
    assert hooks.sees_results() is False  # a detached instance calls nothing
