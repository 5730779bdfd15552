"""One scenario per hook (reference 3.2), each through a real chassis and real clients,
asserting what the client receives."""

from __future__ import annotations

import re
from pathlib import Path

import mysql.connector
import pytest

from tests.lua_e2e.conftest import (
    SCRIPTS,
    LuaProxyFactory,
    expect_error,
    query,
    run_cli,
)
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)

#: ``SELECT`` answered from Lua: ``answer({"a", "b"}, {{1, 2}})`` (every column a string).
ANSWER_LUA = """
local function answer(names, rows)
    local fields = {}
    for i, name in ipairs(names) do fields[i] = { name = name, type = proxy.MYSQL_TYPE_STRING } end
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = fields, rows = rows } }
    return proxy.PROXY_SEND_RESULT
end
"""

SERVER_HOST = "SELECT HOST FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"


# -- connect_server --------------------------------------------------------------------------


def test_connect_server_picks_a_backend_with_backend_ndx(lua_proxy: LuaProxyFactory,
                                                         mariadb: MariaDB) -> None:
    """Odd clients go to backend 2 (the unix socket), even ones to backend 1 (TCP)."""
    proxy = lua_proxy(ANSWER_LUA + """
        function connect_server()
            proxy.global.clients = (proxy.global.clients or 0) + 1
            proxy.connection.backend_ndx = (proxy.global.clients % 2 == 1) and 2 or 1
        end
        function read_query(packet)
            if packet:sub(2) == "SELECT 'backend'" then
                local ndx = proxy.connection.backend_ndx
                local b = proxy.global.backends[ndx]
                return answer({ "ndx", "dst", "backends", "clients", "state" },
                    { { ndx, proxy.connection.server.dst.name, #proxy.global.backends,
                        b.connected_clients, b.state } })
            end
        end
    """, backends=[mariadb.address, str(mariadb.socket_path)])
    with proxy.connect() as first, proxy.connect() as second:
        assert query(first, SERVER_HOST) == [("localhost",)]  # unix socket
        assert query(first, "SELECT 'backend'") == [("2", str(mariadb.socket_path), "2", "1", "1")]
        (host,), = query(second, SERVER_HOST)
        assert re.fullmatch(r"(localhost|127\.0\.0\.1):\d+", host), host  # TCP: with a port
        assert query(second, "SELECT 'backend'") == [("1", mariadb.address, "2", "1", "1")]


def test_connect_server_plays_a_server_behind_another_chassis(lua_proxy: LuaProxyFactory,
                                                              mariadb_cli: str,
                                                              tmp_path: Path) -> None:
    """A mock server made of a script (no backend at all), and a scripted chassis in front."""
    mock = lua_proxy(SCRIPTS / "mock_server.lua", backends=["127.0.0.1:1"])  # never contacted
    front = lua_proxy(ANSWER_LUA + """
        function read_handshake()
            local s = proxy.connection.server
            handshake = { s.mysqld_version, s.thread_id, #s.scramble_buffer, s.dst.name }
        end
        function read_query(packet)
            if packet:sub(2) == "SELECT 'handshake'" then
                return answer({ "version", "thread", "scramble", "server" }, { handshake })
            end
        end
    """, backends=[mock.address])

    csv = tmp_path / "data.csv"
    csv.write_text("1\n2\n")
    with front.connect(user="anyone", password="any password", local_infile=True) as conn:
        assert query(conn, "SELECT 'handshake'") == [("50099", "4242", "20", mock.address)]
        with conn.cursor() as cur:
            cur.execute("SELECT 1 + 1")
            assert cur.fetchall() == (("SELECT 1 + 1", "anyone", 1),)
            assert [d[0] for d in cur.description] == ["query", "user", "clients"]
            assert cur.execute("INSERT INTO nowhere VALUES (1)") == 3
            assert cur.lastrowid == 77
            assert cur.execute(f"LOAD DATA LOCAL INFILE '{csv}' INTO TABLE t") == 0
        code, message = expect_error(lambda: query(conn, "FAIL please"))
        assert (code, message) == (1234, "the mock refuses: FAIL please")
        conn.ping()

    result = run_cli(mariadb_cli, front, "SELECT 'from the cli'", user="someone")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "query\tuser\tclients\nSELECT 'from the cli'\tsomeone\t2\n"
    connector = mysql.connector.connect(host=front.host, port=front.port, user="third",
                                        password="x", use_pure=True, ssl_disabled=True,
                                        connection_timeout=10)
    try:
        cur = connector.cursor()
        cur.execute("SELECT 'connector'")
        assert cur.fetchall() == [("SELECT 'connector'", "third", 3)]
    finally:
        connector.close()
    assert "127.0.0.1:1" not in mock.log_text().replace("backends: 127.0.0.1:1", "")


