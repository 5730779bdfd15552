"""The ``proxy.*`` Lua library (plugins/chassis_proxy/lualib/) used from a user's script in
a running chassis."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lua_e2e.conftest import LuaProxyFactory, query, run_cli

pytestmark = pytest.mark.timeout(60)


def test_tokenizer_normalize_in_read_query_builds_a_histogram(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy("""
        local tokenizer = require("proxy.tokenizer")
        function read_query(packet)
            if packet:byte() ~= proxy.COM_QUERY then return end
            local sql = packet:sub(2)
            local histogram = proxy.global.histogram or {}
            proxy.global.histogram = histogram
            if sql == "SHOW QUERY HISTOGRAM" then
                local rows = {}
                for key, n in pairs(histogram) do rows[#rows + 1] = { key, n } end
                table.sort(rows, function(a, b) return a[1] < b[1] end)
                proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
                    fields = { { name = "query", type = proxy.MYSQL_TYPE_STRING },
                               { name = "count", type = proxy.MYSQL_TYPE_LONG } },
                    rows = rows } }
                return proxy.PROXY_SEND_RESULT
            end
            local key = tokenizer.normalize(tokenizer.tokenize(sql))
            histogram[key] = (histogram[key] or 0) + 1
        end
    """)
    with proxy.connect() as conn:
        assert query(conn, "SELECT seq FROM test.seq_1_to_10 WHERE seq = 3") == [(3,)]
        assert query(conn, "select seq from test.seq_1_to_10 where seq = 7 /* app */") == [(7,)]
        assert query(conn, "SELECT seq FROM test.seq_1_to_10 WHERE seq = '9'") == [(9,)]
        assert query(conn, "SELECT COUNT(*) FROM test.seq_1_to_10") == [(10,)]
        histogram = dict(query(conn, "SHOW QUERY HISTOGRAM"))
    assert histogram == {
        "SELECT `seq` FROM `test` . `seq_1_to_10` WHERE `seq` = ? ": 3,
        "SELECT COUNT( * ) FROM `test` . `seq_1_to_10` ": 1,
        "SET `NAMES` `utf8mb4` ": 1,  # PyMySQL's first query
    }


def test_auto_config_through_the_mariadb_cli(lua_proxy: LuaProxyFactory, mariadb_cli: str,
                                             tmp_path: Path) -> None:
    saved = tmp_path / "saved-config.lua"
    proxy = lua_proxy("""
        require("proxy.auto-config")
        proxy.global.config.e2e = proxy.global.config.e2e
            or { greeting = "hello", max_rows = 10, verbose = false }
        function read_query(packet)
            if packet:byte() ~= proxy.COM_QUERY then return end
            local r = proxy.global.config:handle({ type = proxy.COM_QUERY, query = packet:sub(2) })
            if r then return r end
            if packet:sub(2) == "SELECT GREETING" then
                proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
                    fields = { { name = "greeting", type = proxy.MYSQL_TYPE_STRING } },
                    rows = { { proxy.global.config.e2e.greeting } } } }
                return proxy.PROXY_SEND_RESULT
            end
        end
    """)

    def cli(sql: str) -> tuple[int, str, str]:
        result = run_cli(mariadb_cli, proxy, sql)
        return result.returncode, result.stdout, result.stderr

    assert cli("PROXY SHOW CONFIG") == (0, (
        "module\toption\tvalue\ttype\n"
        "e2e\tgreeting\thello\tstring\n"
        "e2e\tmax_rows\t10\tnumber\n"
        "e2e\tverbose\tfalse\tboolean\n"), "")
    assert cli('PROXY SET GLOBAL e2e.greeting = "bonjour"; '
               "PROXY SET GLOBAL e2e.verbose = true; "
               "PROXY SET GLOBAL e2e.max_rows = 25")[0] == 0
    code, out, err = cli("PROXY SHOW CONFIG")
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == ["e2e\tgreeting\tbonjour\tstring", "e2e\tmax_rows\t25\tnumber",
                                    "e2e\tverbose\ttrue\tboolean"]
    code, out, err = cli('PROXY SET GLOBAL e2e.max_rows = "many"')
    assert code == 1 and "ERROR 1105 (07000) at line 1: (auto-config) e2e.max_rows expects a number" in err, err
    assert proxy.rows("SELECT GREETING") == [("bonjour",)]  # the script sees the change

    assert cli(f'PROXY SAVE CONFIG INTO "{saved}"')[0] == 0
    assert "bonjour" in saved.read_text()
    assert cli('PROXY SET GLOBAL e2e.greeting = "changed"')[0] == 0
    assert cli(f'PROXY LOAD CONFIG FROM "{saved}"')[0] == 0
    assert proxy.rows("SELECT GREETING") == [("bonjour",)]
    assert proxy.rows("SELECT 40 + 2") == [(42,)]  # other queries go to the server


def test_rw_splitting_is_debug_goes_to_the_log_not_stdout(lua_proxy: LuaProxyFactory) -> None:
    """stdout is gone with --daemon: the routing decisions go to the chassis log."""
    proxy = lua_proxy(Path("rw-splitting.lua"))  # the bundled script
    with proxy.connect() as conn:
        assert query(conn, "PROXY SET GLOBAL rwsplit.is_debug = true") == []
        assert query(conn, "SELECT 'routed'") == [("routed",)]
    log = proxy.wait_log("[rw-splitting] ")
    assert any("(message)" in line and "rw-splitting.lua:" in line
               for line in log.splitlines() if "[rw-splitting] " in line), log
    assert "[rw-splitting]" not in proxy.process.stderr_text()
