"""The pid file: whose pid, when, how, locked, stale, removed."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Callable

import pytest

from tests.process.conftest import FAST_RESTART, EchoSetup
from tests.support.chassis_proc import ChassisProcess, children_of, start_chassis, wait_for
from tests.support.echo_client import whoami

Factory = Callable[..., ChassisProcess]


def test_the_worker_pid_is_written_when_ready_and_removed_on_clean_exit(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    chassis = chassis_factory(echo.args(f"--pid-file={pid_file}"))
    assert pid_file.read_text() == f"{chassis.pid}\n"
    assert whoami(echo.port)["pid"] == chassis.pid
    assert pid_file.stat().st_mode & 0o777 == 0o644
    assert not [p for p in echo.dir.iterdir() if p.name.endswith(".tmp")]
    assert chassis.stop() == 0
    assert not pid_file.exists()


def test_the_pid_file_is_locked_while_the_chassis_runs(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    chassis_factory(echo.args(f"--pid-file={pid_file}"))
    with open(pid_file) as f, pytest.raises(BlockingIOError):
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_with_an_angel_the_pid_file_holds_the_angels_pid_across_restarts(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    chassis = chassis_factory(echo.args("--keepalive", f"--pid-file={pid_file}"),
                              env=FAST_RESTART)
    assert pid_file.read_text() == f"{chassis.pid}\n"
    [worker] = children_of(chassis.pid)
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: children_of(chassis.pid) not in ([], [worker]), 10, "a new worker")
    assert pid_file.read_text() == f"{chassis.pid}\n"
    assert chassis.stop() == 0
    assert not pid_file.exists()


def test_a_stale_pid_file_is_replaced(chassis_factory: Factory, echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    # A crashed chassis' pid, now reused by a live process (this test): only the lock,
    # which nobody holds, tells that the file is stale.
    pid_file.write_text(f"{os.getpid()}\n")
    chassis = chassis_factory(echo.args(f"--pid-file={pid_file}"))
    assert pid_file.read_text() == f"{chassis.pid}\n"


def test_a_live_pid_file_stops_a_second_chassis_naming_the_first(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    first = chassis_factory(echo.args("--keepalive", f"--pid-file={pid_file}"))
    second = start_chassis(["--plugins=echo", "--echo-address=127.0.0.1:0",
                            f"--pid-file={pid_file}"], wait_ready=False)
    try:
        assert second.wait() == 1
        assert (f"pid file {pid_file} is locked by a running chassis (pid {first.pid})"
                in second.stderr_text())
    finally:
        second.kill()
    assert pid_file.read_text() == f"{first.pid}\n"
    assert whoami(echo.port)["ppid"] == first.pid


def test_a_failed_start_leaves_no_pid_file(echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    chassis = start_chassis(echo.args(f"--pid-file={pid_file}", "--echo-fail-startup"),
                            wait_ready=False)
    try:
        assert chassis.wait() == 3
        assert not pid_file.exists()
    finally:
        chassis.kill()
