"""The PROXY protocol on both legs, with real clients, a real chassis and a real MariaDB.

Client leg: a peer in --proxy-protocol-networks (127.0.0.1 here) must start with a v1 or
v2 header, and the client it names is what the logs and Lua's
``proxy.connection.client.src`` show; a header from any other peer (a client bound to
127.0.0.2) is refused, and so is a trusted peer that sends none.

Backend leg (--proxy-backend-proxy-protocol): a MariaDB with proxy_protocol_networks
sees the client's address (127.0.0.x on one machine), so host-based grants apply to it,
and a pooled server connection goes only to a client of the same address.
"""

from __future__ import annotations

import socket
import textwrap
from pathlib import Path
from typing import Any

import pymysql
import pytest

from chassis.proxy_protocol import encode
from tests.metrics.test_prometheus import scrape
from tests.pool.conftest import POOL_ON_DISCONNECT
from tests.proxy.conftest import Proxy, StartProxy
from tests.support.chassis_proc import ChassisStartError, free_port, wait_for
from tests.support.haproxy import HAProxy
from tests.support.mariadb import MariaDB

TRUSTED = "--proxy-protocol-networks=10.9.9.0/24,127.0.0.1/32"

WHOAMI = """
function read_query(packet)
    if packet:sub(2) == "WHOAMI" then
        local c = proxy.connection.client
        proxy.response = { type = proxy.MYSQLD_PACKET_OK, resultset = {
            fields = { { name = "src", type = proxy.MYSQL_TYPE_STRING },
                       { name = "address", type = proxy.MYSQL_TYPE_STRING },
                       { name = "port", type = proxy.MYSQL_TYPE_STRING },
                       { name = "dst", type = proxy.MYSQL_TYPE_STRING } },
            rows = { { c.src.name, c.src.address, tostring(c.src.port), c.dst.name } } } }
        return proxy.PROXY_SEND_RESULT
    end
end
"""


