"""proxy.auto-config: PROXY SHOW CONFIG, PROXY SET GLOBAL, PROXY SAVE/LOAD CONFIG answered
by a script through proxy.global.config:handle(), as a client would see them."""

from __future__ import annotations

from pathlib import Path

import pytest
from chassis_proxy.hooks import Decision

from tests.lualib.harness import Env, Lua

SCRIPT = """
local auto_config = require("proxy.auto-config")
local commands = require("proxy.commands")
if not proxy.global.config.rwsplit then
  proxy.global.config.rwsplit = {
    min_idle_connections = 4, max_idle_connections = 8, ratio = 0.5,
    is_debug = false, verbose = true, name = "primary",
  }
end

function read_query(packet)
  local cmd = commands.parse(packet)
  if cmd.type == proxy.COM_QUERY and cmd.query:sub(1, 4) == "OLD " then
    -- MySQL Proxy's older form: auto_config.handle(cmd)
    cmd.query = cmd.query:sub(5)
    return auto_config.handle(cmd)
  end
  return proxy.global.config:handle(cmd)
end
"""

DEFAULT_ROWS = [
    ["rwsplit", "is_debug", "false", "boolean"],
    ["rwsplit", "max_idle_connections", "8", "number"],
    ["rwsplit", "min_idle_connections", "4", "number"],
    ["rwsplit", "name", "primary", "string"],
    ["rwsplit", "ratio", "0.5", "number"],
    ["rwsplit", "verbose", "true", "boolean"],
]


@pytest.fixture
def client(env: Env) -> Lua:
    return env.connect(env.host(SCRIPT))


def show(c: Lua) -> list[list[str | None]]:
    names, rows = c.reply("PROXY SHOW CONFIG").rows()
    assert names == [b"module", b"option", b"value", b"type"]
    return rows


def value(c: Lua, option: str) -> str | None:
    for _, opt, v, _ in show(c):
        if opt == option:
            return v
    raise AssertionError(f"{option} not shown")


def test_show_config_lists_every_option_sorted_with_its_type(client: Lua) -> None:
    assert show(client) == DEFAULT_ROWS


@pytest.mark.parametrize(
    ("assignment", "option", "shown"),
    [
        ("rwsplit.is_debug = true", "is_debug", "true"),
        ("rwsplit.verbose = false", "verbose", "false"),
        ("rwsplit.max_idle_connections = 16", "max_idle_connections", "16"),
        ("rwsplit.min_idle_connections=-1", "min_idle_connections", "-1"),
        ("rwsplit.ratio = 0.25", "ratio", "0.25"),
        ('rwsplit.name = "replica one"', "name", "replica one"),
        ("rwsplit.name = 'it''s'", "name", "it's"),
        (r"rwsplit.name = 'back\\slash \'q\''", "name", "back\\slash 'q'"),
        ("rwsplit.name = 'a' 'b'", "name", None),  # two strings: refused
    ],
)
def test_set_global_changes_booleans_numbers_and_strings(
    client: Lua, assignment: str, option: str, shown: str | None
) -> None:
    reply = client.reply(f"PROXY SET GLOBAL {assignment}")
    if shown is None:
        assert "cannot read the value" in reply.err().message
        return
    assert reply.ok().affected_rows == 1
    assert value(client, option) == shown


def test_a_boolean_can_go_to_true_and_back(client: Lua) -> None:
    # MySQL Proxy 0.8.5 could never set true, and then reported a false option as unknown
    assert client.reply("PROXY SET GLOBAL rwsplit.is_debug = true").ok().affected_rows == 1
    assert value(client, "is_debug") == "true"
    assert client.reply("proxy set global rwsplit.is_debug = FALSE").ok().affected_rows == 1
    assert value(client, "is_debug") == "false"
    assert client.reply("PROXY SET GLOBAL rwsplit.is_debug = true;").ok().affected_rows == 1
    assert value(client, "is_debug") == "true"


def test_settings_are_shared_by_every_connection(env: Env) -> None:
    host = env.host(SCRIPT)
    first, second = env.connect(host), env.connect(host)
    first.reply("PROXY SET GLOBAL rwsplit.max_idle_connections = 2").ok()
    assert value(second, "max_idle_connections") == "2"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("PROXY SET GLOBAL nosuch.x = 1", "module nosuch is not known"),
        ("PROXY SET GLOBAL rwsplit.nosuch = 1", "option rwsplit.nosuch is not known"),
        ("PROXY SET GLOBAL rwsplit.is_debug = 1", "rwsplit.is_debug expects a boolean, got a number"),
        ('PROXY SET GLOBAL rwsplit.ratio = "x"', "rwsplit.ratio expects a number, got a string"),
        ("PROXY SET GLOBAL rwsplit.name = true", "rwsplit.name expects a string, got a boolean"),
        ("PROXY SET GLOBAL rwsplit.name = unquoted", "cannot read the value unquoted"),
        ("PROXY SET GLOBAL rwsplit = 1", "use PROXY SET GLOBAL <module>.<option> = <value>"),
        ("PROXY SHOW CONFIG please", "PROXY SHOW CONFIG takes no arguments"),
        ("PROXY SAVE CONFIG INTO /tmp/x", 'use PROXY SAVE CONFIG INTO "<file>"'),
    ],
)
def test_mistakes_get_an_err_that_says_what_to_do(client: Lua, query: str, message: str) -> None:
    err = client.reply(query).err()
    assert message in err.message
    assert value(client, "name") == "primary"


