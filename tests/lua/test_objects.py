"""proxy.connection, its client/server sockets and addresses, proxy.global.backends
(reference 3.4-3.6)."""

from __future__ import annotations

import socket

import pytest
from chassis_proxy.hooks import AddressInfo, BackendState, BackendType, PeerInfo
from chassis_proxy.lua import LuaConnectionHooks

from chassis import logs
from tests.lua.conftest import PROBE, Backend, Conn, Env, Pool, PooledBackend, probe, tcp

HC = tuple[LuaConnectionHooks, Conn]


@pytest.fixture
def hooks_and_conn(env: Env) -> HC:
    conn = env.conn(
        server=PeerInfo(
            src=tcp("127.0.0.1", 41000),
            dst=tcp("127.0.0.1", 3306),
            username="app",
            default_db="shop",
            mysqld_version=50505,
            thread_id=12,
            scramble_buffer=b"x" * 21,
            auth_plugin_name="mysql_native_password",
        ),
        backend_ndx=1,
        backend_list=[
            Backend(tcp("127.0.0.1", 3306), BackendType.RW, BackendState.UP, None, 3),
            Backend(tcp("127.0.0.1", 3307), BackendType.RO, BackendState.OFFLINE, "b-2", 0),
        ],
    )
    conn.client.username = "app"
    conn.client.default_db = "shop"
    conn.client.scrambled_password = b"\x00\x01" * 10
    return env.host(PROBE).open(conn), conn


def test_connection_fields(hooks_and_conn: HC) -> None:
    hooks, _ = hooks_and_conn
    assert probe(hooks, "proxy.connection.backend_ndx, proxy.connection.unknown_key") == [True, "1", None]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("default_db", "proxy.connection.default_db is deprecated, use proxy.connection.client.default_db or "
         "proxy.connection.server.default_db instead"),
        ("thread_id", "proxy.connection.thread_id is deprecated, use proxy.connection.server.thread_id instead"),
        ("mysqld_version", "proxy.connection.mysqld_version is deprecated, use "
         "proxy.connection.server.mysqld_version instead"),
    ],
)
def test_deprecated_connection_keys_raise(hooks_and_conn: HC, key: str, message: str) -> None:
    hooks, _ = hooks_and_conn
    assert probe(hooks, f"proxy.connection.{key}") == [False, "probe:1: " + message]


def test_backend_ndx_is_writable_and_checked(hooks_and_conn: HC) -> None:
    hooks, conn = hooks_and_conn
    assert probe(hooks, "(function() proxy.connection.backend_ndx = 2 end)()") == [True]
    assert conn.backend_ndx == 2
    ok, msg = probe(hooks, "(function() proxy.connection.backend_ndx = 3 end)()")
    assert ok is False and "there are 2 backend(s); use 1..2, or 0" in msg
    ok, msg = probe(hooks, "(function() proxy.connection.backend_ndx = 'x' end)()")
    assert ok is False and "number expected, got string" in msg
    assert probe(hooks, "(function() proxy.connection.backend_ndx = 0 end)()") == [True]
    assert conn.backend_ndx == 0


def test_connection_close_takes_only_booleans(hooks_and_conn: HC) -> None:
    hooks, conn = hooks_and_conn
    assert probe(hooks, "(function() proxy.connection.connection_close = true end)()") == [True]
    assert conn.connection_close is True
    ok, msg = probe(hooks, "(function() proxy.connection.connection_close = 1 end)()")
    assert ok is False and "boolean expected, got number" in msg


def test_other_connection_keys_are_not_writable(hooks_and_conn: HC) -> None:
    hooks, _ = hooks_and_conn
    assert probe(hooks, "(function() proxy.connection.foo = 1 end)()") == [
        False,
        "probe:1: proxy.connection.foo is not writable",
    ]


