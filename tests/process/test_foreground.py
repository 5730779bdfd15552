"""One worker in the foreground, no angel: start-up, stop, logging, limits."""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.process.conftest import EchoSetup
from tests.support.chassis_proc import ChassisProcess, start_chassis, wait_for
from tests.support.echo_client import ask, whoami

Factory = Callable[..., ChassisProcess]

LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d: \((error|critical|warning|message|info|debug)\) "
    r"\[(chassis|angel|worker(#\d+)?) \d+\] \S"
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_sigterm_or_sigint_stops_the_worker_with_exit_code_0(
        chassis_factory: Factory, echo: EchoSetup, signum: int) -> None:
    chassis = chassis_factory(echo.args())
    assert ask(echo.port, "hello") == "hello"
    assert whoami(echo.port)["pid"] == chassis.pid  # no angel: the process itself serves
    chassis.signal(signum)
    assert chassis.wait() == 0
    chassis.wait_message("STOPPING=1", timeout=2)
    log = echo.log.read_text()
    assert f"[worker {chassis.pid}] shutting down: received {signal.Signals(signum).name}" in log
    assert "(message) [worker" in log and "shutting down normally, exit code is: 0" in log
    assert "echo: shut down" in log  # chassis_shutdown ran


def test_every_log_line_has_a_timestamp_level_role_and_pid(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--log-level=debug"))
    chassis.stop()
    lines = echo.log.read_text().splitlines()
    assert len(lines) >= 4
    for line in lines:
        assert LINE.match(line), line


def test_verbose_shutdown_logs_the_exit_code_at_critical(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    quiet = chassis_factory(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                             "--log-level=critical"])
    assert quiet.stop() == 0
    assert "exit code is" not in quiet.stderr_text()  # message level is below critical
    loud = chassis_factory(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                            "--verbose-shutdown"])
    assert loud.stop() == 0
    assert re.search(r"\(critical\) \[worker \d+\] shutting down normally, exit code is: 0",
                     loud.stderr_text())


def test_a_plugin_asking_for_shutdown_ends_the_worker_with_0(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args())
    assert ask(echo.port, "exit") == "bye"
    assert chassis.wait() == 0
    assert "shutting down: echo: a client sent 'exit'" in echo.log.read_text()


