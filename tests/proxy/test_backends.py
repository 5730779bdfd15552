"""Backend choice, failover and the proxy's own limits, seen from a client."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator

import pymysql
import pytest

from tests.proxy.conftest import StartProxy
from tests.support.certs import TLSCerts
from tests.support.chassis_proc import ChassisStartError, free_port, start_chassis, wait_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(60)


def dead_address() -> str:
    """An address where nobody listens: connecting is refused at once."""
    return f"127.0.0.1:{free_port()}"


@pytest.fixture
def silent_backend() -> Iterator[str]:
    """Accepts TCP connections (the kernel does, from the backlog) but never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def port_of(conn: pymysql.Connection) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT @@port")
        (port,) = cur.fetchone()
    return int(port)


def test_first_backend_down_second_is_used(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    dead = dead_address()
    proxy = start_proxy([dead, mariadb.address])
    for _ in range(3):
        with proxy.connect() as conn:
            assert port_of(conn) == mariadb.port
    log = proxy.log_text()
    assert f"backend {dead}: UNKNOWN -> DOWN (connection refused)" in log
    # Marked DOWN once: the next clients did not try it again.
    assert log.count(f"backend {dead}: ") == 1


def test_all_backends_down_error_names_each(start_proxy: StartProxy) -> None:
    first, second = dead_address(), dead_address()
    proxy = start_proxy([first, second])
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect()
    code, message = info.value.args
    assert code == 1105
    assert message.startswith("(proxy) all backends are down")
    assert f"{first} (connection refused)" in message
    assert f"{second} (connection refused)" in message
    proxy.wait_log("all backends are down")


def test_error_names_a_read_only_backend_that_is_up(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    dead = f"127.0.0.1:{free_port()}"
    proxy = start_proxy([dead], [f"--proxy-read-only-backend-addresses={mariadb.address}"])
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect()
    code, message = info.value.args
    assert code == 1105
    assert f"{dead} (connection refused)" in message
    assert f"read-only backend {mariadb.address} is up, but without a script only read/write " \
        "backends get clients" in message


def test_backend_that_never_greets_times_out_and_the_next_is_used(
        start_proxy: StartProxy, mariadb: MariaDB, silent_backend: str) -> None:
    proxy = start_proxy([silent_backend, mariadb.address], ["--proxy-connect-timeout=0.3"])
    with proxy.connect() as conn:
        assert port_of(conn) == mariadb.port
    proxy.wait_log(f"backend {silent_backend}: UNKNOWN -> DOWN (timed out after 0.3 s")


def test_only_a_silent_backend_gives_the_client_an_error(
        start_proxy: StartProxy, silent_backend: str) -> None:
    proxy = start_proxy([silent_backend], ["--proxy-connect-timeout=0.3"])
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect()
    assert info.value.args[0] == 1105
    assert f"{silent_backend} (timed out after 0.3 s" in info.value.args[1]


def test_down_backend_is_tried_again_later(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    port = free_port()
    revived = f"127.0.0.1:{port}"
    proxy = start_proxy([revived, mariadb.address])
    with proxy.connect() as conn:
        assert port_of(conn) == mariadb.port
    proxy.wait_log(f"backend {revived}: UNKNOWN -> DOWN")
    # The dead backend comes back (a second chassis in front of the same server).
    second = start_proxy([mariadb.address], port=port)

    def revived_used() -> bool:
        with proxy.connect() as conn:
            port_of(conn)
        return "logged in as 'root'" in second.log_text()

    # Retried after a few seconds, when a client connects or by the background probe.
    wait_for(revived_used, timeout=20, message="the DOWN backend to be retried", interval=0.2)
    proxy.wait_log(f"backend {revived}: DOWN -> ")


def test_unix_socket_backend_and_listener(start_proxy: StartProxy, mariadb: MariaDB,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    listen = tmp_path_factory.mktemp("sock") / "proxy.sock"
    # Two workers: a unix socket path cannot be shared, the first worker serves it.
    proxy = start_proxy([str(mariadb.socket_path)], [f"--proxy-address={listen}",
                                                     "--event-threads=2"])
    conn = pymysql.connect(unix_socket=str(listen), user="root", connect_timeout=10)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@port, 40 + 2")
            assert cur.fetchone() == (mariadb.port, 42)
    finally:
        conn.close()
    assert proxy.process.proc.poll() is None
    proxy.wait_log("is served by worker 1 only")
    proxy.process.stop()
    assert not listen.exists()  # removed at shutdown


def test_max_connections(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--proxy-max-connections=2"])
    first, second = proxy.connect(), proxy.connect()
    try:
        with pytest.raises(pymysql.err.OperationalError) as info:
            proxy.connect()
        assert info.value.args == (1040, "Too many connections")
        first.close()

        def third_gets_in() -> bool:
            try:
                proxy.connect().close()
            except pymysql.err.OperationalError:
                return False
            return True

        wait_for(third_gets_in, timeout=5, message="a free slot after a client left")
        with second.cursor() as cur:
            cur.execute("SELECT 1")
            assert cur.fetchone() == (1,)
    finally:
        second.close()


def test_idle_timeout_closes_an_idle_client(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--proxy-idle-timeout=0.4"])
    conn = proxy.connect()
    try:
        proxy.process.wait_for_log("(--proxy-idle-timeout)", timeout=10)
        with pytest.raises(pymysql.err.OperationalError) as info, conn.cursor() as cur:
            cur.execute("SELECT 1")
        assert info.value.args[0] in (2006, 2013)
    finally:
        conn.close()


@pytest.mark.parametrize(("args", "message"), [
    (["-b", "127.0.0.1:3306", "-b", "127.0.0.1"], "backend 127.0.0.1:3306 is already known"),
    (["-b", "127.0.0.1:99999"], "failed to parse the port"),
    (["--proxy-ssl-cert=/etc/hostname"], "--proxy-ssl-cert and --proxy-ssl-key go together"),
    (["--proxy-ssl-cert=/nonexistent.pem", "--proxy-ssl-key=/nonexistent.pem"],
     "cannot read /nonexistent.pem"),
    (["--proxy-backend-ssl-ca=/etc/hostname"], "--proxy-backend-ssl-ca: cannot load /etc/hostname"),
])
def test_bad_options_stop_the_start(args: list[str], message: str) -> None:
    with pytest.raises(ChassisStartError) as info:
        start_chassis(["--plugins=proxy", f"--proxy-address=127.0.0.1:{free_port()}", *args],
                      timeout=10)
    assert message in str(info.value)


def test_bad_certificate_files_stop_the_start(tls_certs: TLSCerts) -> None:
    with pytest.raises(ChassisStartError) as info:
        start_chassis(["--plugins=proxy", f"--proxy-address=127.0.0.1:{free_port()}",
                       f"--proxy-ssl-cert={tls_certs.proxy_cert}",
                       f"--proxy-ssl-key={tls_certs.server_key}"], timeout=10)
    assert "the key must match the certificate" in str(info.value)


def test_no_proxy_opens_no_listener() -> None:
    port = free_port()
    with start_chassis(["--plugins=proxy", f"--proxy-address=127.0.0.1:{port}", "--no-proxy"]), \
            pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_proxy_is_shared_by_several_workers(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--event-threads=2"])
    assert len(proxy.process.workers()) == 2
    conns = [proxy.connect() for _ in range(8)]
    try:
        for conn in conns:
            assert port_of(conn) == mariadb.port
    finally:
        for conn in conns:
            conn.close()


def test_out_of_file_descriptors_is_not_a_backend_failure(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address])
    with proxy.connect() as conn:
        assert port_of(conn) == mariadb.port
    proxy.wait_log(f"backend {mariadb.address}: UNKNOWN -> UP")
    worker = proxy.worker_pid()
    fds = {int(fd) for fd in os.listdir(f"/proc/{worker}/fd")}
    first_free = min(set(range(len(fds) + 1)) - fds)
    soft = subprocess.run(["prlimit", f"--pid={worker}", "--nofile", "--output=SOFT", "--noheadings"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The next client's socket is the last descriptor the worker may open: its backend
    # connection cannot be made.
    subprocess.run(["prlimit", f"--pid={worker}", f"--nofile={first_free + 1}:"], check=True)
    try:
        with pytest.raises(pymysql.err.OperationalError) as info:
            proxy.connect()
        assert info.value.args[0] == 1105
        assert "(proxy) cannot connect to a backend: Too many open files" in info.value.args[1]
        proxy.wait_log("no backend connection for lack of local resources: Too many open files")
    finally:
        subprocess.run(["prlimit", f"--pid={worker}", f"--nofile={soft}:"], check=True)
    assert "-> DOWN" not in proxy.log_text()
    with proxy.connect() as conn:  # the backend was never marked down
        assert port_of(conn) == mariadb.port
