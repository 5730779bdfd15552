"""The proxy.* objects and the built-in modules (reference 3.3-3.7, 3.10) as a script in a
running chassis sees them, checked against what the client and the server know."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lua_e2e.conftest import LuaProxyFactory, expect_error, query, write_script
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)

ANSWER_LUA = """
local function answer(t)
    local rows = {}
    for k, v in pairs(t) do rows[#rows + 1] = { k, tostring(v) } end
    proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
        fields = { { name = "key", type = proxy.MYSQL_TYPE_STRING },
                   { name = "value", type = proxy.MYSQL_TYPE_STRING } },
        rows = rows } }
    return proxy.PROXY_SEND_RESULT
end
local Q = string.char(proxy.COM_QUERY)
"""


def test_the_injection_queue_and_only_the_first_result_reaches_the_client(
        lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy(ANSWER_LUA + """
        function read_query(packet)
            local sql = packet:sub(2)
            if sql == "QUEUE" then
                order = {}
                proxy.queries:append(2, Q .. "SELECT 'second'", { resultset_is_needed = true })
                proxy.queries:prepend(1, Q .. "SELECT 'first'", { resultset_is_needed = true })
                proxy.queries:append(3, Q .. "SELECT 'third'", { resultset_is_needed = true })
                sizes = #proxy.queries .. "," .. proxy.queries:len()
                return proxy.PROXY_SEND_QUERY
            elseif sql == "RESET" then
                proxy.queries:append(1, Q .. "SELECT 'dropped'")
                proxy.queries:reset()
                proxy.queries:append(9, Q .. "SELECT 'after reset'")
                return proxy.PROXY_SEND_QUERY
            elseif sql == "FORGOTTEN" then
                -- queued, but the hook does not say PROXY_SEND_QUERY: the original goes
                proxy.queries:append(1, Q .. "SELECT 'never'")
            elseif sql == "SHOW ORDER" then
                return answer({ order = table.concat(order, ","), sizes = sizes })
            end
        end
        function read_query_result(inj)
            order[#order + 1] = inj.id
        end
    """)
    with proxy.connect() as conn:
        assert query(conn, "QUEUE") == [("first",)]
        assert query(conn, "RESET") == [("after reset",)]
        code, _ = expect_error(lambda: query(conn, "FORGOTTEN"))
        assert code == 1064  # the server's syntax error: the original query was sent
        assert dict(query(conn, "SHOW ORDER")) == {"order": "1,2,3,9", "sizes": "3,3"}
    log = proxy.log_text()
    assert "only the first result of a command goes to the client" in log
    assert "proxy.queries has 1 entries but the hook did not return proxy.PROXY_SEND_QUERY" in log


def test_connection_objects_match_what_client_and_server_know(lua_proxy: LuaProxyFactory,
                                                              mariadb: MariaDB) -> None:
    proxy = lua_proxy(ANSWER_LUA + """
        function read_query(packet)
            if packet:sub(2) ~= "SELECT 'conn'" then return end
            local c, s = proxy.connection.client, proxy.connection.server
            return answer({
                client_src = c.src.name, client_src_type = c.src.type, client_dst = c.dst.name,
                client_port = c.src.port, client_user = c.username, client_db = c.default_db,
                scrambled = #c.scrambled_password,
                server_dst = s.dst.name, server_src = s.src.address, server_user = s.username,
                server_db = s.default_db, thread_id = s.thread_id, version = s.mysqld_version,
                scramble = #s.scramble_buffer, plugin = s.auth_plugin_name,
                backend_ndx = proxy.connection.backend_ndx,
                connection_close = proxy.connection.connection_close,
            })
        end
    """)
    with proxy.connect(user="native") as conn:
        seen = dict(query(conn, "SELECT 'conn'"))
        (thread_id,), = query(conn, "SELECT CONNECTION_ID()")
        host, port = conn._sock.getsockname()[:2]
        assert seen == {
            "client_src": f"{host}:{port}", "client_src_type": "2", "client_port": str(port),
            "client_dst": proxy.address, "client_user": "native", "client_db": "",
            "scrambled": "20",
            "server_dst": mariadb.address, "server_src": "127.0.0.1", "server_user": "native",
            "server_db": "", "thread_id": str(thread_id), "version": "50505", "scramble": "21",
            "plugin": "mysql_native_password", "backend_ndx": "1", "connection_close": "false",
        }
        conn.select_db("test")  # COM_INIT_DB is tracked
        seen = dict(query(conn, "SELECT 'conn'"))
        assert (seen["client_db"], seen["server_db"]) == ("test", "test")
        query(conn, "USE sbtest")  # SQL is not (as in MySQL Proxy)
        seen = dict(query(conn, "SELECT 'conn'"))
        assert (seen["client_db"], seen["server_db"]) == ("test", "test")


def test_backends_state_uuid_and_pool_are_writable_where_the_reference_says(
        lua_proxy: LuaProxyFactory, mariadb: MariaDB) -> None:
    proxy = lua_proxy(ANSWER_LUA + """
        function read_query(packet)
            local sql = packet:sub(2)
            local b = proxy.global.backends[1]
            if sql == "MARK DOWN" then
                b.state = proxy.BACKEND_STATE_DOWN
            elseif sql == "MARK UP" then
                b.state = proxy.BACKEND_STATE_UP
            elseif sql == "POOL" then
                b.pool.min_idle_connections = 3
                b.pool.max_idle_connections = 5
                b.uuid = "b-one"
            elseif sql == "BAD WRITE" then
                b.connected_clients = 7
            else
                return
            end
            return answer({
                state = b.state, uuid = b.uuid, type = b.type, dst = b.dst.name,
                min_idle = b.pool.min_idle_connections, max_idle = b.pool.max_idle_connections,
                idle = b.pool.users[""].cur_idle_connections, count = #proxy.global.backends,
                beyond = tostring(proxy.global.backends[2]),
            })
        end
    """)
    with proxy.connect() as conn:
        assert dict(query(conn, "MARK DOWN"))["state"] == "2"
        code, message = expect_error(proxy.connect)
        assert (code, message.startswith("(proxy) all backends are down")) == (1105, True), message
        assert dict(query(conn, "MARK UP"))["state"] == "1"
        assert proxy.rows("SELECT 'up again'") == [("up again",)]
        assert dict(query(conn, "POOL")) == {
            "state": "1", "uuid": "b-one", "type": "1", "dst": mariadb.address, "min_idle": "3",
            "max_idle": "5", "idle": "0", "count": "1", "beyond": "nil"}
        # a read-only field: the hook raises, the original query goes to the server
        assert expect_error(lambda: query(conn, "BAD WRITE"))[0] == 1064
    assert any("(read_query)" in line for line in proxy.critical_lines())


def test_built_in_modules_from_a_running_script(lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    proxy = lua_proxy(ANSWER_LUA + """
        local chassis = require("chassis")
        local posix = require("posix")
        local glib2 = require("glib2")
        local lfs = require("lfs")
        local password = require("mysql.password")
        local tokenizer = require("mysql.tokenizer")
        function read_query(packet)
            local sql = packet:sub(2)
            if sql == "SHUT DOWN" then
                chassis.set_shutdown()
                return answer({ bye = true })
            end
            if sql ~= "SELECT 'modules'" then return end
            print("print goes to the log", 42)
            local challenge = "01234567890123456789"
            local hashed = password.hash("secret")
            local tokens = tokenizer.tokenize("SELECT a FROM t")
            return answer({
                pid = posix.getpid(), user = posix.getpwuid(posix.getuid()).name,
                md5 = glib2.md5("abc"), now = glib2.get_current_time().tv_sec > 1.6e9,
                script = lfs.attributes(SCRIPT, "mode"),
                password = password.check(challenge, password.scramble(challenge, hashed),
                                          password.hash(hashed)),
                tokens = tokens[1].token_name .. " " .. tokens[4].token_name .. " " .. #tokens,
                lua_mem = chassis.get_stats().chassis.lua_mem_bytes > 0,
                version = _VERSION,
            })
        end
    """.replace("SCRIPT", repr(str(tmp_path / "script1.lua"))))
    with proxy.connect() as conn:
        assert dict(query(conn, "SELECT 'modules'")) == {
            "pid": str(proxy.worker_pid()), "user": "root",
            "md5": "900150983cd24fb0d6963f7d28e17f72", "now": "true", "script": "file",
            "password": "true", "tokens": "TK_SQL_SELECT TK_LITERAL 4", "lua_mem": "true",
            "version": "Lua 5.1",
        }
        proxy.wait_log("print goes to the log\t42")
        assert query(conn, "SHUT DOWN") == [("bye", "true")]
    proxy.process.wait(15)
    assert proxy.process.returncode == 0, proxy.process.output()


def test_lua_path_from_the_environment(lua_proxy: LuaProxyFactory, tmp_path: Path) -> None:
    write_script(tmp_path / "e2e_env_module.lua", 'return { where = "found through LUA_PATH" }')
    proxy = lua_proxy(ANSWER_LUA + """
        local m = require("e2e_env_module")
        function read_query(packet)
            if packet:sub(2) == "SELECT 'where'" then return answer({ where = m.where }) end
        end
    """, env={**os.environ, "LUA_PATH": f"{tmp_path}/?.lua;;"})
    assert proxy.rows("SELECT 'where'") == [("where", "found through LUA_PATH")]


def test_proxy_response_shapes_reach_the_client_intact(lua_proxy: LuaProxyFactory) -> None:
    proxy = lua_proxy("""
        local proto = require("mysql.proto")
        local function rs(fields, rows)
            proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = { fields = fields, rows = rows } }
        end
        function read_query(packet)
            local sql = packet:sub(2)
            if sql == "WIDE" then  -- more than 250 columns: a length-encoded column count
                local fields, row = {}, {}
                for i = 1, 300 do fields[i] = { name = "c" .. i, type = proxy.MYSQL_TYPE_LONG }; row[i] = i end
                rs(fields, { row, row })
            elseif sql == "HUGE" then  -- a row over 16 MiB: split into several packets
                rs({ { name = "big", type = proxy.MYSQL_TYPE_LONG_BLOB } },
                   { { string.rep("z", 17 * 1024 * 1024) }, { "small" } })
            elseif sql == "TEXT" then
                rs({ { name = "héllo", type = proxy.MYSQL_TYPE_STRING } }, { { "日本語 ✓" }, { "a\\0b" } })
            elseif sql == "VALUES" then
                rs({ { name = "a" }, { name = "b" }, { name = "c" }, { name = "d" }, { name = "e" } },
                   { { 1.5, 12345678901234, true, {}, "x", "extra" }, { -7 } })
            elseif sql == "LONG ERR" then
                proxy.response = { type = proxy.MYSQLD_PACKET_ERR, errmsg = string.rep("e", 600) }
            elseif sql == "RAW OK" then
                proxy.response = { type = proxy.MYSQLD_PACKET_RAW,
                                   packets = { proto.to_ok_packet({ affected_rows = 5, insert_id = 9 }) } }
            elseif sql == "RAW ERR" then
                proxy.response = { type = proxy.MYSQLD_PACKET_RAW, packets = {
                    proto.to_err_packet({ errmsg = "raw error", errcode = 1234, sqlstate = "HY001" }) } }
            else
                return
            end
            return proxy.PROXY_SEND_RESULT
        end
    """)
    with proxy.connect(max_allowed_packet=64 * 1024 * 1024) as conn, conn.cursor() as cur:
        cur.execute("WIDE")
        assert len(cur.description) == 300
        assert cur.fetchall() == (tuple(range(1, 301)),) * 2
        cur.execute("HUGE")
        assert [len(v) for v, in cur.fetchall()] == [17 * 1024 * 1024, 5]
        cur.execute("TEXT")
        assert (cur.description[0][0], cur.fetchall()) == ("héllo", (("日本語 ✓",), ("a\0b",)))
        cur.execute("VALUES")
        assert cur.fetchall() == (("1.5", "12345678901234", None, None, "x"),
                                  ("-7", None, None, None, None))
        code, message = expect_error(lambda: cur.execute("LONG ERR"))
        assert (code, message) == (1105, "e" * 512)
        assert (cur.execute("RAW OK"), cur.lastrowid) == (5, 9)
        assert expect_error(lambda: cur.execute("RAW ERR")) == (1234, "raw error")
        cur.execute("SELECT 'in step'")
        assert cur.fetchall() == (("in step",),)
