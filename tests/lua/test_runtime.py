"""``--lua-runtime``: PUC Lua 5.1 by default, as MySQL Proxy 0.8.5 ran, or LuaJIT.

Scripts written for 0.8.5 rely on what Lua 5.1 accepts and LuaJIT rejects (an invalid
escape such as ``"^(%d+)\\.(%d+)"``) or prints differently (``%q`` of a NUL byte).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from chassis_proxy.hooks import Decision, ScriptLoadError
from chassis_proxy.lua import LOAD_FAILED
from chassis_proxy.lua.runtime import (
    LuaUnavailable,
    available_runtimes,
    implementation,
    resolve_runtime,
)

from tests.lua.conftest import Env

#: MySQL Proxy's own lib/proxy/auto-config.lua has this: "\." is no escape in Lua 5.1's
#: manual, but PUC Lua 5.1 keeps the backslash and LuaJIT refuses to load the file.
VERSION_SPLIT = r'''
local major, minor = string.match("10.11", "^(%d+)\.(%d+)")
function read_query(packet)
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
        fields = { { name = "v" } },
        rows = { { major .. "/" .. minor .. "/" .. string.format("%q", "a\0b") } } } }
    return proxy.PROXY_SEND_RESULT
end
'''

needs_luajit = pytest.mark.skipif("luajit21" not in available_runtimes(), reason="no LuaJIT in this lupa")


def test_the_default_runtime_is_puc_lua_5_1() -> None:
    assert resolve_runtime(None) == "lua51" and implementation() == "Lua 5.1"
    assert resolve_runtime("lua5.1") == "lua51"


@needs_luajit
def test_luajit_is_chosen_by_its_option_name() -> None:
    assert resolve_runtime("luajit") == "luajit21" and implementation("luajit") == "LuaJIT 2.1"


def test_an_unknown_runtime_names_the_choices() -> None:
    with pytest.raises(LuaUnavailable, match=r"--lua-runtime=lua5\.4 is not a Lua runtime; use one of lua5\.1"):
        resolve_runtime("lua5.4")


def test_a_lua_5_1_escape_loads_and_works_by_default(env: Env) -> None:
    host = env.host(VERSION_SPLIT)
    assert host.lua.name == "lua51" and host.check() is None
    out = host.open(env.conn()).read_query(b"\x03SELECT 1")
    assert out.decision == Decision.SEND_RESULT
    assert b'10/11/"a\\000b"' in out.response[-2]  # the row; %q of a NUL as Lua 5.1 wrote it


@needs_luajit
def test_luajit_refuses_that_script_and_says_why(env: Env) -> None:
    host = env.host(VERSION_SPLIT, runtime="luajit")
    problem = host.check()
    assert problem is not None
    assert problem.startswith(f'Lua script failed to load: [string "{env.script}"]:2: invalid escape sequence near')
    assert problem.endswith("(LuaJIT rejects escapes that Lua 5.1 accepted: --lua-runtime=lua5.1 loads it)")
    with pytest.raises(ScriptLoadError, match=LOAD_FAILED):
        host.open(env.conn())


@pytest.mark.parametrize("runtime", available_runtimes())
def test_the_hook_deadline_counts_time_spent_waiting(env: Env, runtime: str) -> None:
    """The deadline is wall-clock time on both runtimes (os.clock, PUC Lua's only clock,
    counts CPU time: the loop after the sleep would run another 0.5 s)."""
    hooks = env.host(
        # the loop before the sleep starts the deadline (set at the count hook's first firing)
        "function read_auth() for i = 1, 30000 do end os.execute('sleep 0.6') while true do end end",
        hook_timeout=0.5, runtime=runtime,
    ).open(env.conn())
    started = time.monotonic()
    assert hooks.read_auth().decision == Decision.NO_DECISION
    assert time.monotonic() - started < 1.0
    (line,) = env.lines()
    assert line.endswith("read_auth() ran longer than --lua-hook-timeout=0.5s and was interrupted")


def version_line(*args: str) -> str:
    out = subprocess.run(
        [str(Path(sys.executable).with_name("chassis")), "--plugins=proxy", *args, "--version"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    (line,) = [x for x in out.splitlines() if "lupa:" in x]
    return line


def test_version_names_the_runtime_in_use() -> None:
    assert version_line().endswith("(Lua runtime: Lua 5.1)")
    if "luajit21" in available_runtimes():
        assert version_line("--lua-runtime=luajit").endswith("(Lua runtime: LuaJIT 2.1)")


DEBIAN_CPATH = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so"


@needs_luajit
def test_c_modules_bind_to_one_runtime_per_process(env: Env) -> None:
    """The first state makes its runtime's C API global; in a state of the other runtime a
    C module is refused with the reason, never loaded against the wrong Lua (a crash)."""
    from chassis_proxy.lua import runtime as lua_runtime

    probe = "function read_query() end"
    hosts = {name: env.host(probe, runtime=name, lua_cpath=DEBIAN_CPATH) for name in available_runtimes()}
    bound = lua_runtime._c_api_runtime
    assert bound in hosts
    (other,) = [name for name in hosts if name != bound]
    if not Path(DEBIAN_CPATH.replace("?", "cjson")).is_file():
        pytest.skip("Debian's lua-cjson is not installed (scripts/test installs it)")
    code = b"local ok, e = pcall(require, 'cjson') return ok, e"
    ok, _module = hosts[bound].lua.runtime.execute(code)
    assert ok is True
    ok, err = hosts[other].lua.runtime.execute(code)
    assert ok is False and b"C modules" in err and b"cannot also load into" in err
