"""Bad input and faults: the right party gets a clear error, one log line, nothing leaks,
and every other client goes on.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable

import pymysql
import pymysql.cursors
import pytest

from tests.proxy.conftest import Proxy, StartProxy
from tests.proxy.rawclient import RawClient, login_packet
from tests.support.chassis_proc import free_port, wait_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(120)

BIG_RESULT = "SELECT seq, REPEAT('x', 200) FROM test.seq_1_to_5000000"


def server_threads(mariadb: MariaDB, user: str = "root") -> set[int]:
    rows = mariadb.sql("SELECT id FROM information_schema.processlist WHERE user = %s "
                       "AND id <> CONNECTION_ID()", (user,))
    return {int(r[0]) for r in rows}


def assert_fds_return(proxy: Proxy, before: int, slack: int = 3) -> int:
    """Wait until the worker's descriptor count is back near ``before``."""
    def settled() -> int | None:
        now = proxy.open_fds()
        return now if now <= before + slack else None
    result = wait_for(settled, timeout=20, message=f"open fds back to about {before}")
    assert result is not None
    return result


def login(proxy: Proxy) -> RawClient:
    """A raw client logged in as root (the test server's root has no password)."""
    client = RawClient(proxy.host, proxy.port)
    client.read_packet()  # greeting
    client.send_packet(login_packet("root"), 1)
    _seq, payload = client.read_packet()
    assert payload[:1] == b"\x00", payload
    return client


def query(client: RawClient, sql: str) -> None:
    client.send_packet(b"\x03" + sql.encode(), 0)


# -- each fault once, with what the client sees ------------------------------------------


def test_garbage_instead_of_a_login(proxy: Proxy) -> None:
    with RawClient(proxy.host, proxy.port) as client:
        seq, greeting = client.read_packet()
        assert seq == 0 and greeting[0] == 10
        client.send_packet(os.urandom(8) + b"\x00" * 24 + b"\xff" * 40, 1)  # no PROTOCOL_41
        seq, payload = client.read_packet()
        assert payload[:3] == b"\xff" + struct.pack("<H", 1043)
        assert b"Bad handshake" in payload
        assert client.read_until_closed() == b""
    proxy.process.wait_for_log("bad handshake from client 127.0.0.1:")


def test_http_request_to_the_proxy(proxy: Proxy) -> None:
    with RawClient(proxy.host, proxy.port) as client:
        client.read_packet()
        client.send_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # length 0x544547: absurd
        _seq, payload = client.read_packet()
        assert payload[:3] == b"\xff" + struct.pack("<H", 1043)
        assert client.read_until_closed() == b""


def test_packet_over_max_allowed_packet_gets_the_servers_error(proxy: Proxy) -> None:
    big = "SELECT '" + "x" * (65 * 1024 * 1024) + "'"
    conn = proxy.connect(max_allowed_packet=128 * 1024 * 1024)
    try:
        with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
            cur.execute(big)
        # The server refuses the packet (1153) and drops the connection; a client may
        # see the ERR or only the lost connection, depending on timing.
        assert info.value.args[0] in (1153, 2006, 2013)
    finally:
        conn.close()
    with proxy.connect() as other, other.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_client_vanishing_mid_result_closes_its_server_connection(
        proxy: Proxy, mariadb: MariaDB) -> None:
    before = server_threads(mariadb)
    client = login(proxy)
    query(client, BIG_RESULT)
    client.recv_exact(100_000)  # the result is streaming
    mine = server_threads(mariadb) - before
    assert len(mine) == 1
    client.abort()
    wait_for(lambda: not (server_threads(mariadb) & mine), timeout=20,
             message="the server connection of the vanished client to be closed")
    proxy.process.wait_for_log("went away without COM_QUIT")


def test_server_closing_mid_result_gives_the_client_a_lost_connection(
        proxy: Proxy, mariadb: MariaDB) -> None:
    import MySQLdb
    import MySQLdb.cursors

    conn = MySQLdb.connect(host=proxy.host, port=proxy.port, user="root", connect_timeout=10,
                           cursorclass=MySQLdb.cursors.SSCursor)
    try:
        cur = conn.cursor()
        cur.execute("SELECT CONNECTION_ID()")
        (thread_id,) = cur.fetchone()
        cur.execute(BIG_RESULT)
        assert cur.fetchone() is not None
        mariadb.sql(f"KILL {thread_id}")
        with pytest.raises(MySQLdb.OperationalError) as info:
            while cur.fetchmany(10000):
                pass
        # libmariadb's "Lost connection to server during query".
        assert info.value.args[0] == 2013
    finally:
        conn.close()
    proxy.process.wait_for_log("closed the connection; closing client")
    with proxy.connect() as other, other.cursor() as cur:
        cur.execute("SELECT 2")
        assert cur.fetchone() == (2,)