# -- read_handshake ----------------------------------------------------------------------------


def test_read_handshake_refuses_clients_with_an_err(lua_proxy: LuaProxyFactory,
                                                    mariadb_cli: str) -> None:
    """Once a client closed the doors, new clients get the script's ERR instead of a greeting."""
    proxy = lua_proxy(ANSWER_LUA + """
        function read_handshake()
            if proxy.global.closed then
                local s = proxy.connection.server
                proxy.response = {
                    type = proxy.MYSQLD_PACKET_ERR, errcode = 1040, sqlstate = "08004",
                    errmsg = string.format("closed for maintenance (server %d, thread %d)",
                                           s.mysqld_version, s.thread_id),
                }
                return proxy.PROXY_SEND_RESULT
            end
        end
        function read_query(packet)
            if packet:sub(2) == "CLOSE THE DOORS" then
                proxy.global.closed = true
                return answer({ "closed" }, { { "yes" } })
            end
        end
    """)
    with proxy.connect() as admin:
        assert query(admin, "CLOSE THE DOORS") == [("yes",)]
        code, message = expect_error(proxy.connect)
        assert code == 1040
        assert re.fullmatch(r"closed for maintenance \(server 50505, thread \d+\)", message), message
        result = run_cli(mariadb_cli, proxy, "SELECT 1")
        assert result.returncode == 1
        assert "closed for maintenance" in result.stderr
        assert query(admin, "SELECT 2") == [(2,)]  # the client already in is not affected


# -- read_auth -----------------------------------------------------------------------------------

#: Capabilities of the login packet the script builds: LONG_PASSWORD, LONG_FLAG,
#: CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION, MULTI_RESULTS, PLUGIN_AUTH.
LOGIN_CAPS = 1 | 4 | 8 | 512 | 8192 | 32768 | (1 << 17) | (1 << 19)


def test_read_auth_replaces_the_login_packet(lua_proxy: LuaProxyFactory) -> None:
    """Logging in as ``alias`` (any password) logs in as ``native`` to the test database."""
    proxy = lua_proxy(f"""
        local proto = require("mysql.proto")
        local password = require("mysql.password")
        function read_auth()
            if proxy.connection.client.username ~= "alias" then return end
            local challenge = proxy.connection.server.scramble_buffer:sub(1, 20)
            proxy.queries:append(1, proto.to_response_packet({{
                username = "native",
                response = password.scramble(challenge, password.hash("native_pw")),
                database = "test",
                charset = 33,
                max_packet_size = 16777216,
                capabilities = {LOGIN_CAPS},
                server_capabilities = {LOGIN_CAPS},
                auth_plugin_name = "mysql_native_password",
            }}))
            return proxy.PROXY_SEND_QUERY
        end
    """)
    with proxy.connect(user="alias", password="not the real one") as conn:
        assert query(conn, "SELECT CURRENT_USER(), DATABASE()") == [("native@%", "test")]
    with proxy.connect(user="native") as conn:  # other users log in as themselves
        assert query(conn, "SELECT CURRENT_USER(), DATABASE()") == [("native@%", None)]