def test_client_socket_fields(hooks_and_conn: HC) -> None:
    hooks, _ = hooks_and_conn
    c = "proxy.connection.client"
    assert probe(hooks, f"{c}.username, {c}.default_db, #{c}.scrambled_password, {c}.scrambled_password:byte(2)") == [
        True, "app", "shop", "20", "1",
    ]  # fmt: skip
    assert probe(hooks, f"{c}.src.name, {c}.src.address, {c}.src.port, {c}.src.type, {c}.dst.name") == [
        True, "127.0.0.1:50123", "127.0.0.1", "50123", str(socket.AF_INET), "127.0.0.1:4040",
    ]  # fmt: skip


def test_server_socket_fields(hooks_and_conn: HC) -> None:
    hooks, _ = hooks_and_conn
    s = "proxy.connection.server"
    assert probe(
        hooks,
        f"{s}.mysqld_version, {s}.thread_id, #{s}.scramble_buffer, {s}.auth_plugin_name, "
        f"{s}.username, {s}.default_db, {s}.dst.name, {s}.src.port",
    ) == [True, "50505", "12", "21", "mysql_native_password", "app", "shop", "127.0.0.1:3306", "41000"]


def test_server_is_nil_without_a_backend_connection(env: Env) -> None:
    hooks = env.host(PROBE).open(env.conn())
    assert probe(hooks, "proxy.connection.server == nil, proxy.connection.client ~= nil") == [True, True, True]


def test_sockets_read_current_values(hooks_and_conn: HC) -> None:
    hooks, conn = hooks_and_conn
    probe(hooks, "(function() kept = proxy.connection.client end)()")
    conn.client.default_db = "after_init_db"
    assert probe(hooks, "kept.default_db") == [True, "after_init_db"]


def test_socket_address_key_is_deprecated_and_unknown_keys_are_logged(env: Env, hooks_and_conn: HC) -> None:
    hooks, _ = hooks_and_conn
    assert probe(hooks, "proxy.connection.client.address") == [
        False,
        "probe:1: proxy.connection.client.address is deprecated. Use .src.name or .dst.name",
    ]
    assert probe(hooks, "proxy.connection.client.challenge") == [True, None]
    assert env.lines(logs.CRITICAL) == ["conn 1: proxy.connection.client.challenge is not known"]
    ok, msg = probe(hooks, "(function() proxy.connection.client.username = 'x' end)()")
    assert ok is False and "not writable" in msg


def test_unix_socket_addresses_have_no_port(env: Env) -> None:
    conn = env.conn()
    conn.client.src = AddressInfo("/tmp/proxy.sock", "/tmp/proxy.sock", None, socket.AF_UNIX)
    hooks = env.host(PROBE).open(conn)
    assert probe(hooks, "proxy.connection.client.src.name, proxy.connection.client.src.port, "
                        "proxy.connection.client.src.type") == [True, "/tmp/proxy.sock", None, "1"]


def test_backends_array(hooks_and_conn: HC) -> None:
    hooks, _ = hooks_and_conn
    b = "proxy.global.backends"
    assert probe(hooks, f"#{b}, {b}[0] == nil, {b}[3] == nil, {b}['x'] == nil") == [True, "2", True, True, True]
    assert probe(
        hooks,
        f"{b}[1].connected_clients, {b}[1].state, {b}[1].type, {b}[1].uuid, {b}[1].dst.name, "
        f"{b}[2].state, {b}[2].type, {b}[2].uuid, {b}[2].dst.port",
    ) == [True, "3", "1", "1", None, "127.0.0.1:3306", "2", "2", "b-2", "3307"]


def test_backend_state_and_uuid_are_writable(hooks_and_conn: HC) -> None:
    hooks, conn = hooks_and_conn
    b = "proxy.global.backends[1]"
    assert probe(hooks, f"(function() {b}.state = proxy.BACKEND_STATE_DOWN {b}.uuid = 'u-1' end)()") == [True]
    assert conn.backends[0].state == BackendState.DOWN and conn.backends[0].uuid == "u-1"
    assert probe(hooks, f"(function() {b}.uuid = nil end)()") == [True]
    assert conn.backends[0].uuid is None
    assert probe(hooks, f"(function() {b}.state = 9 end)()")[0] is False
    assert probe(hooks, f"(function() {b}.connected_clients = 9 end)()") == [
        False,
        "probe:1: proxy.global.backends[1].connected_clients is not writable",
    ]
    assert probe(hooks, "(function() proxy.global.backends[1] = 1 end)()")[0] is False