# -- a thousand of them: descriptors stay flat, bystanders unaffected ---------------------


def _garbage(proxy: Proxy) -> None:
    with RawClient(proxy.host, proxy.port) as client:
        client.read_packet()
        client.send_packet(b"\x00" * 40, 1)
        client.read_until_closed()


def _vanish_after_greeting(proxy: Proxy) -> None:
    client = RawClient(proxy.host, proxy.port)
    client.read_packet()
    client.abort()


def _vanish_mid_result(proxy: Proxy) -> None:
    client = login(proxy)
    query(client, "SELECT seq FROM test.seq_1_to_100000")
    client.recv_exact(1000)
    client.abort()


def _quit_politely(proxy: Proxy) -> None:
    client = login(proxy)
    client.send_packet(b"\x01", 0)
    client.read_until_closed()


EVENTS: list[Callable[[Proxy], None]] = [_garbage, _vanish_after_greeting, _vanish_mid_result,
                                         _quit_politely]


def _storm(proxy: Proxy, count: int, kinds: list[Callable[[Proxy], None]]) -> None:
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(offset, count, 4):
                kinds[i % len(kinds)](proxy)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_a_thousand_faults_leak_nothing(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--log-level=info"])
    bystander = proxy.connect()
    try:
        _storm(proxy, 20, EVENTS)  # warm up (lazy imports, first backend connect)
        before = assert_fds_return(proxy, proxy.open_fds())
        _storm(proxy, 1000, EVENTS)
        assert_fds_return(proxy, before)
        with bystander.cursor() as cur:
            cur.execute("SELECT 'still here'")
            assert cur.fetchone() == ("still here",)
    finally:
        bystander.close()


def test_a_thousand_clients_with_every_backend_down(start_proxy: StartProxy) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proxy = start_proxy([dead], ["--log-level=warning"])

    def refused(p: Proxy) -> None:
        with RawClient(p.host, p.port) as client:
            seq, payload = client.read_packet()
            assert (seq, payload[:3]) == (0, b"\xff" + struct.pack("<H", 1105)), payload
            assert dead.encode() in payload
            assert client.read_until_closed() == b""

    _storm(proxy, 20, [refused])
    before = assert_fds_return(proxy, proxy.open_fds())
    _storm(proxy, 1000, [refused])
    assert_fds_return(proxy, before)


def test_server_kills_leak_nothing(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--log-level=warning"])
    killer = mariadb.connect()
    lock = threading.Lock()

    def killed(p: Proxy) -> None:
        client = login(p)
        query(client, "SELECT CONNECTION_ID()")
        packets = [client.read_packet()[1] for _ in range(5)]  # count, column, EOF, row, EOF
        thread_id = int(packets[3][1:])
        query(client, "SELECT seq FROM test.seq_1_to_1000000")
        client.recv_exact(1000)
        with lock, killer.cursor() as cur:
            cur.execute(f"KILL {thread_id}")
        client.sock.settimeout(20)
        while client.sock.recv(1 << 20):  # the rest in flight, then the proxy's close
            pass
        client.close()

    try:
        _storm(proxy, 8, [killed])
        before = assert_fds_return(proxy, proxy.open_fds())
        _storm(proxy, 1000, [killed])
        assert_fds_return(proxy, before)
        assert proxy.log_text().count("closed the connection; closing client") >= 1000
    finally:
        killer.close()


def test_a_pre_4_1_client_gets_mysql_proxys_2007(proxy: Proxy) -> None:
    """A HandshakeResponse320 (no CLIENT_PROTOCOL_41): ERR 2007 in the pre-4.1 ERR format
    (no SQL state), as MySQL Proxy 0.8.5 answered it."""
    with RawClient(proxy.host, proxy.port) as raw:
        raw.read_packet()  # the greeting
        # capabilities (2 bytes: LONG_PASSWORD | TRANSACTIONS), max packet (3), user, NUL, scramble
        raw.send_packet(struct.pack("<H", 0x2001) + b"\x00\x00\x01" + b"root\x00" + b"12345678", 1)
        seq, answer = raw.read_packet()
        assert seq == 2
        assert answer == b"\xff\xd7\x07" + b"4.0 protocol is not supported"
        assert raw.read_until_closed() == b""
