"""Authentication through the proxy with the server's scramble: every plugin, every leg.

The proxy holds no password. mysql_native_password, client_ed25519 and REQUIRE SSL
accounts go against the test MariaDB; caching_sha2_password (which MariaDB lacks) goes
against ``sha2_server``, a small MySQL-8-style server in tests/support, whose auth log
tells which path each login really took on the server side.
"""

from __future__ import annotations

import subprocess
from typing import Any

import mysql.connector
import pymysql
import pytest

from tests.proxy.conftest import Proxy, StartProxy
from tests.support.certs import TLSCerts
from tests.support.chassis_proc import wait_for
from tests.support.mariadb import MariaDB, find_program
from tests.support.sha2_server import Sha2Server

pytestmark = pytest.mark.timeout(60)


def whoami(conn: Any) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT CURRENT_USER()")
        (user,) = cur.fetchone()
    return str(user)


def test_native_password(proxy: Proxy) -> None:
    with proxy.connect("native") as conn:
        assert whoami(conn) == "native@%"


def test_wrong_password_is_the_servers_error(proxy: Proxy) -> None:
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect("native", password="wrong")
    assert info.value.args[0] == 1045
    assert "Access denied for user 'native'" in info.value.args[1]
    assert "wrong" not in proxy.log_text()


