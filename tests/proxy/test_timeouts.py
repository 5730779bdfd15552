"""The three clocks of a client connection: the login, an idle client, a running query.

A client that does not log in is cut after --proxy-login-timeout (with an ERR where the
protocol allows); a logged-in client with nothing running is closed after
--proxy-idle-timeout (off by default); a running query is never cut, whatever the
timeouts, with and without a script.
"""

from __future__ import annotations

import time
from pathlib import Path

import pymysql
import pytest

from tests.proxy.conftest import StartProxy
from tests.proxy.rawclient import RawClient
from tests.support.mariadb import MariaDB


def test_a_client_that_never_logs_in_is_cut_after_the_login_timeout(
        start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--proxy-login-timeout=0.5"])
    with RawClient(proxy.host, proxy.port) as raw:
        seq, greeting = raw.read_packet()
        assert (seq, greeting[:1]) == (0, b"\x0a")
        seq, answer = raw.read_packet()  # nothing sent: the proxy gives up and says so
        assert answer[:1] == b"\xff" and seq == 1
        assert int.from_bytes(answer[1:3], "little") == 1043
        assert b"(proxy) login timed out after 0.5 s" in answer
        assert raw.read_until_closed() == b""
    proxy.wait_log("did not log in within 0.5 s (--proxy-login-timeout)")
    with proxy.connect() as conn, conn.cursor() as cur:  # others log in as usual
        cur.execute("SELECT 1")


def test_a_client_that_sends_nothing_at_all_is_cut_too(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--proxy-login-timeout=0.5"])
    with RawClient(proxy.host, proxy.port) as raw:
        raw.read_packet()
        raw.send_raw(b"\x20\x00\x00")  # the start of a login packet, never finished
        _seq, answer = raw.read_packet()
        assert b"login timed out" in answer
        assert raw.read_until_closed() == b""


@pytest.mark.parametrize("scripted", [False, True], ids=["relay", "scripted"])
def test_a_running_query_is_not_cut_by_the_timeouts(
        start_proxy: StartProxy, mariadb: MariaDB, tmp_path: Path, scripted: bool) -> None:
    extra = ["--proxy-read-timeout=0.3", "--proxy-idle-timeout=0.3", "--proxy-login-timeout=0.3"]
    if scripted:
        script = tmp_path / "pass.lua"
        script.write_text("function read_query(packet) end\n")
        extra.append(f"--proxy-lua-script={script}")
    proxy = start_proxy([mariadb.address], extra)
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT SLEEP(1.2)")
        assert cur.fetchone() == (0,)
        cur.execute("SELECT 2")  # and the connection is still there
        assert cur.fetchone() == (2,)
    assert "(--proxy-idle-timeout)" not in proxy.log_text()


def test_idle_timeout_is_off_by_default(start_proxy: StartProxy, mariadb: MariaDB) -> None:
    proxy = start_proxy([mariadb.address], ["--proxy-read-timeout=0.3"])
    with proxy.connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT SLEEP(1)")  # the client is silent meanwhile, then idle below
        cur.execute("DO SLEEP(0)")
        with pymysql.connect(host=mariadb.host, port=mariadb.port, user="root") as direct, \
                direct.cursor() as dcur:  # let the sweeper pass a few times
            dcur.execute("SELECT SLEEP(0.8)")
        cur.execute("SELECT 3")
        assert cur.fetchone() == (3,)


def test_a_client_answered_by_its_script_is_not_idle(
        start_proxy: StartProxy, mariadb: MariaDB, tmp_path: Path) -> None:
    """The server never speaks here: the client's own commands are what keeps it active."""
    script = tmp_path / "local.lua"
    script.write_text(
        "function read_query(packet)\n"
        "  proxy.response = {type = proxy.MYSQLD_PACKET_OK}\n"
        "  return proxy.PROXY_SEND_RESULT\n"
        "end\n")
    proxy = start_proxy([mariadb.address], ["--proxy-idle-timeout=0.4", f"--proxy-lua-script={script}"])
    with proxy.connect() as conn, conn.cursor() as cur:
        deadline = time.monotonic() + 1.6  # four idle timeouts, never silent for 0.1 s
        while time.monotonic() < deadline:
            cur.execute("DO 1")
            time.sleep(0.1)  # the client's pace is what is tested
        cur.execute("DO 2")
    assert "(--proxy-idle-timeout)" not in proxy.log_text()
