"""Nobody logs in with the proxy's own identity: a unix socket backend whose account is
authenticated by the peer's OS user (MariaDB's unix_socket, Debian's root@localhost) is
not reachable through the proxy with a wrong password."""

from __future__ import annotations

import getpass
from collections.abc import Iterator

import pymysql
import pytest

from tests.proxy.conftest import Proxy, StartProxy
from tests.support.mariadb import MariaDB

OS_USER = getpass.getuser()
SOCK_PW = ""


@pytest.fixture
def socket_account(mariadb: MariaDB) -> Iterator[str]:
    """An account named after the OS user the proxy runs as, that MariaDB logs in by
    unix_socket or by its password: the shape of Debian's root@localhost. (Its password
    stays the test server's root password, empty, so the suite's own root logins work.)"""
    user = OS_USER
    existed = bool(mariadb.sql("SELECT 1 FROM mysql.user WHERE user=%s AND host='localhost'", (user,)))
    verb = "ALTER" if existed else "CREATE"
    mariadb.sql(f"{verb} USER %s@'localhost' IDENTIFIED VIA mysql_native_password "
                f"USING PASSWORD(%s) OR unix_socket", (user, SOCK_PW))
    try:
        yield user
    finally:
        if existed:  # as the test server made it: root with an empty password
            mariadb.sql("ALTER USER %s@'localhost' IDENTIFIED VIA mysql_native_password "
                        "USING PASSWORD('')", (user,))
        else:
            mariadb.sql("DROP USER %s@'localhost'", (user,))


def _socket_proxy(start_proxy: StartProxy, mariadb: MariaDB) -> Proxy:
    return start_proxy([str(mariadb.socket_path)])


def test_wrong_password_for_a_socket_authenticated_account_is_refused(
        start_proxy: StartProxy, mariadb: MariaDB, socket_account: str) -> None:
    # Straight to the server over its socket, the wrong password gets in: the server
    # only looks at who is on the other end of the socket.
    direct = pymysql.connect(unix_socket=str(mariadb.socket_path), user=socket_account,
                             password="not the password", connect_timeout=5)
    direct.close()
    proxy = _socket_proxy(start_proxy, mariadb)
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect(socket_account, password="not the password")
    code, message = info.value.args
    assert code == 1045
    assert f"(proxy) login of '{socket_account}' refused" in message
    assert "by the proxy's own OS user" in message
    proxy.wait_log(f"refused the login of '{socket_account}' from 127.0.0.1:")
    # The right password does not help either: the proxy cannot tell which way the server
    # would have let the client in.
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect(socket_account, password=SOCK_PW)
    assert info.value.args[0] == 1045


def test_password_accounts_log_in_through_a_unix_socket_backend(
        start_proxy: StartProxy, mariadb: MariaDB, socket_account: str) -> None:
    proxy = _socket_proxy(start_proxy, mariadb)
    with proxy.connect("native") as conn, conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchone() == ("native@%",)
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect("native", password="wrong")
    assert info.value.args[0] == 1045
    assert "(proxy)" not in info.value.args[1]  # the server's own refusal
