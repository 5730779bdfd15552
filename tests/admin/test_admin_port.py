"""The admin port's defences: the listen backlog, the address, the login timeout."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
import pytest

from chassis import portowners
from tests.support.burst import burst, read_greetings
from tests.support.chassis_proc import CHASSIS, ChassisProcess, chassis_factory, free_port

__all__ = ["chassis_factory"]

Factory = Callable[..., ChassisProcess]


def admin_only(tmp_path: Path, port: int, *extra: str) -> list[str]:
    pw = tmp_path / "admin.pw"
    pw.write_text("pw\n")
    pw.chmod(0o600)
    return ["--plugins=admin", f"--admin-address=127.0.0.1:{port}", "--admin-username=admin",
            f"--admin-password-file={pw}", f"--log-file={tmp_path / 'chassis.log'}",
            "--log-level=message", *extra]


def test_a_burst_of_400_admin_clients_all_get_a_greeting(
        chassis_factory: Factory, tmp_path: Path) -> None:
    port = free_port()
    chassis = chassis_factory(admin_only(tmp_path, port))
    with burst(chassis.pid, port, 400) as socks:
        greetings = read_greetings(socks, timeout=60)
    assert all(len(data) >= 5 and data[4] == 10 for data in greetings.values())


def test_a_client_that_does_not_log_in_is_cut_after_the_login_timeout(
        chassis_factory: Factory, tmp_path: Path) -> None:
    port = free_port()
    chassis = chassis_factory(admin_only(tmp_path, port, "--admin-login-timeout=0.5"))
    logged_in = pymysql.connect(host="127.0.0.1", port=port, user="admin", password="pw",
                                ssl_disabled=True)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        started = time.monotonic()
        data = b""
        while chunk := idle.recv(65536):  # greeting, then an ERR, then the end
            data += chunk
        assert time.monotonic() - started < 8
    assert b"--admin-login-timeout" in data and (1159).to_bytes(2, "little") in data
    chassis.wait_for_log("no login within 0.5 s (--admin-login-timeout); closing it")
    with logged_in.cursor() as cur:  # a logged-in client is not cut
        cur.execute("SELECT * FROM help")
        assert cur.fetchall()
    logged_in.close()


def test_the_admin_port_listens_on_127_0_0_1_by_default(
        chassis_factory: Factory, tmp_path: Path) -> None:
    help_text = subprocess.run([str(CHASSIS), "--plugins=admin", "--help"], check=True,
                               capture_output=True, text=True).stdout
    assert "127.0.0.1:4041" in help_text
    if portowners.listeners(4041):
        pytest.skip("port 4041 is in use here")
    args = [a for a in admin_only(tmp_path, 4041) if not a.startswith("--admin-address")]
    chassis = chassis_factory(args)
    listening = [str(e.address.ipv4_mapped or e.address) for e in portowners.listeners(4041)]
    assert listening == ["127.0.0.1"], listening
    chassis.wait_for_log("admin listening on 127.0.0.1:4041")
