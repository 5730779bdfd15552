"""``--daemon``: detached for good, and the launching command tells how start-up went."""

from __future__ import annotations

import os
import signal
import subprocess

from tests.process.conftest import EchoSetup
from tests.support.chassis_proc import (
    CHASSIS,
    children_of,
    is_alive,
    start_chassis,
    wait_for,
)
from tests.support.echo_client import ask, whoami


def test_daemon_detaches_and_the_launcher_returns_once_it_serves(echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    chassis = start_chassis(echo.args("--daemon", f"--pid-file={pid_file}"))
    try:
        assert chassis.proc.wait(10) == 0
        # the launcher has returned: the port answers at once, no retry
        me = whoami(echo.port)
        assert me["pid"] == chassis.pid != chassis.proc.pid
        assert me["tty_nr"] == 0  # no controlling terminal
        assert me["sid"] != os.getsid(0) and me["sid"] != me["pid"]  # new session, not leader
        assert me["cwd"] == "/"
        assert me["umask"] == 0o027
        assert me["stdio"] == ["/dev/null"] * 3
        assert pid_file.read_text() == f"{chassis.pid}\n"
        assert pid_file.stat().st_mode & 0o777 == 0o644
        assert chassis.stderr_text() == ""
        os.kill(chassis.pid, signal.SIGTERM)
        wait_for(lambda: not is_alive(chassis.pid), 10, "the daemon to exit")
        assert not pid_file.exists()
        assert "shutting down normally, exit code is: 0" in echo.log.read_text()
    finally:
        chassis.kill()


def test_relative_paths_are_resolved_before_the_daemon_changes_to_root(echo: EchoSetup) -> None:
    chassis = start_chassis(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                             "--daemon", "--pid-file=rel.pid", "--log-file=rel.log",
                             "--log-level=message", "--umask=022"], cwd=echo.dir)
    try:
        assert chassis.proc.wait(10) == 0
        assert (echo.dir / "rel.pid").read_text() == f"{chassis.pid}\n"
        assert "ready" in (echo.dir / "rel.log").read_text()
        assert whoami(echo.port)["umask"] == 0o022
    finally:
        chassis.stop()


def test_a_daemon_that_cannot_start_makes_the_launcher_fail_with_its_error(
        echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    result = subprocess.run(
        [str(CHASSIS), *echo.args("--daemon", "--keepalive", f"--pid-file={pid_file}",
                                  "--echo-fail-startup")],
        capture_output=True, text=True, timeout=30, start_new_session=True)
    assert result.returncode == 3
    assert "echo: failing on purpose (--echo-fail-startup)" in result.stderr
    assert not pid_file.exists()
    log = echo.log.read_text()
    assert "shutting down, exit code is: 3" in log


def test_keepalive_daemon_restarts_a_killed_worker_and_stops_cleanly(echo: EchoSetup) -> None:
    """The issue's "done means": --keepalive --daemon, kill -9 the worker, kill -TERM the angel."""
    pid_file = echo.dir / "c.pid"
    chassis = start_chassis(echo.args("--keepalive", "--daemon", f"--pid-file={pid_file}"))
    try:
        assert chassis.proc.wait(10) == 0
        angel = int(pid_file.read_text())
        assert angel == chassis.pid
        [worker] = children_of(angel)
        os.kill(worker, signal.SIGKILL)
        replacement = wait_for(lambda: [p for p in children_of(angel) if p != worker], 3,
                               "a new worker within the 1 s backoff")[0]
        chassis.wait_for_log(f"worker 1 (pid={replacement}) ready", 5)
        assert ask(echo.port, "again") == "again"
        assert int(pid_file.read_text()) == angel
        os.kill(angel, signal.SIGTERM)
        wait_for(lambda: not is_alive(angel) and not is_alive(replacement), 10, "both to exit")
        assert not pid_file.exists()
        log = echo.log.read_text()
        assert f"worker 1 (pid={worker}) died on signal=9" in log
        assert f"worker 1 (pid={replacement}) exited normally with exit-code = 0" in log
        assert f"[angel {angel}] shutting down normally, exit code is: 0" in log
    finally:
        chassis.kill()


def test_daemon_without_notify_socket_still_reports_through_the_pipe(echo: EchoSetup) -> None:
    pid_file = echo.dir / "c.pid"
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    result = subprocess.run([str(CHASSIS), *echo.args("--daemon", f"--pid-file={pid_file}")],
                            env=env, capture_output=True, text=True, timeout=30)
    pid = int(pid_file.read_text()) if pid_file.exists() else 0
    try:
        assert result.returncode == 0, result.stderr
        assert whoami(echo.port)["pid"] == pid  # serving as soon as the launcher returned
    finally:
        if pid:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
