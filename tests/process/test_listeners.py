"""Listening sockets: only our own workers share a port; a second chassis on it fails."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.process.conftest import EchoSetup
from tests.support.chassis_proc import ChassisProcess, free_port, start_chassis
from tests.support.echo_client import ask, whoami

Factory = Callable[..., ChassisProcess]


def _fails_with_exit_3(args: list[str]) -> str:
    """Start a chassis that must not start; returns what it printed."""
    second = start_chassis(args, wait_ready=False)
    try:
        assert second.wait(timeout=10) == 3, second.output()
    finally:
        second.kill()
    return second.stderr_text()


def test_second_chassis_on_the_echo_port_of_a_running_one_fails_with_exit_3(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    first = chassis_factory(echo.args("--event-threads=2", "--keepalive"))
    pids = {whoami(echo.port)["pid"] for _ in range(20)}
    assert pids <= set(first.workers())  # the two workers share the port
    stderr = _fails_with_exit_3(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}"])
    assert f"cannot listen on 127.0.0.1:{echo.port}: address in use by another process" \
        in stderr, stderr
    assert "--echo-address" in stderr
    # the first one still owns the port alone
    assert {whoami(echo.port)["pid"] for _ in range(20)} <= set(first.workers())
    assert ask(echo.port, "still here") == "still here"


@pytest.mark.parametrize("taken", ["proxy", "admin"])
def test_second_chassis_on_a_held_proxy_or_admin_port_fails_with_exit_3(
        chassis_factory: Factory, tmp_path: Path, taken: str) -> None:
    pw = tmp_path / "admin.pw"
    pw.write_text("pw\n")
    pw.chmod(0o600)

    def args(proxy_port: int, admin_port: int) -> list[str]:
        return ["--plugins=proxy,admin", f"--proxy-address=127.0.0.1:{proxy_port}",
                "--proxy-backend-addresses=127.0.0.1:1", f"--admin-address=127.0.0.1:{admin_port}",
                "--admin-username=admin", f"--admin-password-file={pw}"]

    proxy_port, admin_port = free_port(), free_port()
    first = chassis_factory([*args(proxy_port, admin_port), "--event-threads=2"])
    if taken == "proxy":
        stderr = _fails_with_exit_3(args(proxy_port, free_port()))
        assert f"cannot listen on 127.0.0.1:{proxy_port}: address in use by another process" \
            in stderr and "--proxy-address" in stderr, stderr
    else:
        stderr = _fails_with_exit_3(args(free_port(), admin_port))
        assert f"cannot listen on 127.0.0.1:{admin_port}: address in use by another process" \
            in stderr and "--admin-address" in stderr, stderr
    assert first.proc.poll() is None


def test_two_listeners_of_one_chassis_on_one_address_fail_with_exit_3(tmp_path: Path) -> None:
    """SO_REUSEPORT would let the proxy and the admin console share a port, each getting
    some of the clients: the second one is refused at start-up instead."""
    pw = tmp_path / "admin.pw"
    pw.write_text("pw\n")
    pw.chmod(0o600)
    port = free_port()
    stderr = _fails_with_exit_3([
        "--plugins=proxy,admin", f"--proxy-address=127.0.0.1:{port}",
        "--proxy-backend-addresses=127.0.0.1:1", f"--admin-address=127.0.0.1:{port}",
        "--admin-username=admin", f"--admin-password-file={pw}"])
    # whichever plugin binds second is refused, naming the other option
    assert re.search(rf"cannot listen on 127.0.0.1:{port} for --(admin|proxy)-address: "
                     r"--(proxy|admin)-address listens there already in this chassis", stderr), stderr
