"""The angel's watchdog: a worker whose event loop is stuck is noticed, dumped and restarted."""

from __future__ import annotations

import socket
from collections.abc import Callable

from tests.process.conftest import FAST_RESTART, EchoSetup
from tests.support.chassis_proc import ChassisProcess, wait_for
from tests.support.echo_client import ask, whoami

Factory = Callable[..., ChassisProcess]
HUNG = "is hung: its event loop has not run for"


def _serving_pid(port: int) -> int | None:
    """The pid of the worker that answers, or None while nobody does (between workers)."""
    try:
        return int(whoami(port)["pid"])
    except (OSError, ValueError):
        return None


def _block(port: int) -> None:
    """Send ``block``: the worker that reads it never answers again."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"block\n")


def test_a_worker_whose_loop_is_stuck_is_dumped_killed_and_restarted(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive", "--watchdog-timeout=1",
                                        "--log-backtrace-on-crash"), env=FAST_RESTART)
    hung = whoami(echo.port)["pid"]
    _block(echo.port)
    log = chassis.wait_for_log(f"worker 1 (pid={hung}) {HUNG}", 15)
    assert "dumping its tracebacks, killing and restarting it" in log
    log = chassis.wait_for_log(f"worker 1 (pid={hung}) died on signal=9", 10)
    assert 'File "' in log and "_block_the_loop" in log  # faulthandler's dump of the stuck stack
    wait_for(lambda: _serving_pid(echo.port) not in (None, hung), 10, "a new worker to answer")
    assert _serving_pid(echo.port) in chassis.workers()
    assert ask(echo.port, "alive") == "alive"
    assert chassis.log_text().count(HUNG) == 1  # one line says so


def test_without_backtraces_the_hung_worker_is_killed_at_once(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive", "--watchdog-timeout=1"), env=FAST_RESTART)
    hung = whoami(echo.port)["pid"]
    _block(echo.port)
    log = chassis.wait_for_log(f"worker 1 (pid={hung}) died on signal=9", 15)
    assert f"worker 1 (pid={hung}) {HUNG}" in log and "killing and restarting it" in log
    wait_for(lambda: _serving_pid(echo.port) not in (None, hung), 10, "a new worker to answer")


def test_a_busy_but_healthy_worker_is_left_alone(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive", "--watchdog-timeout=0.5"))
    pid = whoami(echo.port)["pid"]
    # many heartbeat intervals pass while the worker serves
    for i in range(300):
        assert ask(echo.port, f"line {i}") == f"line {i}"
    assert whoami(echo.port)["pid"] == pid
    assert HUNG not in chassis.log_text()
