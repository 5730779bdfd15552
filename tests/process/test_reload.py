"""Reload on SIGHUP in the chassis itself, with the echo plugin (no MySQL): what the
chassis reads again, what it keeps until a restart, and what it refuses whole."""

from __future__ import annotations

import os
import pwd
import signal
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.process.conftest import EchoSetup, echo_line, write_defaults
from tests.support.chassis_proc import ChassisProcess

APPLIED = "reload: applied in worker"
REFUSED = "reload refused, the running configuration stays"


def start(chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup,
          **options: str) -> tuple[ChassisProcess, Path]:
    cnf = echo.dir / "chassis.cnf"
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", **options)
    args = [f"--defaults-file={cnf}", f"--log-file={echo.log}"]
    return chassis_factory(args), cnf


@pytest.mark.parametrize("angel", [False, True], ids=["single", "angel-2-workers"])
def test_reload_applies_what_it_can_and_keeps_what_needs_a_restart(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup, angel: bool) -> None:
    base = {"keepalive": "true", "event_threads": "2"} if angel else {}
    workers = 2 if angel else 1
    chassis, cnf = start(chassis_factory, echo, echo_prefix="A:", **base)
    connected = socket.create_connection(("127.0.0.1", echo.port), timeout=10)
    lines = connected.makefile("rb")
    connected.sendall(b"one\n")
    assert lines.readline() == b"A:one\n"

    write_defaults(cnf, echo_address=f"127.0.0.1:{echo.port + 1}", echo_prefix="B:",
          event_threads="3", log_level="info", plugins="echo,proxy", **{
              k: v for k, v in base.items() if k != "event_threads"})
    chassis.signal(signal.SIGHUP)
    log = chassis.wait_for_log(APPLIED, count=workers)
    restart = [line for line in log.splitlines() if "needs a restart" in line]
    assert len(restart) == 1, restart
    for option in ("--echo-address", "--event-threads", "--plugins"):
        assert option in restart[0]
    assert "changing: --echo-prefix, --log-level" in log
    assert echo_line(echo.port) == b"B:hi"  # a new client
    connected.sendall(b"two\n")  # and the client connected before the reload
    assert lines.readline() == b"B:two\n"
    assert len(chassis.workers()) == workers
    connected.close()


def test_refused_reload_changes_nothing(chassis_factory: Callable[..., ChassisProcess],
                                        echo: EchoSetup) -> None:
    chassis, cnf = start(chassis_factory, echo, echo_prefix="A:")
    # refused by the plugin's chassis_check_reload: nothing else applies either
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="refuse", log_level="debug")
    chassis.signal(signal.SIGHUP)
    log = chassis.wait_for_log(REFUSED)
    assert "plugin 'echo': --echo-prefix=refuse: refused on purpose" in log.splitlines()[-1]
    # a file others may read is refused as at start-up
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="B:")
    cnf.chmod(0o644)
    chassis.signal(signal.SIGHUP)
    log = chassis.wait_for_log(REFUSED, count=2)
    assert str(cnf) in log.splitlines()[-1]
    # a key nobody knows
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="B:", echo_colour="red")
    chassis.signal(signal.SIGHUP)
    log = chassis.wait_for_log(REFUSED, count=3)
    assert "unknown key 'echo-colour'" in log.splitlines()[-1]
    assert APPLIED not in log
    assert echo_line(echo.port) == b"A:hi"


def test_same_configuration_changes_nothing(chassis_factory: Callable[..., ChassisProcess],
                                            echo: EchoSetup) -> None:
    chassis, _ = start(chassis_factory, echo, echo_prefix="A:")
    chassis.signal(signal.SIGHUP)
    log = chassis.wait_for_log("reload: no option to change")
    assert "re-opened log file after SIGHUP" in log
    assert APPLIED not in log
    assert echo_line(echo.port) == b"A:hi"


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


NOBODY = _nobody()
needs_root = pytest.mark.skipif(os.geteuid() != 0 or NOBODY is None,
                                reason="needs root and the user nobody")


@pytest.mark.root
@needs_root
def test_with_user_the_angel_reads_a_root_only_file_and_checks_as_the_workers(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup) -> None:
    assert NOBODY is not None
    chassis, cnf = start(chassis_factory, echo, echo_prefix="A:", user="nobody",
                         keepalive="true")
    assert os.stat(cnf).st_uid == 0 and cnf.stat().st_mode & 0o777 == 0o600
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="B:",
          user="nobody", keepalive="true")
    chassis.signal(signal.SIGHUP)
    log = chassis.wait_for_log(APPLIED)
    assert "[reload-check " in log
    assert f"echo: checking the reload as uid {NOBODY.pw_uid}" in log
    assert echo_line(echo.port) == b"B:hi"


@pytest.mark.root
@needs_root
def test_with_user_and_no_angel_a_root_only_file_cannot_be_reloaded(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup) -> None:
    chassis, _ = start(chassis_factory, echo, echo_prefix="A:", user="nobody")
    chassis.signal(signal.SIGHUP)
    log = chassis.wait_for_log(REFUSED)
    assert "cannot read it: [Errno 13] Permission denied" in log.splitlines()[-1]
    assert echo_line(echo.port) == b"A:hi"


def test_a_daemon_reloads_a_defaults_file_given_relative(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup) -> None:
    cnf = echo.dir / "chassis.cnf"
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="A:")
    chassis = chassis_factory(["--defaults-file=chassis.cnf", f"--log-file={echo.log}", "--daemon"],
                              cwd=echo.dir)
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="B:")
    chassis.signal(signal.SIGHUP)  # the daemon's working directory is / by now
    chassis.wait_for_log(APPLIED)
    assert echo_line(echo.port) == b"B:hi"
