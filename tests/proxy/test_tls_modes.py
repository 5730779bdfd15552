"""TLS modes of both legs, as MySQL Router has them, through real clients.

Client leg: ``--proxy-ssl-mode=disabled|preferred|required``, client certificates
(``--proxy-ssl-ca``), ``--proxy-ssl-min-version`` and ``--proxy-ssl-cipher``. Backend
leg: ``--proxy-backend-ssl-mode=disabled|preferred|required|as_client`` (default
``as_client``: a plaintext client never passes for a TLS one on the server), verified
against the system's CAs unless ``--proxy-backend-ssl-ca`` or
``--proxy-backend-ssl-verify`` say otherwise. The test MariaDB's ``tlsonly`` account is
``REQUIRE SSL``; its certificates come from the session's test CA. PyMySQL uses TLS
when offered unless told ``ssl_disabled=True``: that is the plaintext client here.
"""

from __future__ import annotations

import ssl
import subprocess
from typing import Any

import MySQLdb
import pymysql
import pytest

from tests.proxy.conftest import Proxy, StartProxy
from tests.support.certs import TLSCerts
from tests.support.chassis_proc import ChassisStartError, free_port, start_chassis
from tests.support.mariadb import ACCOUNTS, MariaDB, find_program

pytestmark = pytest.mark.timeout(60)


def client_cert_args(tls_certs: TLSCerts) -> list[str]:
    return [f"--proxy-ssl-cert={tls_certs.proxy_cert}", f"--proxy-ssl-key={tls_certs.proxy_key}"]


def server_status(conn: Any, name: str) -> str:
    """A session status variable as the server sees it (``Ssl_cipher``: the backend leg)."""
    cur = conn.cursor()
    try:
        cur.execute(f"SHOW SESSION STATUS LIKE '{name}'")
        row = cur.fetchone()
    finally:
        cur.close()
    return str(row[1])


def whoami(conn: Any) -> str:
    cur = conn.cursor()
    try:
        cur.execute("SELECT CURRENT_USER()")
        return str(cur.fetchone()[0])
    finally:
        cur.close()


def cli(proxy: Proxy, *args: str, user: str = "native") -> subprocess.CompletedProcess[str]:
    account = ACCOUNTS[user]
    return subprocess.run(
        [find_program("mariadb"), "--no-defaults", f"--host={proxy.host}", f"--port={proxy.port}",
         "--protocol=TCP", f"--user={user}", f"--password={account.password}", "--batch",
         "--skip-column-names", *args, "-e", "SELECT CURRENT_USER()"],
        capture_output=True, text=True, timeout=30)


# -- the backend leg ------------------------------------------------------------------------