def test_a_plugin_reads_what_is_offered_through_the_chassis(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis_factory(echo.args())
    assert ask(echo.port, "echoed") == "0"
    assert ask(echo.port, "hello") == "hello"
    assert ask(echo.port, "echoed") == "1"
    assert ask(echo.port, "offered echo.echoed") == "yes"
    assert ask(echo.port, "offered nobody.nothing") == "no"


def test_a_startup_failure_exits_3_with_the_plugins_message(echo: EchoSetup) -> None:
    chassis = start_chassis(echo.args("--echo-fail-startup"), wait_ready=False)
    try:
        assert chassis.wait() == 3
        # logs go to the file, and the terminal still sees the reason
        assert "echo: failing on purpose (--echo-fail-startup)" in chassis.stderr_text()
        assert "start-up failed: plugin 'echo'" in echo.log.read_text()
        assert "READY=1" not in chassis.messages
    finally:
        chassis.kill()


def test_an_unexpected_exception_in_serve_is_a_startup_failure(echo: EchoSetup) -> None:
    chassis = start_chassis(echo.args("--echo-fail-serve"), wait_ready=False)
    try:
        assert chassis.wait() == 3
        assert ("plugin 'echo' failed in chassis_serve: RuntimeError: echo: serve failing "
                "on purpose") in chassis.stderr_text()
        assert "Traceback" in echo.log.read_text()
    finally:
        chassis.kill()


def test_shutdown_timeout_cancels_a_stop_that_hangs(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--echo-stop-hang", "--shutdown-timeout=0.5"))
    started = time.monotonic()
    chassis.signal(signal.SIGTERM)
    assert chassis.wait(timeout=10) == 0
    assert 0.5 <= time.monotonic() - started < 5
    assert "plugin 'echo' did not finish stopping within --shutdown-timeout" in \
        echo.log.read_text()


def test_a_second_sigterm_does_not_wait_for_the_deadline(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--echo-stop-hang", "--shutdown-timeout=60"))
    chassis.signal(signal.SIGTERM)
    chassis.wait_for_log("hanging in chassis_stop on purpose")
    chassis.signal(signal.SIGTERM)
    assert chassis.wait(timeout=10) == 0
    assert "received SIGTERM again" in echo.log.read_text()


def test_sighup_reopens_the_log_file_after_it_was_renamed(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args())
    rotated = echo.log.with_name("chassis.log.1")
    echo.log.rename(rotated)
    chassis.signal(signal.SIGHUP)
    wait_for(lambda: echo.log.exists() and "re-opened log file after SIGHUP"
             in echo.log.read_text(), 5, "the new log file")
    assert f"[worker {chassis.pid}] received a SIGHUP, closing log file" in rotated.read_text()
    assert ask(echo.port, "still there") == "still there"
    assert chassis.proc.poll() is None


def test_umask_option_is_applied(chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis_factory(echo.args("--umask=077"))
    assert whoami(echo.port)["umask"] == 0o077


def test_max_open_files_sets_the_limit_of_the_worker(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis_factory(echo.args("--max-open-files=4321"))
    assert whoami(echo.port)["nofile"][0] == 4321


def test_max_open_files_beyond_what_the_kernel_allows_is_a_clear_error(echo: EchoSetup) -> None:
    too_many = int(Path("/proc/sys/fs/nr_open").read_text()) + 1
    chassis = start_chassis(echo.args(f"--max-open-files={too_many}"), wait_ready=False)
    try:
        assert chassis.wait() == 1
        err = chassis.stderr_text()
        assert f"--max-open-files={too_many}: cannot raise the open files limit" in err
        assert "ulimit -Hn" in err
    finally:
        chassis.kill()


def test_lua_path_and_cpath_are_exported_before_plugins_start(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis_factory(echo.args("--lua-path=/opt/lua/?.lua", "--lua-cpath=/opt/lua/?.so"))
    env = whoami(echo.port)["env"]
    assert env["LUA_PATH"] == "/opt/lua/?.lua"
    assert env["LUA_CPATH"] == "/opt/lua/?.so"
    assert env["NOTIFY_SOCKET"] is None  # only the main process talks to systemd


def test_backtrace_on_crash_dumps_python_tracebacks_to_the_log(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--log-backtrace-on-crash"))
    with contextlib.suppress(OSError):  # the connection dies with the worker
        assert ask(echo.port, "crash", timeout=5) == ""
    assert chassis.wait() == -signal.SIGSEGV
    log = echo.log.read_text()
    assert "Fatal Python error: Segmentation fault" in log
    assert "_segfault" in log  # the crashing frame is named


def test_log_use_syslog_sends_mysql_proxy_priorities(echo: EchoSetup) -> None:
    path = echo.dir / "syslog"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        server.settimeout(10)
        chassis = start_chassis(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                                 "--log-use-syslog", "--log-level=message"],
                                env={"CHASSIS_SYSLOG_SOCKET": str(path)})
        try:
            ready = b""
            while b"ready" not in ready:
                ready = server.recv(4096)
            assert chassis.stop() == 0
            # daemon facility (3), MySQL Proxy's mapping: message -> notice (5)
            assert ready.startswith(f"<29>chassis[{chassis.pid}]: (message) [worker]".encode())
        finally:
            chassis.kill()


def test_log_use_syslog_without_a_syslog_is_a_clear_error(echo: EchoSetup) -> None:
    missing = echo.dir / "no-syslog-here"
    chassis = start_chassis(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                             "--log-use-syslog"], env={"CHASSIS_SYSLOG_SOCKET": str(missing)},
                            wait_ready=False)
    try:
        assert chassis.wait() == 1
        assert f"--log-use-syslog: no syslog socket ({missing})" in chassis.stderr_text()
    finally:
        chassis.kill()


def test_sigterm_during_a_serve_that_hangs_stops_the_worker(echo: EchoSetup) -> None:
    chassis = start_chassis(echo.args("--echo-serve-hang"), wait_ready=False)
    try:
        chassis.wait_for_log("hanging in chassis_serve on purpose")
        chassis.signal(signal.SIGTERM)
        assert chassis.wait() == 0
        log = echo.log.read_text()
        assert "start-up interrupted: received SIGTERM" in log
        assert "echo: shut down" in log  # chassis_shutdown still ran
        assert "READY=1" not in chassis.messages
    finally:
        chassis.kill()