def raw_socket(proxy: Proxy, bind: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket()
    sock.bind((bind, 0))
    sock.settimeout(10)
    sock.connect((proxy.host, proxy.port))
    return sock


def login_after_header(proxy: Proxy, header: bytes | None, user: str = "root", password: str = "",
                       bind: str = "127.0.0.1") -> pymysql.Connection[Any]:
    """PyMySQL on a socket that first sent ``header`` (a balancer's connection)."""
    sock = raw_socket(proxy, bind)
    if header is not None:
        sock.sendall(header)
    conn = pymysql.connect(host=proxy.host, port=proxy.port, user=user, password=password,
                           autocommit=True, defer_connect=True, read_timeout=30)
    try:
        conn.connect(sock=sock)
    except BaseException:
        sock.close()
        raise
    return conn


def rows(conn: pymysql.Connection[Any], sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


@pytest.fixture
def lua_whoami(tmp_path: Path) -> Path:
    path = tmp_path / "whoami.lua"
    path.write_text(textwrap.dedent(WHOAMI))
    return path


# the client leg -------------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
def test_a_trusted_peers_header_names_the_client_in_lua_and_the_logs(
        mariadb: MariaDB, start_proxy: StartProxy, lua_whoami: Path, version: int) -> None:
    proxy = start_proxy([mariadb.address], [TRUSTED, f"--proxy-lua-script={lua_whoami}"])
    header = encode(version, ("192.0.2.7", 51234), ("198.51.100.1", 3306))
    conn = login_after_header(proxy, header)
    assert rows(conn, "WHOAMI") == [("192.0.2.7:51234", "192.0.2.7", "51234", "198.51.100.1:3306")]
    assert rows(conn, "SELECT 1 + 1") == [(2,)]
    conn.close()
    log = proxy.wait_log("client 192.0.2.7:51234 logged in as 'root'")
    assert f"PROXY v{version} header for client 192.0.2.7:51234 from 127.0.0.1:" in log


def test_a_local_header_keeps_the_peers_own_address(
        mariadb: MariaDB, start_proxy: StartProxy, lua_whoami: Path) -> None:
    """LOCAL (v2) or UNKNOWN (v1): the balancer's own connection, e.g. a health check."""
    proxy = start_proxy([mariadb.address], [TRUSTED, f"--proxy-lua-script={lua_whoami}"])
    for header in (encode(2, None, None), encode(1, None, None)):
        sock = raw_socket(proxy)
        port = sock.getsockname()[1]
        sock.sendall(header)
        conn = pymysql.connect(user="root", password="", autocommit=True, defer_connect=True)
        conn.connect(sock=sock)
        assert rows(conn, "WHOAMI")[0][:3] == (f"127.0.0.1:{port}", "127.0.0.1", str(port))
        conn.close()


def test_a_header_from_a_peer_not_in_the_networks_is_refused(
        mariadb: MariaDB, start_proxy: StartProxy) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    proxy = start_proxy([mariadb.address], [TRUSTED, f"--metrics-address={metrics}"])
    sock = raw_socket(proxy, bind="127.0.0.2")
    port = sock.getsockname()[1]
    sock.sendall(encode(2, ("192.0.2.7", 1), ("198.51.100.1", 3306)))
    data = read_to_eof(sock)  # the proxy closes the connection
    sock.close()
    assert b"(proxy) PROXY protocol header refused" in data
    log = proxy.wait_log(f"refused client 127.0.0.2:{port}")
    assert "it sent a PROXY protocol header, but its address is not in --proxy-protocol-networks" in log
    assert log.count(f"127.0.0.2:{port}") == 1  # one line
    # that peer without a header is served as usual, and so is a v1 header's refusal
    plain = pymysql.connect(host=proxy.host, port=proxy.port, user="root", password="",
                            bind_address="127.0.0.2")
    assert rows(plain, "SELECT 1") == [(1,)]
    plain.close()
    with pytest.raises(pymysql.err.OperationalError):
        login_after_header(proxy, b"PROXY TCP4 192.0.2.7 198.51.100.1 1 3306\r\n", bind="127.0.0.2")
    assert scrape(metrics)["chassis_proxy_client_refused_total", (("reason", "proxy_protocol"),)] == 2


def test_a_header_after_the_greeting_from_an_untrusted_peer_is_refused(
        mariadb: MariaDB, start_proxy: StartProxy) -> None:
    """Without --proxy-protocol-networks nobody may send one, even once greeted."""
    proxy = start_proxy([mariadb.address])
    sock = raw_socket(proxy)
    port = sock.getsockname()[1]
    assert sock.recv(4)  # the greeting's header: the proxy did not wait for us
    for i in range(12):  # byte by byte
        sock.sendall(encode(2, None, None)[i:i + 1])
    read_to_eof(sock)
    sock.close()
    assert "it sent a PROXY protocol header" in proxy.wait_log(f"refused client 127.0.0.1:{port}")


def test_a_trusted_peer_without_a_header_is_refused(mariadb: MariaDB, start_proxy: StartProxy) -> None:
    proxy = start_proxy([mariadb.address], [TRUSTED, "--proxy-login-timeout=0.5"])
    # a MySQL client waits for the greeting: after the login timeout it is told why
    with pytest.raises(pymysql.err.OperationalError) as caught:
        pymysql.connect(host=proxy.host, port=proxy.port, user="root", password="", connect_timeout=10)
    assert caught.value.args[0] == 1043
    assert "expected a PROXY protocol header" in caught.value.args[1]
    log = proxy.wait_log("no PROXY protocol header within 0.5 s")
    assert "its peer is in --proxy-protocol-networks" in log
    # bytes that are no header are refused as soon as they arrive, with the reason
    for garbage, why in ((b"\x55\x00\x00\x01\x8d\xa6", "not a PROXY protocol header"),
                         (b"PROXY TCP4 192.0.2.777 198.51.100.1 1 2\r\n", "is not an IPv4 address"),
                         (b"PROXY TCP4 " + b"1" * 120, "longer than 107 bytes")):
        sock = raw_socket(proxy)
        port = sock.getsockname()[1]
        sock.sendall(garbage)
        assert b"expected a PROXY protocol header" in read_to_eof(sock)
        sock.close()
        assert why in proxy.wait_log(f"refused client 127.0.0.1:{port}")


def test_networks_are_checked_at_start(start_proxy: StartProxy) -> None:
    with pytest.raises(ChassisStartError) as caught:
        start_proxy(["127.0.0.1:3306"], ["--proxy-protocol-networks=10.0.0.1/8"])
    assert "--proxy-protocol-networks: '10.0.0.1/8' is not a network" in str(caught.value)


# the backend leg ------------------------------------------------------------------------


WHO_ON_SERVER = ("SELECT CURRENT_USER(), (SELECT HOST FROM information_schema.PROCESSLIST "
                 "WHERE ID = CONNECTION_ID()), CONNECTION_ID()")


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_the_server_sees_the_clients_address_and_its_grants_apply(
        pp_mariadb: MariaDB, start_proxy: StartProxy, version: str) -> None:
    proxy = start_proxy([pp_mariadb.address], [f"--proxy-backend-proxy-protocol={version}"])
    conn = pymysql.connect(host=proxy.host, port=proxy.port, user="from2", password="pw2",
                           bind_address="127.0.0.2")
    port = conn._sock.getsockname()[1]  # type: ignore[union-attr]
    user, host, _ = rows(conn, WHO_ON_SERVER)[0]
    assert (user, host) == ("from2@127.0.0.2", f"127.0.0.2:{port}")
    conn.close()
    # the grant for 127.0.0.3 does not let a client of 127.0.0.2 in
    with pytest.raises(pymysql.err.OperationalError) as caught:
        pymysql.connect(host=proxy.host, port=proxy.port, user="from3", password="pw3",
                        bind_address="127.0.0.2")
    assert caught.value.args[0] == 1045
    assert "'from3'@'127.0.0.2'" in caught.value.args[1]


def test_a_balancers_client_reaches_the_server_through_both_legs(
        pp_mariadb: MariaDB, start_proxy: StartProxy) -> None:
    """HAProxy -> chassis -> MariaDB: the header's client is the one the server sees."""
    proxy = start_proxy([pp_mariadb.address], [TRUSTED, "--proxy-backend-proxy-protocol=v2"])
    header = encode(1, ("127.0.0.3", 40000), ("127.0.0.1", proxy.port))
    conn = login_after_header(proxy, header, user="from3", password="pw3")
    assert rows(conn, WHO_ON_SERVER)[0][:2] == ("from3@127.0.0.3", "127.0.0.3:40000")
    conn.close()


def test_health_probes_send_a_local_header(pp_mariadb: MariaDB, start_proxy: StartProxy,
                                           tmp_path: Path) -> None:
    """A backend behind the PROXY protocol that waits for a header before greeting (a
    chassis with --proxy-protocol-networks) is probed with LOCAL and comes back UP."""
    front = start_proxy([pp_mariadb.address], ["--proxy-protocol-networks=127.0.0.1/32"])
    middle = start_proxy([front.address], ["--proxy-backend-proxy-protocol=v2",
                                           "--proxy-health-check-interval=0.2",
                                           "--proxy-connect-timeout=1"])
    # every connection of middle starts with a header naming its client
    conn = pymysql.connect(host=middle.host, port=middle.port, user="either", password="pwe",
                           bind_address="127.0.0.3")
    assert rows(conn, WHO_ON_SERVER)[0][:1] == ("either@127.0.0.%",)
    conn.close()
    front.wait_log("PROXY v2 header for client 127.0.0.3:")
    # the probe: take front down and up again; middle's probes (LOCAL) find it back
    front.process.stop(timeout=10)
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=middle.host, port=middle.port, user="either", password="pwe",
                        bind_address="127.0.0.3", connect_timeout=10)
    front2 = start_proxy([pp_mariadb.address], ["--proxy-protocol-networks=127.0.0.1/32"],
                         port=front.port)
    wait_for(lambda: "health check: the server greets again" in middle.log_text(), 15,
             "middle's health check finds front again")
    assert "PROXY v2 LOCAL header" in front2.wait_log("PROXY v2 LOCAL header")
    assert "refused client" not in front2.log_text()


def test_a_pooled_connection_is_reused_only_for_the_same_client_address(
        pp_mariadb: MariaDB, start_proxy: StartProxy, tmp_path: Path) -> None:
    script = tmp_path / "pool.lua"
    script.write_text(POOL_ON_DISCONNECT)
    proxy = start_proxy([pp_mariadb.address], ["--proxy-backend-proxy-protocol=v2",
                                               f"--proxy-lua-script={script}"])

    def session(bind: str) -> tuple[str, int]:
        pooled = proxy.log_text().count("pooled the server connection")
        conn = pymysql.connect(host=proxy.host, port=proxy.port, user="either", password="pwe",
                               bind_address=bind, autocommit=True)
        _, host, thread = rows(conn, WHO_ON_SERVER)[0]
        conn.close()
        wait_for(lambda: proxy.log_text().count("pooled the server connection") > pooled, 10,
                 "the server connection pooled")
        return host.rsplit(":", 1)[0], thread

    first = session("127.0.0.2")
    other = session("127.0.0.3")
    assert other[0] == "127.0.0.3" and other[1] != first[1]  # not 127.0.0.2's connection
    again = session("127.0.0.2")
    assert again == first  # 127.0.0.2's pooled connection, same server thread


def test_behind_a_real_haproxy_the_server_sees_the_client(
        pp_mariadb: MariaDB, start_proxy: StartProxy, tmp_path: Path) -> None:
    """client (127.0.0.2) -> HAProxy send-proxy-v2 -> chassis -> MariaDB: the server's
    processlist and grants see 127.0.0.2 and the client's own port."""
    proxy = start_proxy([pp_mariadb.address], ["--proxy-protocol-networks=127.0.0.1/32",
                                               "--proxy-backend-proxy-protocol=v2"])
    with HAProxy(tmp_path, [proxy.address], server_options="send-proxy-v2") as lb:
        conn = pymysql.connect(host=lb.host, port=lb.port, user="from2", password="pw2",
                               bind_address="127.0.0.2")
        port = conn._sock.getsockname()[1]  # type: ignore[union-attr]
        assert rows(conn, WHO_ON_SERVER)[0][:2] == ("from2@127.0.0.2", f"127.0.0.2:{port}")
        conn.close()
        with pytest.raises(pymysql.err.OperationalError) as caught:
            pymysql.connect(host=lb.host, port=lb.port, user="from3", password="pw3",
                            bind_address="127.0.0.2")
        assert caught.value.args[0] == 1045
    assert f"PROXY v2 header for client 127.0.0.2:{port} from 127.0.0.1:" in proxy.log_text()
