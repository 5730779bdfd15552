"""TLS on the admin port (``--admin-ssl-*``, the same option family as ``--proxy-ssl-*``)."""

from __future__ import annotations

import ssl
import struct
import subprocess
from pathlib import Path

import pymysql
import pytest

from tests.admin.test_admin import PASSWORD, admin_args
from tests.proxy.rawclient import RawClient, tls_login_in_one_write
from tests.support.certs import TLSCerts
from tests.support.chassis_proc import ChassisProcess, ChassisStartError, start_chassis
from tests.support.mariadb import MariaDB, find_program

pytestmark = pytest.mark.timeout(60)


def start_admin(tmp_path: Path, mariadb: MariaDB, tls_certs: TLSCerts,
                *extra: str) -> tuple[ChassisProcess, int]:
    args, _, admin_port = admin_args(
        tmp_path, mariadb, f"--admin-ssl-cert={tls_certs.proxy_cert}",
        f"--admin-ssl-key={tls_certs.proxy_key}", *extra)
    return start_chassis(args), admin_port


def admin_tls(port: int, tls: dict[str, str] | ssl.SSLContext | None) -> pymysql.Connection:
    if tls is None:
        return pymysql.connect(host="127.0.0.1", port=port, user="admin", password=PASSWORD,
                               connect_timeout=5, ssl_disabled=True)
    return pymysql.connect(host="127.0.0.1", port=port, user="admin", password=PASSWORD,
                           connect_timeout=5, ssl=tls)


def admin_cli(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [find_program("mariadb"), "--no-defaults", "--host=127.0.0.1", f"--port={port}",
         "--protocol=TCP", "--user=admin", f"--password={PASSWORD}", "--batch", *args,
         "-e", "SELECT * FROM help"], capture_output=True, text=True, timeout=30)


def test_admin_port_offers_tls_with_a_certificate(tmp_path: Path, mariadb: MariaDB,
                                                  tls_certs: TLSCerts) -> None:
    chassis, port = start_admin(tmp_path, mariadb, tls_certs)
    with chassis:
        with admin_tls(port, {"ca": str(tls_certs.ca_cert)}) as conn, conn.cursor() as cur:
            assert conn._sock.version().startswith("TLSv1")
            cur.execute("SELECT * FROM backends")
            assert len(cur.fetchall()) == 2
        done = admin_cli(port, "--ssl", f"--ssl-ca={tls_certs.ca_cert}", "--ssl-verify-server-cert")
        assert done.returncode == 0 and "SELECT * FROM backends" in done.stdout, done.stderr
        with admin_tls(port, None) as conn:  # preferred: plaintext still logs in
            assert conn.open


def test_admin_ssl_mode_required_refuses_plaintext_logins(tmp_path: Path, mariadb: MariaDB,
                                                          tls_certs: TLSCerts) -> None:
    chassis, port = start_admin(tmp_path, mariadb, tls_certs, "--admin-ssl-mode=required")
    with chassis:
        with pytest.raises(pymysql.err.OperationalError) as info:
            admin_tls(port, None)
        assert info.value.args[0] == 1045
        assert "--admin-ssl-mode=required" in info.value.args[1]
        done = admin_cli(port, "--skip-ssl")
        assert done.returncode == 1 and "connections without TLS are refused" in done.stderr
        with admin_tls(port, {"ca": str(tls_certs.ca_cert)}) as conn:
            assert conn.open


def test_admin_client_certificates_min_version(tmp_path: Path, mariadb: MariaDB,
                                               tls_certs: TLSCerts) -> None:
    chassis, port = start_admin(tmp_path, mariadb, tls_certs, f"--admin-ssl-ca={tls_certs.ca_cert}",
                                "--admin-ssl-min-version=TLSv1.3")
    with chassis:
        with admin_tls(port, {"ca": str(tls_certs.ca_cert), "cert": str(tls_certs.client_cert),
                              "key": str(tls_certs.client_key)}) as conn:
            assert conn._sock.version() == "TLSv1.3"
        with pytest.raises(pymysql.err.OperationalError):
            admin_tls(port, {"ca": str(tls_certs.ca_cert)})  # no client certificate
        old = ssl.create_default_context(cafile=str(tls_certs.ca_cert))
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        old.load_cert_chain(str(tls_certs.client_cert), str(tls_certs.client_key))
        with pytest.raises(pymysql.err.OperationalError):
            admin_tls(port, old)


def test_admin_client_hello_in_the_same_write_as_the_ssl_request(
        tmp_path: Path, mariadb: MariaDB, tls_certs: TLSCerts) -> None:
    """The bytes behind the SSLRequest (already in the stream's buffers) reach TLS first."""
    chassis, port = start_admin(tmp_path, mariadb, tls_certs)
    ctx = ssl.create_default_context(cafile=str(tls_certs.ca_cert))
    with chassis, RawClient("127.0.0.1", port) as client:
        client.read_packet()
        reply = tls_login_in_one_write(client, ctx, "admin", 7)  # no password: refused, inside TLS
        assert reply[4] == 0xFF and struct.unpack("<H", reply[5:7])[0] == 1045, reply


def test_admin_ssl_options_are_checked_at_start(tmp_path: Path, mariadb: MariaDB) -> None:
    args, _, _ = admin_args(tmp_path, mariadb, "--admin-ssl-mode=required")
    with pytest.raises(ChassisStartError) as info:
        start_chassis(args, timeout=10)
    assert "--admin-ssl-mode=required needs a certificate" in str(info.value)