def test_read_auth_checks_passwords_itself_without_the_server(lua_proxy: LuaProxyFactory,
                                                              mariadb_cli: str) -> None:
    """The proxy's own accounts: the script checks the scramble (mysql.password) and answers
    the login; such clients never reach the server and are answered by the script."""
    proxy = lua_proxy(ANSWER_LUA + """
        local password = require("mysql.password")
        local OWN = { alice = password.hash(password.hash("wonderland")) }
        function read_auth()
            local c = proxy.connection.client
            if not OWN[c.username] then return end
            if password.check(c.scramble_buffer, c.scrambled_password, OWN[c.username]) then
                proxy.response = { type = proxy.MYSQLD_PACKET_OK }
            else
                proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errcode = 1045, sqlstate = "28000",
                                   errmsg = "wrong password for " .. c.username }
            end
            return proxy.PROXY_SEND_RESULT
        end
        function read_query(packet)
            if proxy.connection.server then return end  -- server accounts: as usual
            if packet:byte() ~= proxy.COM_QUERY or packet:sub(2):match("^SET ") then
                proxy.response = { type = proxy.MYSQLD_PACKET_OK }
                return proxy.PROXY_SEND_RESULT
            end
            return answer({ "user", "query" }, { { proxy.connection.client.username, packet:sub(2) } })
        end
    """)
    with proxy.connect(user="alice", password="wonderland") as conn:
        assert query(conn, "SELECT CURRENT_USER()") == [("alice", "SELECT CURRENT_USER()")]
        conn.ping()
    assert expect_error(lambda: proxy.connect(user="alice", password="rabbit")) == (
        1045, "wrong password for alice")
    result = run_cli(mariadb_cli, proxy, "SELECT 1", user="alice", password="wonderland")
    assert (result.returncode, result.stdout) == (0, "user\tquery\nalice\tSELECT 1\n"), result.stderr
    with proxy.connect(user="native") as conn:
        assert query(conn, "SELECT CURRENT_USER()") == [("native@%",)]


# -- read_auth_result ----------------------------------------------------------------------------