def test_pool_settings_without_a_pool_are_kept_and_nothing_is_idle(hooks_and_conn: HC) -> None:
    hooks, _ = hooks_and_conn
    p = "proxy.global.backends[1].pool"
    assert probe(hooks, f"{p}.min_idle_connections, {p}.max_idle_connections, {p}.users['app'].cur_idle_connections,"
                        f" {p}.users[''].cur_idle_connections") == [True, "0", "0", "0", "0"]
    assert probe(hooks, f"(function() {p}.min_idle_connections = 2 {p}.max_idle_connections = 5 end)()") == [True]
    assert probe(hooks, f"{p}.min_idle_connections, {p}.max_idle_connections") == [True, "2", "5"]
    assert probe(hooks, f"(function() {p}.other = 1 end)()")[0] is False


def test_pool_of_a_pooling_backend(env: Env) -> None:
    pooled = PooledBackend(tcp("127.0.0.1", 3306), pool=Pool(1, 4, {"app": 3}))
    hooks = env.host(PROBE).open(env.conn(backend_list=[pooled]))
    p = "proxy.global.backends[1].pool"
    assert probe(hooks, f"{p}.min_idle_connections, {p}.max_idle_connections, "
                        f"{p}.users['app'].cur_idle_connections, {p}.users['bob'].cur_idle_connections") == [
        True, "1", "4", "3", "0",
    ]  # fmt: skip
    probe(hooks, f"(function() {p}.max_idle_connections = 8 end)()")
    assert pooled.pool.max_idle_connections == 8


def test_backends_are_shared_by_every_connection(env: Env) -> None:
    host = env.host(PROBE)
    a = host.open(env.conn())
    b = host.open(env.conn())
    probe(a, "(function() proxy.global.kept = proxy.global.backends end)()")
    assert probe(b, "rawequal(proxy.global.kept, proxy.global.backends), #proxy.global.kept") == [True, True, "1"]


def test_a_failing_view_gives_the_script_nil_and_one_log_line(env: Env) -> None:
    class BrokenBackend:
        address = tcp("127.0.0.1", 3306)
        type = BackendType.RW
        state = BackendState.UP
        uuid = None

        @property
        def connected_clients(self) -> int:
            raise RuntimeError("counter unavailable")

    hooks = env.host(PROBE).open(env.conn(backend_list=[BrokenBackend()]))
    b = "proxy.global.backends[1]"
    assert probe(hooks, f"{b}.connected_clients, {b}.type") == [True, None, "1"]
    assert any("backend_get() failed" in r.getMessage() for r in env.caplog.records)


def test_proxy_queries_and_connection_are_made_once_when_first_read(env: Env) -> None:
    host = env.host("""
function read_auth()
  proxy.global.same = proxy.queries == proxy.queries and proxy.connection == proxy.connection
  proxy.global.q = proxy.queries
end
function read_handshake() proxy.global.again = proxy.global.q == proxy.queries end""")
    hooks = host.open(env.conn())
    hooks.read_auth()
    hooks.read_handshake()
    assert host.lua.runtime.eval("proxy.global.same and proxy.global.again") is True


def test_proxy_queries_and_connection_written_before_read_keep_what_was_written(env: Env) -> None:
    host = env.host("""
proxy.connection = nil
proxy.queries = 7
function read_auth() proxy.global.seen = tostring(proxy.connection) .. " " .. tostring(proxy.queries) end""")
    hooks = host.open(env.conn())
    hooks.read_auth()
    assert host.lua.runtime.eval("proxy.global.seen") == b"nil 7"