def test_as_client_is_the_default_so_a_plaintext_client_cannot_satisfy_require_ssl(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    proxy = start_proxy([mariadb.address], [
        *client_cert_args(tls_certs), f"--proxy-backend-ssl-ca={tls_certs.ca_cert}"])
    tls = {"ca": str(tls_certs.ca_cert)}
    # A TLS client gets a TLS backend leg: the server lets the REQUIRE SSL account in.
    with proxy.connect("tlsonly", ssl=tls) as conn:
        assert whoami(conn) == "tlsonly@%"
        assert server_status(conn, "Ssl_cipher") != ""
    # A plaintext client gets a plaintext leg: the server refuses the account.
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect("tlsonly", ssl_disabled=True)
    assert info.value.args[0] == 1045
    with proxy.connect("native", ssl_disabled=True) as conn:
        assert server_status(conn, "Ssl_cipher") == ""
    # mysqlclient, both ways.
    conn = MySQLdb.connect(host=proxy.host, port=proxy.port, user="tlsonly",
                           password=ACCOUNTS["tlsonly"].password, ssl={"ca": str(tls_certs.ca_cert)})
    try:
        assert whoami(conn) == "tlsonly@%"
    finally:
        conn.close()
    with pytest.raises(MySQLdb.OperationalError) as refused:
        MySQLdb.connect(host=proxy.host, port=proxy.port, user="tlsonly",
                        password=ACCOUNTS["tlsonly"].password, ssl_mode="DISABLED")
    assert refused.value.args[0] == 1045


def test_backend_ssl_ca_alone_turns_verification_on(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    """#16: --proxy-backend-ssl-ca alone was refused ("needs --proxy-backend-ssl")."""
    wrong = start_proxy([mariadb.address], [
        *client_cert_args(tls_certs), f"--proxy-backend-ssl-ca={tls_certs.client_cert}"])
    with pytest.raises(pymysql.err.OperationalError) as info:
        wrong.connect("native", ssl={"ca": str(tls_certs.ca_cert)})
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.args[1]
    assert "--proxy-backend-ssl-ca" in info.value.args[1]  # what to do about it
    wrong.wait_log("TLS handshake with backend")


def test_backend_is_verified_against_the_system_cas_unless_told_otherwise(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    proxy = start_proxy([mariadb.address], client_cert_args(tls_certs))
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect("native", ssl={"ca": str(tls_certs.ca_cert)})
    assert info.value.args[0] == 1105
    assert "CERTIFICATE_VERIFY_FAILED" in info.value.args[1]
    # --proxy-backend-ssl-verify=none: encrypted, unchecked, and said so at start-up.
    unchecked = start_proxy([mariadb.address], [
        *client_cert_args(tls_certs), "--proxy-backend-ssl-verify=none"])
    assert "(warning)" in unchecked.wait_log("--proxy-backend-ssl-verify=none")
    with unchecked.connect("tlsonly", ssl={"ca": str(tls_certs.ca_cert)}) as conn:
        assert server_status(conn, "Ssl_cipher") != ""


def test_a_backend_tls_failure_reaches_the_mariadb_cli_as_text(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    """#16: the CLI printed "Received malformed packet" for the client-range errno 2026."""
    proxy = start_proxy([mariadb.address], [
        "--proxy-backend-ssl", f"--proxy-backend-ssl-ca={tls_certs.client_cert}"])
    done = cli(proxy, "--skip-ssl")
    assert done.returncode == 1
    assert "ERROR 1105" in done.stderr, done.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert "malformed" not in done.stderr


def test_backend_ssl_is_required_mode_and_says_what_it_allows(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    """--proxy-backend-ssl is kept as --proxy-backend-ssl-mode=required: every backend leg
    is TLS, so a plaintext client does satisfy REQUIRE SSL, by the operator's choice."""
    proxy = start_proxy([mariadb.address], [
        "--proxy-backend-ssl", f"--proxy-backend-ssl-ca={tls_certs.ca_cert}"])
    proxy.wait_log("plaintext clients get a TLS backend leg")
    with proxy.connect("tlsonly", ssl_disabled=True) as conn:
        assert whoami(conn) == "tlsonly@%"
    with pytest.raises(ChassisStartError) as info:
        start_chassis(["--plugins=proxy", f"--proxy-address=127.0.0.1:{free_port()}",
                       "--proxy-backend-ssl", "--proxy-backend-ssl-mode=as_client"], timeout=10)
    assert "--proxy-backend-ssl means --proxy-backend-ssl-mode=required" in str(info.value)


def test_backend_ssl_mode_disabled_and_preferred(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    tls = {"ca": str(tls_certs.ca_cert)}
    plain = start_proxy([mariadb.address], [
        *client_cert_args(tls_certs), "--proxy-backend-ssl-mode=disabled"])
    with plain.connect("native", ssl=tls) as conn:
        assert server_status(conn, "Ssl_cipher") == ""
    preferred = start_proxy([mariadb.address], [
        "--proxy-backend-ssl-mode=preferred", f"--proxy-backend-ssl-ca={tls_certs.ca_cert}"])
    with preferred.connect("native", ssl_disabled=True) as conn:  # the server offers TLS: it is used
        assert server_status(conn, "Ssl_cipher") != ""


# -- the client leg ---------------------------------------------------------------------------


def test_ssl_mode_required_refuses_clients_without_tls(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    proxy = start_proxy([mariadb.address], [
        *client_cert_args(tls_certs), "--proxy-ssl-mode=required",
        "--proxy-backend-ssl-mode=disabled"])
    with pytest.raises(pymysql.err.OperationalError) as info:
        proxy.connect("native", ssl_disabled=True)
    assert info.value.args[0] == 1045
    assert "--proxy-ssl-mode=required" in info.value.args[1]
    done = cli(proxy, "--skip-ssl")
    assert done.returncode == 1 and "connections without TLS are refused" in done.stderr, done.stderr
    done = cli(proxy, "--ssl", f"--ssl-ca={tls_certs.ca_cert}", "--ssl-verify-server-cert")
    assert (done.returncode, done.stdout) == (0, "native@%\n"), done.stderr
    with proxy.connect("native", ssl={"ca": str(tls_certs.ca_cert)}) as conn:
        assert whoami(conn) == "native@%"


def test_ssl_mode_disabled_offers_no_tls_even_with_a_certificate(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    proxy = start_proxy([mariadb.address], [*client_cert_args(tls_certs), "--proxy-ssl-mode=disabled"])
    done = cli(proxy, "--ssl", f"--ssl-ca={tls_certs.ca_cert}", "--ssl-verify-server-cert")
    assert done.returncode == 1 and "SSL" in done.stderr, done.stderr
    assert cli(proxy, "--skip-ssl").stdout == "native@%\n"


def test_client_certificates_are_verified_with_proxy_ssl_ca(
        start_proxy: StartProxy, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    proxy = start_proxy([mariadb.address], [
        *client_cert_args(tls_certs), f"--proxy-ssl-ca={tls_certs.ca_cert}",
        "--proxy-backend-ssl-mode=disabled"])
    with proxy.connect("native", ssl={"ca": str(tls_certs.ca_cert), "cert": str(tls_certs.client_cert),
                                      "key": str(tls_certs.client_key)}) as conn:
        assert whoami(conn) == "native@%"
    done = cli(proxy, "--ssl", f"--ssl-ca={tls_certs.ca_cert}", f"--ssl-cert={tls_certs.client_cert}",
               f"--ssl-key={tls_certs.client_key}")
    assert done.stdout == "native@%\n", done.stderr
    with pytest.raises(pymysql.err.OperationalError):
        proxy.connect("native", ssl={"ca": str(tls_certs.ca_cert)})  # no certificate
    proxy.wait_log("PEER_DID_NOT_RETURN_A_CERTIFICATE")


def test_min_version_and_cipher(start_proxy: StartProxy, mariadb: MariaDB,
                                tls_certs: TLSCerts) -> None:
    tls13 = start_proxy([mariadb.address], [
        *client_cert_args(tls_certs), "--proxy-ssl-min-version=TLSv1.3",
        "--proxy-backend-ssl-mode=disabled"])
    old = ssl.create_default_context(cafile=str(tls_certs.ca_cert))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(pymysql.err.OperationalError):
        tls13.connect("native", ssl=old)
    with tls13.connect("native", ssl={"ca": str(tls_certs.ca_cert)}) as conn:
        assert conn._sock.version() == "TLSv1.3"
    cipher = "ECDHE-RSA-AES128-GCM-SHA256"
    pinned = start_proxy([mariadb.address], [
        *client_cert_args(tls_certs), f"--proxy-ssl-cipher={cipher}",
        "--proxy-backend-ssl-mode=disabled"])
    with pinned.connect("native", ssl=old) as conn:
        assert conn._sock.cipher()[0] == cipher


@pytest.mark.parametrize(("args", "message"), [
    (["--proxy-ssl-mode=required"], "--proxy-ssl-mode=required needs a certificate"),
    (["--proxy-backend-ssl-verify=none", "--proxy-backend-ssl-ca=/etc/hostname"], "drop one"),
    (["--proxy-backend-ssl-mode=disabled", "--proxy-backend-ssl-ca=/etc/hostname"],
     "no backend leg uses TLS"),
    (["--proxy-ssl-cipher=NO-SUCH-CIPHER", "--proxy-ssl-cert={cert}", "--proxy-ssl-key={key}"],
     "--proxy-ssl-cipher: no cipher matches"),
    (["--proxy-ssl-ca=/nonexistent.pem", "--proxy-ssl-cert={cert}", "--proxy-ssl-key={key}"],
     "--proxy-ssl-ca: cannot read /nonexistent.pem"),
])
def test_bad_tls_options_stop_the_start(args: list[str], message: str, tls_certs: TLSCerts) -> None:
    args = [a.format(cert=tls_certs.proxy_cert, key=tls_certs.proxy_key) for a in args]
    with pytest.raises(ChassisStartError) as info:
        start_chassis(["--plugins=proxy", f"--proxy-address=127.0.0.1:{free_port()}", *args],
                      timeout=30)  # it fails at once; the limit is for a loaded machine
    assert message in str(info.value)