def test_read_auth_result_sees_ok_and_err(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(ANSWER_LUA + """
        local proto = require("mysql.proto")
        function read_auth_result(auth)
            local seen = proxy.global.auth_seen or {}
            proxy.global.auth_seen = seen
            seen[#seen + 1] = { proxy.connection.client.username, auth.packet:byte() }
            if auth.packet:byte() == proxy.MYSQLD_PACKET_ERR then
                local err = proto.from_err_packet(auth.packet)
                proxy.response = {
                    type = proxy.MYSQLD_PACKET_ERR, errcode = err.errcode, sqlstate = err.sqlstate,
                    errmsg = "(checked by the proxy) " .. err.errmsg,
                }
                return proxy.PROXY_SEND_RESULT
            end
        end
        function read_query(packet)
            if packet:sub(2) == "SELECT 'auth seen'" then
                local rows = {}
                for i, s in ipairs(proxy.global.auth_seen) do rows[i] = s end
                rows[#rows + 1] = { "server username", proxy.connection.server.username }
                return answer({ "user", "first byte" }, rows)
            end
        end
    """)
    code, message = expect_error(lambda: proxy.connect(user="native", password="wrong"))
    assert code == 1045
    assert message.startswith("(checked by the proxy) Access denied for user 'native'@")
    with proxy.connect() as conn:
        assert query(conn, "SELECT 'auth seen'") == [
            ("native", "255"), ("root", "0"), ("server username", "root")]


# -- read_query ----------------------------------------------------------------------------------


def test_read_query_rewrites_answers_and_injects(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(ANSWER_LUA + """
        function read_query(packet)
            if packet:byte() ~= proxy.COM_QUERY then return end
            local sql = packet:sub(2)
            if sql:match("^SELECT legacy_") then
                -- rewrite: the old function names are spelled differently today
                proxy.queries:append(1, string.char(proxy.COM_QUERY) .. sql:gsub("legacy_", ""))
                return proxy.PROXY_SEND_QUERY
            elseif sql == "SELECT 'local'" then
                return answer({ "answered", "by" }, { { "locally", "the script" } })
            elseif sql == "SELECT 'inject'" then
                -- the client's command becomes another one whose result it gets
                proxy.queries:append(7, string.char(proxy.COM_QUERY) .. "SELECT 'injected', 7")
                return proxy.PROXY_SEND_QUERY
            elseif sql == "SELECT 'deny'" then
                proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = "not here", errcode = "1142",
                                   sqlstate = "42000" }
                return proxy.PROXY_SEND_RESULT
            end
        end
    """)
    with proxy.connect() as conn:
        assert query(conn, "SELECT legacy_UPPER('x'), legacy_LOWER('Y')") == [("X", "y")]
        assert query(conn, "SELECT 'local'") == [("locally", "the script")]
        assert query(conn, "SELECT 'inject'") == [("injected", 7)]
        assert expect_error(lambda: query(conn, "SELECT 'deny'")) == (1142, "not here")
        assert query(conn, "SELECT 'untouched'") == [("untouched",)]


# -- read_query_result ---------------------------------------------------------------------------

INSPECT_LUA = ANSWER_LUA + """
local Q = string.char(proxy.COM_QUERY)

function read_query(packet)
    if packet:byte() ~= proxy.COM_QUERY then return end
    local sql = packet:sub(2)
    if sql == "INSPECT rows" then
        proxy.queries:append(1, Q .. "SELECT seq AS n, IF(seq = 2, NULL, CONCAT('r', seq)) AS label"
            .. " FROM test.seq_1_to_3", { resultset_is_needed = true })
    elseif sql == "INSPECT insert" then
        proxy.queries:append(2, Q .. "INSERT INTO test.lua_inspect (v) VALUES ('a'), ('b')",
                             { resultset_is_needed = true })
    elseif sql == "INSPECT warning" then
        proxy.queries:append(3, Q .. "SELECT 1 / 0 AS d", { resultset_is_needed = true })
    elseif sql == "INSPECT error" then
        proxy.queries:append(4, Q .. "SELECT * FROM test.no_such_table", { resultset_is_needed = true })
    elseif sql == "INSPECT procedure" then
        proxy.queries:append(6, Q .. "CALL test.lua_two_results()", { resultset_is_needed = true })
    elseif sql == "INSPECT unbuffered" then
        proxy.queries:append(5, Q .. "SELECT 'streamed'")
    elseif sql == "INSPECT chain" then
        proxy.queries:append(10, Q .. "SELECT 'first'", { resultset_is_needed = true })
    else
        return
    end
    return proxy.PROXY_SEND_QUERY
end

local function describe(inj)
    local res = inj.resultset
    local out = {
        { "id", inj.id },
        { "query", inj.query:sub(2) },
        { "query_time > 0", tostring(inj.query_time > 0) },
        { "response_time >= query_time", tostring(inj.response_time >= inj.query_time) },
        { "query_status", res.query_status },
        { "row_count", res.row_count },
        { "bytes", res.bytes },
        { "affected_rows", tostring(res.affected_rows) },
        { "insert_id", tostring(res.insert_id) },
        { "warning_count", res.warning_count },
        { "in_trans", tostring(res.flags.in_trans) },
        { "auto_commit", tostring(res.flags.auto_commit) },
        { "raw first byte", res.raw:byte() },
        { "#fields", #res.fields },
    }
    for i = 1, #res.fields do
        local f = res.fields[i]
        out[#out + 1] = { "field " .. i, string.format("%s %d %s %s %s", f.name, f.type, f.table,
                                                        f.org_table, f.org_name) }
    end
    local n = 0
    for row in res.rows do
        n = n + 1
        out[#out + 1] = { "row " .. n, tostring(row[1]) .. "," .. tostring(row[2]) }
    end
    return out
end

function read_query_result(inj)
    if inj.id == 10 then
        -- more work from inside the hook: its result is the one the client gets
        proxy.queries:append(11, Q .. "SELECT 'second'", { resultset_is_needed = true })
        return proxy.PROXY_IGNORE_RESULT
    elseif inj.id == 11 then
        return
    elseif inj.id == 5 then
        proxy.global.unbuffered = { inj.resultset.row_count, inj.resultset.bytes, inj.query_time > 0 }
        return
    end
    -- replace the result with what the script saw of it
    return answer({ "key", "value" }, describe(inj))
end
"""


def test_read_query_result_sees_timing_and_the_whole_resultset(
        lua_proxy: LuaProxyFactory, mariadb: MariaDB, cleanup_tables: list[str],
        request: pytest.FixtureRequest) -> None:
    mariadb.sql("CREATE TABLE test.lua_inspect (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)")
    cleanup_tables.append("test.lua_inspect")
    mariadb.sql("CREATE OR REPLACE PROCEDURE test.lua_two_results() "
                "BEGIN SELECT 1 AS a UNION SELECT 2; SELECT 'x' AS b; END")
    request.addfinalizer(lambda: mariadb.sql("DROP PROCEDURE IF EXISTS test.lua_two_results"))
    proxy = lua_proxy(INSPECT_LUA)
    with proxy.connect() as conn:
        query(conn, "BEGIN")
        seen = dict(query(conn, "INSPECT rows"))
        query(conn, "COMMIT")
        # one row: "1" and "r1" as length-encoded strings (2 + 3 bytes) plus the 4-byte header
        row_bytes = (2 + 3 + 4) + (2 + 1 + 4) + (2 + 3 + 4)
        assert seen == {
            "id": "1",
            "query": "SELECT seq AS n, IF(seq = 2, NULL, CONCAT('r', seq)) AS label"
                     " FROM test.seq_1_to_3",
            "query_time > 0": "true",
            "response_time >= query_time": "true",
            "query_status": "0",
            "row_count": "3",
            "bytes": str(row_bytes),
            "affected_rows": "nil",
            "insert_id": "nil",
            "warning_count": "0",
            "in_trans": "true",
            "auto_commit": "true",
            "raw first byte": "2",
            "#fields": "2",
            "field 1": "n 8 seq_1_to_3 seq_1_to_3 seq",
            "field 2": "label 253   ",
            "row 1": "1,r1",
            "row 2": "2,nil",
            "row 3": "3,r3",
        }

        seen = dict(query(conn, "INSPECT insert"))
        assert (seen["affected_rows"], seen["insert_id"], seen["query_status"]) == ("2", "1", "0")
        assert (seen["#fields"], seen["row_count"], seen["raw first byte"]) == ("0", "0", "0")
        assert seen["in_trans"] == "false"
        assert "row 1" not in seen

        seen = dict(query(conn, "INSPECT warning"))
        assert (seen["warning_count"], seen["row 1"]) == ("1", "nil,nil")

        seen = dict(query(conn, "INSPECT error"))
        assert (seen["query_status"], seen["raw first byte"], seen["#fields"]) == ("255", "255", "0")

        # two result sets: rows are counted over both, only the first is shown
        seen = dict(query(conn, "INSPECT procedure"))
        assert (seen["row_count"], seen["#fields"], seen["field 1"]) == ("3", "1", "a 3   a")
        assert (seen["row 1"], seen["row 2"], "row 3" in seen) == ("1,nil", "2,nil", False)

        assert query(conn, "INSPECT chain") == [("second",)]  # 'first' was ignored
        assert query(conn, "INSPECT unbuffered") == [("streamed",)]
    assert mariadb.sql("SELECT v FROM test.lua_inspect ORDER BY id") == [("a",), ("b",)]


# -- disconnect_client ---------------------------------------------------------------------------


def test_disconnect_client_is_seen_by_a_later_connection(lua_proxy: LuaProxyFactory,
                                                          tmp_path: Path) -> None:
    gone = tmp_path / "gone.txt"
    proxy = lua_proxy(ANSWER_LUA + f"""
        function read_query(packet)
            if packet:byte() == proxy.COM_QUERY then queries = (queries or 0) + 1 end
            if packet:sub(2) == "SELECT 'gone'" then
                local rows = {{}}
                for i, g in ipairs(proxy.global.gone or {{}}) do rows[i] = g end
                return answer({{ "user", "queries" }}, rows)
            end
        end
        function disconnect_client()
            local gone = proxy.global.gone or {{}}
            proxy.global.gone = gone
            gone[#gone + 1] = {{ proxy.connection.client.username, queries or 0 }}
            local f = assert(io.open("{gone}", "a"))
            f:write(proxy.connection.client.username, "\\n")
            f:close()
        end
    """)
    with proxy.connect(user="native") as conn:
        query(conn, "SELECT 1")
        query(conn, "SELECT 2")
    wait_for(lambda: gone.exists() and gone.read_text() == "native\n", timeout=10,
             message="disconnect_client to write the file")
    with proxy.connect() as conn:
        # PyMySQL's SET NAMES was the first query of the first connection
        assert query(conn, "SELECT 'gone'") == [("native", "3")]


def test_a_plain_quit_does_not_look_like_connection_close_to_disconnect_client(
        lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    proxy = lua_proxy(f"""
        function disconnect_client()
            local f = assert(io.open("{seen}", "a"))
            f:write(tostring(proxy.connection.connection_close), "\\n")
            f:close()
        end
    """)
    with proxy.connect() as conn:
        query(conn, "SELECT 1")
    wait_for(lambda: seen.exists() and seen.read_text(), timeout=10, message="disconnect_client")
    assert seen.read_text() == "false\n"
    assert "connection_close set by the script" not in proxy.log_text()
