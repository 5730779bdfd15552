"""The proxy's part in the chassis life cycle, and big results through the flat relay."""

from __future__ import annotations

import signal
import socket
import time

import pymysql
import pytest

from tests.proxy.conftest import StartProxy
from tests.proxy.rawclient import RawClient, login_packet
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import MariaDB

pytestmark = pytest.mark.timeout(90)


def test_stop_lets_running_clients_finish_until_the_deadline(start_proxy: StartProxy,
                                                            mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--shutdown-timeout=3"])
    conn = proxy.connect()
    try:
        proxy.process.signal(signal.SIGTERM)
        proxy.process.wait_for_log("waiting for 1 client connection(s) to finish")
        # New clients are turned away, the running one is served.
        with pytest.raises((ConnectionRefusedError, pymysql.err.OperationalError)):
            socket.create_connection((proxy.host, proxy.port), timeout=2).recv(1)
        with conn.cursor() as cur:
            cur.execute("SELECT 'still served'")
            assert cur.fetchone() == ("still served",)
        started = time.monotonic()
        proxy.process.wait(timeout=10)
        assert time.monotonic() - started < 5
        proxy.wait_log("still open at the shutdown deadline")
    finally:
        conn.close()


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
