"""The admin port's defences: the listen backlog, the address, the login timeout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.support.burst import burst, read_greetings
from tests.support.chassis_proc import ChassisProcess, chassis_factory, free_port

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