def test_ed25519_with_pymysql_and_cli(proxy: Proxy) -> None:
    with proxy.connect("ed") as conn:
        assert whoami(conn) == "ed@%"
    done = subprocess.run(
        [find_program("mariadb"), "--no-defaults", "-h", proxy.host, "-P", str(proxy.port),
         "--protocol=TCP", "-ued", "-ped_pw", "-Ns", "-e", "SELECT CURRENT_USER()"],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ed@%\n"


def test_require_ssl_account_needs_tls_on_the_backend_leg(
        proxy: Proxy, start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    ssl = {"ca": str(tls_certs.ca_cert)}
    # TLS to the proxy only: the server sees plain TCP and refuses, as it should.
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect("tlsonly", ssl=ssl)
    assert info.value.args[0] == 1045
    # With --proxy-backend-ssl the server sees TLS and lets the account in.
    secured = start_proxy([mariadb.address], [
        "--proxy-backend-ssl", f"--proxy-backend-ssl-ca={tls_certs.ca_cert}",
        f"--proxy-ssl-cert={tls_certs.proxy_cert}", f"--proxy-ssl-key={tls_certs.proxy_key}"])
    with secured.connect("tlsonly", ssl=ssl) as conn:
        assert whoami(conn) == "tlsonly@%"
        with conn.cursor() as cur:
            cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
            assert cur.fetchone()[1].startswith("TLSv1")
    # The client leg may even be plain: the proxy's backend leg is what the server sees.
    with secured.connect("tlsonly") as conn:
        assert whoami(conn) == "tlsonly@%"


def test_backend_tls_with_the_wrong_ca_is_refused(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    bad = start_proxy([mariadb.address], [
        "--proxy-backend-ssl", f"--proxy-backend-ssl-ca={tls_certs.proxy_cert}"])
    with pytest.raises(pymysql.err.OperationalError) as info:
        bad.connect()
    assert info.value.args[0] == 1105  # a server-range errno: the mariadb CLI shows its text
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.args[1]
    wait_for(lambda: "TLS handshake with backend" in bad.log_text(), 10, "the log line")


# -- caching_sha2_password --------------------------------------------------------------


def sha2_login(proxy: Proxy, server: Sha2Server, **kwargs: Any) -> str:
    conn = pymysql.connect(host=proxy.host, port=proxy.port, user="sha2", password="sha2_pw",
                           connect_timeout=10, **kwargs)
    try:
        return whoami(conn)
    finally:
        conn.close()


def last_auth(server: Sha2Server) -> tuple[str, bool, bool]:
    event = server.auth_log[-1]
    return event.path, event.ok, event.tls


@pytest.fixture
def sha2_plain_backend(start_proxy: StartProxy, sha2_server: Sha2Server,
                       tls_certs: TLSCerts) -> Proxy:
    """Clients may use TLS to the proxy; the proxy talks plain TCP to the sha2 server."""
    return start_proxy([sha2_server.address], [
        f"--proxy-ssl-cert={tls_certs.proxy_cert}", f"--proxy-ssl-key={tls_certs.proxy_key}",
        "--proxy-backend-ssl-mode=disabled"])


@pytest.fixture
def sha2_tls_backend(start_proxy: StartProxy, sha2_server: Sha2Server,
                     tls_certs: TLSCerts) -> Proxy:
    return start_proxy([sha2_server.address], [
        "--proxy-backend-ssl", f"--proxy-backend-ssl-ca={tls_certs.ca_cert}",
        f"--proxy-ssl-cert={tls_certs.proxy_cert}", f"--proxy-ssl-key={tls_certs.proxy_key}"])


def test_caching_sha2_plain_full_then_fast(sha2_plain_backend: Proxy,
                                           sha2_server: Sha2Server) -> None:
    sha2_server.forget()
    assert sha2_login(sha2_plain_backend, sha2_server) == "sha2@%"
    assert last_auth(sha2_server) == ("full-rsa", True, False)  # client asked for the RSA key
    assert sha2_login(sha2_plain_backend, sha2_server) == "sha2@%"
    assert last_auth(sha2_server) == ("fast", True, False)


def test_caching_sha2_tls_client_plain_backend_is_converted_to_rsa(
        sha2_plain_backend: Proxy, sha2_server: Sha2Server, tls_certs: TLSCerts) -> None:
    sha2_server.forget()
    ssl = {"ca": str(tls_certs.ca_cert)}
    assert sha2_login(sha2_plain_backend, sha2_server, ssl=ssl) == "sha2@%"
    # The client sent its password in clear text over TLS; the proxy fetched the
    # server's key and encrypted it for the plain leg.
    assert last_auth(sha2_server) == ("full-rsa", True, False)
    assert sha2_login(sha2_plain_backend, sha2_server, ssl=ssl) == "sha2@%"
    assert last_auth(sha2_server) == ("fast", True, False)
    assert "sha2_pw" not in sha2_plain_backend.log_text()


def test_caching_sha2_plain_client_tls_backend_uses_the_proxy_key(
        sha2_tls_backend: Proxy, sha2_server: Sha2Server) -> None:
    sha2_server.forget()
    assert sha2_login(sha2_tls_backend, sha2_server) == "sha2@%"
    assert last_auth(sha2_server) == ("full-tls", True, True)
    assert sha2_login(sha2_tls_backend, sha2_server) == "sha2@%"
    assert last_auth(sha2_server) == ("fast", True, True)


def test_caching_sha2_tls_on_both_legs(sha2_tls_backend: Proxy, sha2_server: Sha2Server,
                                       tls_certs: TLSCerts) -> None:
    sha2_server.forget()
    assert sha2_login(sha2_tls_backend, sha2_server, ssl={"ca": str(tls_certs.ca_cert)}) \
        == "sha2@%"
    assert last_auth(sha2_server) == ("full-tls", True, True)


def test_caching_sha2_wrong_password(sha2_plain_backend: Proxy, sha2_server: Sha2Server) -> None:
    sha2_server.forget()
    with pytest.raises(pymysql.err.OperationalError) as info:
        pymysql.connect(host=sha2_plain_backend.host, port=sha2_plain_backend.port,
                        user="sha2", password="nope", connect_timeout=10)
    assert info.value.args[0] == 1045


def test_caching_sha2_with_connector_auth_switch(sha2_plain_backend: Proxy,
                                                 sha2_server: Sha2Server,
                                                 tls_certs: TLSCerts) -> None:
    sha2_server.forget()
    conn = mysql.connector.connect(
        host=sha2_plain_backend.host, port=sha2_plain_backend.port, user="sha2",
        password="sha2_pw", use_pure=True, auth_plugin="mysql_native_password",
        ssl_ca=str(tls_certs.ca_cert), connection_timeout=10)
    try:
        cur = conn.cursor()
        cur.execute("SELECT CURRENT_USER()")
        assert cur.fetchall() == [("sha2@%",)]
    finally:
        conn.close()
    event = sha2_server.auth_log[-1]
    assert (event.path, event.ok, event.switched) == ("full-rsa", True, True)


def test_client_hello_in_the_same_write_as_the_ssl_request(proxy: Proxy,
                                                           tls_certs: TLSCerts) -> None:
    """A fast client's first TLS bytes arrive with its SSLRequest: none may be lost."""
    import ssl

    from tests.proxy.rawclient import RawClient, tls_login_in_one_write

    ctx = ssl.create_default_context(cafile=str(tls_certs.ca_cert))
    with RawClient(proxy.host, proxy.port) as client:
        _, greeting = client.read_packet()
        assert greeting_capabilities(greeting) & 0x800  # CLIENT_SSL offered
        reply = tls_login_in_one_write(client, ctx, "root", 5)
        assert reply[3] == 3 and reply[4] == 0x00, reply  # OK with sequence id 3


def greeting_capabilities(payload: bytes) -> int:
    from chassis_mysql.handshake import HandshakeV10

    return int(HandshakeV10.parse(payload).capabilities)
