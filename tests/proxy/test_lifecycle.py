"""The proxy's part in the chassis life cycle, and big results through the flat relay."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

import pymysql
import pytest

from tests.proxy.conftest import StartProxy
from tests.proxy.rawclient import RawClient, login_packet
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(90)


def _aborted_clients(mariadb: MariaDB) -> int:
    return int(mariadb.sql("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")[0][1])


def _closed_by_peer(conn: pymysql.Connection) -> bool:
    sock = conn._sock
    assert sock is not None
    sock.settimeout(0.1)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


@pytest.mark.parametrize("scripted", [False, True], ids=["relay", "scripted"])
def test_stop_closes_resting_clients_at_once_and_lets_running_commands_finish(
        start_proxy: StartProxy, mariadb: MariaDB, tmp_path: Path, scripted: bool) -> None:
    extra = ["--shutdown-timeout=30"]
    if scripted:
        script = tmp_path / "pass.lua"
        script.write_text("function read_query(packet) end\n")
        extra.append(f"--proxy-lua-script={script}")
    proxy = start_proxy([mariadb.address], extra)
    resting, running = proxy.connect(), proxy.connect()
    try:
        with resting.cursor() as cur:
            cur.execute("SELECT 1")
        aborted = _aborted_clients(mariadb)
        result: list[tuple[object, ...]] = []

        def query() -> None:
            with running.cursor() as cur:
                cur.execute("SELECT SLEEP(2), 'finished'")
                result.append(cur.fetchone())

        worker = threading.Thread(target=query)
        worker.start()
        wait_for(lambda: mariadb.sql("SELECT COUNT(*) FROM information_schema.processlist "
                                     "WHERE info LIKE 'SELECT SLEEP(2)%'")[0][0] == 1,
                 timeout=10, message="the query to run")
        started = time.monotonic()
        proxy.process.signal(signal.SIGTERM)
        # The resting client is closed at once; new clients are turned away.
        wait_for(lambda: _closed_by_peer(resting), timeout=5, message="the resting client closed")
        assert time.monotonic() - started < 1.5
        with pytest.raises((ConnectionRefusedError, pymysql.err.OperationalError)):
            socket.create_connection((proxy.host, proxy.port), timeout=2).recv(1)
        # The running query gets its answer; then its client is closed and the proxy exits.
        worker.join(timeout=15)
        assert result == [(0, "finished")]
        proxy.process.wait(timeout=10)
        assert time.monotonic() - started < 10  # long before --shutdown-timeout=30
        # Both server connections were told COM_QUIT: none counts as aborted.
        assert _aborted_clients(mariadb) == aborted
        assert "still open at the shutdown deadline" not in proxy.log_text()
    finally:
        resting.close()
        running.close()


@pytest.mark.parametrize("mode", ["relay", "relay-untracked", "scripted"])
def test_stop_closes_a_never_quiet_client_between_two_commands(
        start_proxy: StartProxy, mariadb: MariaDB, tmp_path: Path, mode: str) -> None:
    """A client that sends its next command as soon as it has an answer (a benchmark, a
    busy pool) is never at rest: it is closed between two commands, every answer whole,
    its server connection told COM_QUIT, long before --shutdown-timeout. (The relay
    follows answers for the query digests unless they are off: both legs are checked.)"""
    extra = ["--shutdown-timeout=30"]
    if mode == "relay-untracked":
        extra.append("--proxy-query-digest=off")
    if mode == "scripted":
        script = tmp_path / "pass.lua"
        script.write_text("function read_query(packet) end\n")
        extra.append(f"--proxy-lua-script={script}")
    proxy = start_proxy([mariadb.address], extra)
    busy = proxy.connect()
    answers: list[tuple[object, ...]] = []
    ended: list[BaseException] = []

    def loop() -> None:
        try:
            with busy.cursor() as cur:
                while True:
                    cur.execute("SELECT 'whole answer', REPEAT('x', 10000)")
                    answers.append(cur.fetchone())
        except pymysql.err.MySQLError as e:
            ended.append(e)

    aborted = _aborted_clients(mariadb)
    worker = threading.Thread(target=loop)
    worker.start()
    try:
        wait_for(lambda: len(answers) > 50, timeout=10, message="the client to be busy")
        started = time.monotonic()
        proxy.process.signal(signal.SIGTERM)
        worker.join(timeout=10)
        assert not worker.is_alive()
        proxy.process.wait(timeout=10)
        assert time.monotonic() - started < 5  # long before --shutdown-timeout=30
    finally:
        busy.close()
        worker.join(timeout=10)
    assert isinstance(ended[0], pymysql.err.OperationalError)
    assert ended[0].args[0] == 2013  # lost connection: the command after the last answer
    assert set(answers) == {("whole answer", "x" * 10000)}
    log = proxy.log_text()
    assert "closing: proxy is shutting down" in log
    assert "still open at the shutdown deadline" not in log
    assert _aborted_clients(mariadb) == aborted  # the server was told COM_QUIT


def test_stop_is_immediate_when_no_client_is_connected(start_proxy: StartProxy,
                                                       mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--shutdown-timeout=30"])
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
    wait_for(lambda: proxy.open_fds() < 40, timeout=5)
    started = time.monotonic()
    proxy.process.stop(timeout=10)
    assert time.monotonic() - started < 5


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_gigabyte_result_streams_in_flat_memory(start_proxy: StartProxy,
                                                  mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address])
    worker = proxy.worker_pid()
    with RawClient(proxy.host, proxy.port, timeout=60) as client:
        client.read_packet()
        client.send_packet(login_packet("root"), 1)
        assert client.read_packet()[1][:1] == b"\x00"
        base = rss_kib(worker)
        # 1 GiB of rows: 1,048,576 rows of 1 KiB.
        client.send_packet(b"\x03SELECT REPEAT('x', 1024) FROM test.seq_1_to_1048576", 0)
        received, peak = 0, base
        stalled_checked = False
        tail = b""
        while True:
            chunk = client.sock.recv(1 << 20)
            assert chunk, "connection closed mid-result"
            received += len(chunk)
            if received % (64 << 20) < len(chunk):
                peak = max(peak, rss_kib(worker))
            if not stalled_checked and received > 100 << 20:
                # A client that stops reading: the proxy must stop reading the server.
                stalled_checked = True
                before = rss_kib(worker)
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:  # watching for growth: nothing to await
                    peak = max(peak, rss_kib(worker))
                    time.sleep(0.05)
                assert rss_kib(worker) - before < 16 * 1024
            tail = (tail + chunk)[-9:]
            if tail[:3] == b"\x05\x00\x00" and tail[4:7] == b"\xfe\x00\x00":
                break  # the final EOF packet
        assert received > 1 << 30
    assert peak - base < 32 * 1024, f"RSS grew by {(peak - base) // 1024} MiB"
