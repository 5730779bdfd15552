"""Script loading, per-connection environments, sharing and reload (reference 3.1)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest
from chassis_proxy.hooks import ScriptLoadError
from chassis_proxy.lua import EXEC_FAILED, LOAD_FAILED

from chassis import logs
from tests.lua.conftest import PROBE, Env, lua_path_for, probe


def test_top_level_runs_once_per_connection_in_its_own_env(env: Env) -> None:
    host = env.host(
        PROBE
        + """
runs = (runs or 0) + 1            -- a plain global: per connection
proxy.global.runs = (proxy.global.runs or 0) + 1   -- shared
"""
    )
    a = host.open(env.conn())
    b = host.open(env.conn())
    assert probe(a, "runs, proxy.global.runs, rawget(_G, 'runs')") == [True, "1", "2", None]
    assert probe(b, "runs, proxy.global.runs") == [True, "1", "2"]


def test_globals_set_by_one_connection_are_invisible_to_another(env: Env) -> None:
    host = env.host(PROBE + "function set(v) secret = v return v end")
    a = host.open(env.conn())
    b = host.open(env.conn())
    assert probe(a, "set('a')") == [True, "a"]
    assert probe(b, "secret") == [True, None]
    assert probe(a, "secret") == [True, "a"]


def test_hooks_are_looked_up_at_every_call_and_may_be_redefined(env: Env) -> None:
    host = env.host(
        """
function read_query(packet)
  read_query = function()
    proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "second" }
    return proxy.PROXY_SEND_RESULT
  end
  proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "first" }
  return proxy.PROXY_SEND_RESULT
end
"""
    )
    hooks = host.open(env.conn())
    from tests.lua.conftest import error_of

    assert error_of(hooks.read_query(b"\x03x").response).message == "first"
    assert error_of(hooks.read_query(b"\x03x").response).message == "second"


def test_new_proxy_keys_are_per_connection_and_proxy_global_is_shared(env: Env) -> None:
    host = env.host(PROBE + "function mark(v) proxy.mine = v proxy.global.last = v return v end")
    a = host.open(env.conn())
    b = host.open(env.conn())
    assert probe(a, "mark('a')") == [True, "a"]
    assert probe(b, "mark('b')") == [True, "b"]
    assert probe(a, "proxy.mine, proxy.global.last, rawget(proxy, 'mine')") == [True, "a", "b", None]
    assert probe(b, "proxy.mine") == [True, "b"]


def test_proxy_response_and_queries_are_private_per_connection(env: Env) -> None:
    host = env.host(PROBE)
    a = host.open(env.conn())
    b = host.open(env.conn())
    assert probe(a, "proxy.queries ~= nil, proxy.connection ~= nil") == [True, True, True]
    # the queue object of one connection is not the other's
    host_a, host_b = a.conn, b.conn
    probe(a, "proxy.queries:append(1, 'x')")
    assert len(host_a.queries) == 0  # read_query's queue is reset after a SEND_RESULT
    assert len(host_b.queries) == 0


def test_required_modules_run_once_and_share_their_state(env: Env) -> None:
    lib = env.tmp_path / "lib"
    lib.mkdir()
    (lib / "sharedmod.lua").write_text(
        """