@pytest.mark.parametrize("query", ["SELECT 1", "PROXY SHOW STATUS", "PROXYSHOW CONFIG", "SET GLOBAL x = 1"])
def test_other_queries_are_not_answered(client: Lua, query: str) -> None:
    assert client.query(query).decision == Decision.NO_DECISION


def test_other_commands_are_not_answered(client: Lua) -> None:
    assert client.hooks.read_query(b"\x0e").decision == Decision.NO_DECISION


def test_the_old_handle_cmd_form_works(client: Lua) -> None:
    assert client.reply("OLD PROXY SET GLOBAL rwsplit.verbose = false").ok().affected_rows == 1
    assert value(client, "verbose") == "false"


def test_save_and_load_round_trip_through_a_file(env: Env, tmp_path: Path) -> None:
    host = env.host(SCRIPT)
    c = env.connect(host)
    saved = tmp_path / "proxy config.lua"
    c.reply("PROXY SET GLOBAL rwsplit.is_debug = true").ok()
    c.reply("PROXY SET GLOBAL rwsplit.name = 'saved \"name\"'").ok()
    assert c.reply(f'PROXY SAVE CONFIG INTO "{saved}"').ok().affected_rows == 0
    assert saved.read_text().startswith("-- proxy.global.config")
    before = show(c)

    c.reply("PROXY SET GLOBAL rwsplit.is_debug = false").ok()
    c.reply("PROXY SET GLOBAL rwsplit.max_idle_connections = 99").ok()
    c.reply("PROXY SET GLOBAL rwsplit.name = 'changed'").ok()
    assert show(c) != before

    assert c.reply(f"PROXY LOAD CONFIG FROM '{saved}'").ok().affected_rows == 0
    assert show(c) == before
    assert value(c, "name") == 'saved "name"'
    assert value(c, "is_debug") == "true"


def test_a_saved_config_loads_into_a_fresh_process(env: Env, tmp_path: Path) -> None:
    saved = tmp_path / "rw.lua"
    first = env.connect(env.host(SCRIPT, name="first.lua"))
    first.reply("PROXY SET GLOBAL rwsplit.min_idle_connections = 1").ok()
    first.reply(f'PROXY SAVE CONFIG INTO "{saved}"').ok()

    fresh = env.connect(env.host(SCRIPT, name="second.lua"))
    assert value(fresh, "min_idle_connections") == "4"
    fresh.reply(f'PROXY LOAD CONFIG FROM "{saved}"').ok()
    assert show(fresh) == show(first)


def test_load_adds_modules_it_does_not_know_yet(client: Lua, tmp_path: Path) -> None:
    f = tmp_path / "extra.lua"
    f.write_text("return { histogram = { enabled = true, top = 10 }, rwsplit = { ratio = 0.75 } }")
    client.reply(f'PROXY LOAD CONFIG FROM "{f}"').ok()
    rows = show(client)
    assert ["histogram", "enabled", "true", "boolean"] in rows
    assert ["histogram", "top", "10", "number"] in rows
    assert ["rwsplit", "ratio", "0.75", "number"] in rows
    assert ["rwsplit", "name", "primary", "string"] in rows


def test_save_to_an_unwritable_place_is_an_err(client: Lua, tmp_path: Path) -> None:
    err = client.reply(f'PROXY SAVE CONFIG INTO "{tmp_path}/no/such/dir/x.lua"').err()
    assert "cannot save the config" in err.message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot load the config"),
        ("return {", "cannot load the config"),
        ("return 42", "does not return a table"),
        ('os.execute("touch /tmp/pwned") return {}', "the config file failed"),
        ('return { x = io.open("/etc/passwd") }', "the config file failed"),
    ],
)
def test_load_refuses_bad_files_and_runs_them_without_globals(
    client: Lua, tmp_path: Path, content: str | None, message: str
) -> None:
    f = tmp_path / "bad.lua"
    if content is not None:
        f.write_text(content)
    err = client.reply(f'PROXY LOAD CONFIG FROM "{f}"').err()
    assert message in err.message
    assert show(client) == DEFAULT_ROWS