local M = {}
local loads = 0
loads = loads + 1
M.count = 0
function M.bump() M.count = M.count + 1 return M.count, loads end
function shared_global_fn() return "from the module" end
return M
"""
    )
    script = PROBE + "local m = require('sharedmod')\nfunction bump() return m.bump() end"
    host = env.host(script, lua_path=lua_path_for(lib))
    a = host.open(env.conn())
    b = host.open(env.conn())
    assert probe(a, "bump()") == [True, "1", "1"]
    assert probe(b, "bump()") == [True, "2", "1"]
    assert probe(b, "shared_global_fn(), rawget(_G, 'shared_global_fn') ~= nil") == [
        True,
        "from the module",
        True,
    ]


def test_lua_path_from_the_environment_is_honoured(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    lib = env.tmp_path / "envlib"
    lib.mkdir()
    (lib / "fromenv.lua").write_text("return { where = 'env' }")
    monkeypatch.setenv("LUA_PATH", lua_path_for(lib))
    hooks = env.host(PROBE).open(env.conn())
    values = probe(hooks, "require('fromenv').where, package.path")
    assert values[:2] == [True, "env"]
    path = values[2]
    assert path.startswith(f"{lib}/?.lua;")
    assert "./?.lua" in path  # ;; brought in Lua's default path
    assert path.endswith("lib/?/init.lua")  # the bundled directory is last


def test_lua_cpath_is_set_from_the_argument(env: Env) -> None:
    hooks = env.host(PROBE, lua_cpath="/opt/x/?.so").open(env.conn())
    assert probe(hooks, "package.cpath") == [True, "/opt/x/?.so"]


def test_errors_name_the_script_file_and_line(env: Env) -> None:
    host = env.host("\n\nfunction read_query(p)\n  local x = nil\n  return x.field\nend\n")
    hooks = host.open(env.conn())
    assert hooks.read_query(b"\x03q").decision == 0
    (line,) = env.lines(logs.CRITICAL)
    assert line.startswith("conn 1: (read_query) ")
    # the chunk name is the path, as in 0.8.5, and a long one is named whole in the log
    assert f'[string "{env.script}"]:5: attempt to index local \'x\' (a nil value)' in line


def test_short_paths_appear_whole_in_errors(env: Env) -> None:
    short = f"/tmp/chassis-lua-{os.getpid()}.lua"
    try:
        with open(short, "w") as f:
            f.write("function read_query(p)\n  error('here')\nend\n")
        env.script = Path(short)
        env.host().open(env.conn()).read_query(b"\x03q")
    finally:
        os.unlink(short)
    assert env.lines(logs.CRITICAL) == [f'conn 1: (read_query) [string "{short}"]:2: here']


def test_a_shebang_line_is_skipped_and_line_numbers_stay(env: Env) -> None:
    host = env.host("#!/usr/bin/env mysql-proxy\nfunction read_query(p)\n  error('on line 3')\nend\n")
    host.open(env.conn()).read_query(b"\x03q")
    assert any(":3: on line 3" in line for line in env.lines(logs.CRITICAL))


def test_syntax_error_refuses_new_clients_with_the_load_message(env: Env) -> None:
    host = env.host("function read_query(\n")
    with pytest.raises(ScriptLoadError) as exc:
        host.open(env.conn())
    assert str(exc.value) == LOAD_FAILED == "MySQL Proxy Lua script failed to load. Check the error log."
    (line,) = env.lines(logs.CRITICAL)
    assert "failed to load" in line and 'script.lua"]:3: <name> or \'...\' expected near \'end\'' in line


def test_missing_file_refuses_new_clients_and_says_which_file(env: Env) -> None:
    host = env.host(PROBE)
    assert host.script is not None
    os.unlink(host.script)
    with pytest.raises(ScriptLoadError, match="failed to load"):
        host.open(env.conn())
    (line,) = env.lines(logs.CRITICAL)
    assert str(host.script) in line and "No such file" in line


def test_top_level_error_refuses_new_clients_with_the_execute_message(env: Env) -> None:
    host = env.host("local t = nil\nprint(t.x)\n")
    with pytest.raises(ScriptLoadError) as exc:
        host.open(env.conn())
    assert str(exc.value) == EXEC_FAILED == "MySQL Proxy Lua script failed to execute. Check the error log."
    (line,) = env.lines(logs.CRITICAL)
    assert ":2: attempt to index local 't'" in line


def test_script_is_reloaded_for_new_connections_when_it_changes_within_the_same_second(env: Env) -> None:
    host = env.host(PROBE + "version = 'one'")
    old = host.open(env.conn())
    assert probe(old, "version") == [True, "one"]
    assert env.script is not None
    st = os.stat(env.script)
    # same size, same second: only the nanoseconds differ
    env.script.write_text(PROBE + "version = 'two'")
    os.utime(env.script, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert os.stat(env.script).st_mtime_ns // 10**9 == st.st_mtime_ns // 10**9
    new = host.open(env.conn())
    assert probe(new, "version") == [True, "two"]
    assert probe(old, "version") == [True, "one"]  # existing connections keep their copy


def test_script_is_reloaded_when_only_its_size_changes(env: Env) -> None:
    host = env.host(PROBE + "version = 'one'")
    host.open(env.conn())
    assert env.script is not None
    st = os.stat(env.script)
    env.script.write_text(PROBE + "version = 'three'")
    os.utime(env.script, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert probe(host.open(env.conn()), "version") == [True, "three"]


def test_proxy_global_survives_a_reload(env: Env) -> None:
    host = env.host(PROBE + "proxy.global.n = (proxy.global.n or 0) + 1")
    host.open(env.conn())
    assert env.script is not None
    env.script.write_text(PROBE + "proxy.global.n = proxy.global.n + 10 -- v2")
    assert probe(host.open(env.conn()), "proxy.global.n") == [True, "11"]


def test_a_broken_reload_keeps_the_last_good_version_until_the_file_is_fixed(env: Env) -> None:
    host = env.host(PROBE + "version = 'good'")
    host.open(env.conn())
    assert env.script is not None
    env.script.write_text("this is not lua")
    for _ in range(2):
        assert probe(host.open(env.conn()), "version") == [True, "good"]
    (line,) = env.lines(logs.CRITICAL)  # once per change of the file, not per client
    assert "failed to load" in line and "keep using the last version that loaded" in line
    env.script.write_text(PROBE + "fixed = true")
    assert probe(host.open(env.conn()), "fixed") == [True, True]
    os.unlink(env.script)
    assert probe(host.open(env.conn()), "fixed") == [True, True]
    assert "No such file" in env.lines(logs.CRITICAL)[1]


def test_check_names_the_file_line_and_reason(env: Env) -> None:
    host = env.host("function read_query(p)\n  if then\nend\n")
    problem = host.check()
    assert problem is not None and re.search(r"script\.lua\"\]:2: unexpected symbol near 'then'", problem)
    assert env.host(PROBE).check() is None


def test_the_script_is_compiled_once_per_version(env: Env) -> None:
    host = env.host(PROBE)
    host.open(env.conn())
    compiled = host._compiled
    host.open(env.conn())
    assert host._compiled is compiled


def test_a_closed_host_refuses_new_clients(env: Env) -> None:
    host = env.host(PROBE)
    host.close()
    with pytest.raises(ScriptLoadError):
        host.open(env.conn())


def test_the_python_helper_table_is_not_reachable(env: Env) -> None:
    hooks = env.host(PROBE).open(env.conn())
    assert probe(hooks, "python == nil, package.loaded.python == nil") == [True, True, True]


def test_print_writes_to_stdout_before_chassis_is_loaded(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    hooks = env.host(PROBE).open(env.conn())
    probe(hooks, "print('hello', 1, nil, true)")
    assert capsys.readouterr().out == "hello\t1\tnil\ttrue\n"
    assert not [r for r in env.caplog.records if "hello" in r.getMessage()]


def test_log_lines_carry_the_connection_id(env: Env) -> None:
    host = env.host("function read_query() error('x') end")
    host.open(env.conn(connection_id=42)).read_query(b"\x03q")
    assert env.lines(logging.ERROR)[0].startswith("conn 42: (read_query)")


def test_the_bundled_proxy_library_is_on_the_default_path(env: Env) -> None:
    hooks = env.host(PROBE).open(env.conn())
    assert probe(hooks, "type(require('proxy.tokenizer').normalize)") == [True, "function"]


def test_create_script_host_reads_the_proxy_options(env: Env, tmp_path: Path) -> None:
    from chassis_proxy.lua import OnError, create_script_host

    from chassis.config import Config
    from chassis.errors import StartupError
    from chassis.runtime import Runtime

    script = env.write(PROBE)
    settings = type("Settings", (), {"lua_script": script})()
    stops: list[str] = []
    config = Config({"proxy_lua_on_error": "reject", "lua_hook_timeout": 2.5, "lua_max_memory": "64M",
                     "basedir": str(tmp_path)})  # fmt: skip
    runtime = Runtime(config, _on_shutdown=stops.append)
    host = create_script_host(config=config, runtime=runtime, settings=settings)
    env.hosts.append(host)
    assert (host.on_error, host.hook_timeout, host.max_memory) == (OnError.REJECT, 2.5, 64 * 1024**2)
    hooks = host.open(env.conn())
    assert probe(hooks, "require('chassis').set_shutdown()") == [True]
    assert stops == ["chassis.set_shutdown() called by the Lua script"]

    defaults = create_script_host(config=Config({}), runtime=runtime, settings=settings)
    env.hosts.append(defaults)
    assert (defaults.on_error, defaults.hook_timeout, defaults.max_memory) == (OnError.FORWARD, 1.0, 256 * 1024**2)
    for values, message in [
        ({"proxy_lua_on_error": "ignore"}, "--proxy-lua-on-error: 'ignore' is not one of forward, reject"),
        ({"lua_hook_timeout": -1}, "--lua-hook-timeout: -1 is not a number of seconds"),
        ({"lua_max_memory": "many"}, "--lua-max-memory: invalid memory size 'many'"),
    ]:
        with pytest.raises(StartupError, match=message):
            create_script_host(config=Config(values), runtime=runtime, settings=settings)


def test_closed_connections_give_their_memory_back(env: Env) -> None:
    import gc

    host = env.host(PROBE + "local mine = string.rep('x', 100000) .. tostring({})\nfunction keep() return mine end")
    host.open(env.conn()).disconnect_client()
    host.lua.collect()
    baseline = host.lua.memory_used()
    for i in range(300):
        hooks = host.open(env.conn())
        if i % 2:
            hooks.disconnect_client()
        del hooks  # half of them vanish without disconnect_client()
    gc.collect()
    host.lua.collect()
    assert not host._instances
    assert host.lua.memory_used() < baseline + 2_000_000  # 300 x 100 kB were allocated
