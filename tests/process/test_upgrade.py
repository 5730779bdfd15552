"""Upgrade on SIGUSR2 in the chassis itself, with the echo plugin (no MySQL): the new
chassis takes the listening socket and the pid file, the old one leaves; a new chassis
that cannot start leaves the old one serving; systemd socket activation.

The proxy's hand-over of connections is tested in tests/proxy/test_upgrade.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.process.conftest import EchoSetup, echo_line, write_defaults
from tests.support.chassis_proc import (
    ChassisProcess,
    free_port,
    is_alive,
    start_chassis,
    wait_for,
)
from tests.support.echo_client import whoami

READY = "upgrade: new chassis pid"
FAILED = "upgrade failed, the running chassis stays"


def pid_in(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def listening_inodes(port: int) -> set[int]:
    """Socket inodes listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
                found.add(int(fields[9]))
    return found


MODES = {
    "single": {},
    "keepalive": {"keepalive": "true"},
    "keepalive-2-workers": {"keepalive": "true", "event_threads": "2"},
}


@pytest.mark.parametrize("mode", list(MODES))
def test_sigusr2_starts_a_new_chassis_that_takes_the_listener_and_the_pid_file(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup, mode: str) -> None:
    cnf = echo.dir / "chassis.cnf"
    pidfile = echo.dir / "chassis.pid"
    base = MODES[mode]
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="A:", **base)
    chassis = chassis_factory([f"--defaults-file={cnf}", f"--log-file={echo.log}",
                               f"--pid-file={pidfile}"])
    old = chassis.pid
    assert pid_in(pidfile) == old
    assert echo_line(echo.port) == b"A:hi"
    sockets = listening_inodes(echo.port)
    old_workers = set(chassis.workers())

    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="B:", **base)
    chassis.signal(signal.SIGUSR2)
    log = chassis.wait_for_log(READY, timeout=30)
    new = wait_for(lambda: (p := pid_in(pidfile)) and p != old and p, 30, "the new pid file")
    wait_for(lambda: not is_alive(old), 30, f"the old chassis (pid {old}) to exit")
    for pid in old_workers:
        wait_for(lambda pid=pid: not is_alive(pid), 10, f"old worker {pid} to exit")
    assert is_alive(new)
    assert not (echo.dir / "chassis.pid.oldbin").exists()
    assert pid_in(pidfile) == new  # the old one did not remove the new one's file
    # the new code read the defaults-file again, and serves on the same sockets
    assert echo_line(echo.port) == b"B:hi"
    served_by = whoami(echo.port)
    assert served_by["pid"] == new or served_by["ppid"] == new
    assert listening_inodes(echo.port) == sockets
    log = chassis.log_text()
    assert f"taking over from pid {old}" in log
    assert f"upgrade: new chassis pid {new} ready, handing over 1 connections, draining 0" in log
    # what the echo plugin handed over (chassis_handover_out/_in): its count of lines
    assert "echo: 1 echoed line(s) handed over" in log
    assert "STOPPING=1" not in chassis.messages  # systemd follows the new chassis instead
    os.kill(new, signal.SIGTERM)
    wait_for(lambda: not is_alive(new), 30, "the new chassis to stop")
    assert not pidfile.exists()


def test_a_second_upgrade_works_like_the_first(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup) -> None:
    pidfile = echo.dir / "chassis.pid"
    chassis = chassis_factory(echo.args(f"--pid-file={pidfile}", "--keepalive"))
    first = chassis.pid
    chassis.signal(signal.SIGUSR2)
    second = wait_for(lambda: (p := pid_in(pidfile)) and p != first and p, 30, "upgrade 1")
    wait_for(lambda: not is_alive(first), 30, "the first chassis to exit")
    os.kill(second, signal.SIGUSR2)
    third = wait_for(lambda: (p := pid_in(pidfile)) and p not in (first, second) and p, 30,
                     "upgrade 2")
    wait_for(lambda: not is_alive(second), 30, "the second chassis to exit")
    assert echo_line(echo.port) == b"hi"
    os.kill(third, signal.SIGTERM)
    wait_for(lambda: not is_alive(third), 30, "the third chassis to stop")


@pytest.mark.parametrize("angel", [False, True], ids=["single", "keepalive"])
def test_a_new_chassis_that_fails_leaves_the_old_one_serving(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup, angel: bool) -> None:
    cnf = echo.dir / "chassis.cnf"
    pidfile = echo.dir / "chassis.pid"
    base = {"keepalive": "true"} if angel else {}
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", **base)
    chassis = chassis_factory([f"--defaults-file={cnf}", f"--log-file={echo.log}",
                               f"--pid-file={pidfile}"])
    old = chassis.pid
    cnf.write_text("[mysql-proxy]\nno-such-option=1\n")
    chassis.signal(signal.SIGUSR2)
    log = chassis.wait_for_log(FAILED, timeout=30)
    line = next(line for line in log.splitlines() if FAILED in line)
    assert "no-such-option" in line
    wait_for(lambda: pid_in(pidfile) == old, 30, "the pid file to be back")
    assert not (echo.dir / "chassis.pid.oldbin").exists()
    assert echo_line(echo.port) == b"hi"
    assert whoami(echo.port)["pid"] in [old, *chassis.workers()]
    # the failed one was reaped, and a fixed file upgrades
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_prefix="C:", **base)
    chassis.signal(signal.SIGUSR2)
    wait_for(lambda: (p := pid_in(pidfile)) and p != old, 30, "the new pid file")
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit")
    assert echo_line(echo.port) == b"C:hi"
    new = pid_in(pidfile)
    assert new is not None
    os.kill(new, signal.SIGTERM)
    wait_for(lambda: not is_alive(new), 30, "the new chassis to stop")


def test_a_new_chassis_not_ready_in_time_is_stopped(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup) -> None:
    cnf = echo.dir / "chassis.cnf"
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}")
    chassis = chassis_factory([f"--defaults-file={cnf}", f"--log-file={echo.log}"],
                              env={"CHASSIS_UPGRADE_TIMEOUT": "2"})
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_serve_hang="true")
    chassis.signal(signal.SIGUSR2)
    log = chassis.wait_for_log(FAILED, timeout=30)
    assert "not ready within 2 s" in log
    hung = int(log.split("upgrade: started a new chassis (pid=")[1].split(")")[0])
    wait_for(lambda: not is_alive(hung), 30, "the hung new chassis to be stopped")
    assert is_alive(chassis.pid)
    assert echo_line(echo.port) == b"hi"


@pytest.mark.parametrize("workers", [1, 2])
def test_systemd_socket_activation_the_chassis_takes_the_socket(
        echo: EchoSetup, workers: int) -> None:
    """systemd-socket-activate binds, waits for a first client, then execs chassis with
    LISTEN_FDS/LISTEN_PID: the client that came first is served, on that very socket."""
    tool = "/usr/bin/systemd-socket-activate"
    chassis = start_chassis(
        echo.args("--log-level=info", f"--event-threads={workers}"),
        prefix=[tool, "-l", f"127.0.0.1:{echo.port}", "-E", "NOTIFY_SOCKET",
                "--fdname=echo"], wait_ready=False)
    try:
        wait_for(lambda: listening_inodes(echo.port), 15, "the tool to listen")
        sockets = listening_inodes(echo.port)
        first = socket.create_connection(("127.0.0.1", echo.port), timeout=30)
        first.sendall(b"early\n")
        chassis.wait_ready(30)
        assert first.makefile("rb").readline() == b"early\n"
        first.close()
        assert listening_inodes(echo.port) == sockets  # not bound again
        assert "inherited 1 listening socket(s)" in chassis.log_text()
        assert echo_line(echo.port) == b"hi"
    finally:
        chassis.stop()
    assert chassis.proc.returncode == 0, chassis.output()


def test_listen_fds_for_another_process_are_ignored(echo: EchoSetup) -> None:
    """LISTEN_PID names the parent: the variables were not for us, nothing is adopted."""
    env = {"LISTEN_FDS": "1", "LISTEN_PID": str(os.getpid())}
    with start_chassis(echo.args("--log-level=info"), env=env) as chassis:
        assert echo_line(echo.port) == b"hi"
        assert "inherited" not in chassis.log_text()


def test_the_module_runs_the_same_command_line(tmp_path: Path) -> None:
    """What the new chassis is started with: this interpreter and its own arguments."""
    code = "from chassis.upgrade import command_line; print(command_line())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str([sys.executable, "-c", code])


def test_systemd_hears_the_new_main_pid(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup) -> None:
    chassis = chassis_factory(echo.args("--keepalive"))
    old = chassis.pid
    chassis.signal(signal.SIGUSR2)
    chassis.wait_for_log(READY, timeout=30)
    new = int(chassis.log_text().split(READY)[1].split()[0])
    chassis.wait_message(f"MAINPID={new}", timeout=30)  # from the old one, and the new one
    assert new != old
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit")
    assert "STOPPING=1" not in chassis.messages
    os.kill(new, signal.SIGTERM)
    wait_for(lambda: not is_alive(new), 30, "the new chassis to stop")


def test_a_daemon_is_upgraded_in_place(echo: EchoSetup) -> None:
    """Relative paths resolve where the first one started; the new one does not detach
    again and runs in / like a daemon."""
    chassis = start_chassis(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                             "--daemon", "--pid-file=rel.pid", "--log-file=rel.log"],
                            cwd=echo.dir)
    pidfile = echo.dir / "rel.pid"
    try:
        old = pid_in(pidfile)
        assert old is not None
        os.kill(old, signal.SIGUSR2)
        new = wait_for(lambda: (p := pid_in(pidfile)) and p != old and p, 30, "the new pid file")
        wait_for(lambda: not is_alive(old), 30, "the old daemon to exit")
        me = whoami(echo.port)
        assert me["pid"] == new
        assert me["cwd"] == "/"
        assert me["sid"] == os.getsid(new) and me["sid"] != new  # not a session leader
        assert f"taking over from pid {old}" in (echo.dir / "rel.log").read_text()
        os.kill(new, signal.SIGTERM)
        wait_for(lambda: not is_alive(new), 30, "the new daemon to stop")
        assert not pidfile.exists()
    finally:
        chassis.kill()


def _user_may_run_python(uid: int, gid: int) -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os._exit(0 if os.access(sys.executable, os.X_OK) else 1)
        finally:
            os._exit(2)
    return os.waitpid(pid, 0)[1] == 0


def test_a_single_process_running_as_its_user_is_upgraded(echo: EchoSetup) -> None:
    """No angel with --user: the new chassis starts as that user and stays it; where the
    user may not run the interpreter, the old one says so and stays."""
    if os.geteuid() != 0:
        pytest.skip("--user needs root")
    echo.log.touch()
    with start_chassis(echo.args("--user=nobody")) as chassis:
        old = chassis.pid
        me = whoami(echo.port)
        nobody = me["resuid"]
        chassis.signal(signal.SIGUSR2)
        if not _user_may_run_python(nobody[0], me["resgid"][0]):
            log = chassis.wait_for_log(FAILED, timeout=30)
            assert f"cannot run {sys.executable} as uid {nobody[0]}: Permission denied" in log
            assert whoami(echo.port)["pid"] == old
            return
        log = chassis.wait_for_log(READY, timeout=30)
        new = int(log.split(READY)[1].split()[0])
        wait_for(lambda: not is_alive(old), 30, "the old chassis to exit")
        me = whoami(echo.port)
        assert me["pid"] == new
        assert me["resuid"] == nobody and nobody[0] != 0
        os.kill(new, signal.SIGTERM)
        wait_for(lambda: not is_alive(new), 30, "the new chassis to stop")


def upgrade_to_a_hanging_chassis(chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup,
                                 angel: bool) -> tuple[ChassisProcess, int]:
    """A chassis (with the angel or not) sent SIGUSR2 once its configuration makes the new
    chassis hang before it is ready: the old one, and the new one's pid."""
    cnf = echo.dir / "chassis.cnf"
    base = {"keepalive": "true"} if angel else {}
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", **base)
    chassis = chassis_factory([f"--defaults-file={cnf}", f"--log-file={echo.log}"])
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", echo_serve_hang="true",
                   **base)
    chassis.signal(signal.SIGUSR2)
    log = chassis.wait_for_log("echo: hanging in chassis_serve on purpose", timeout=30)
    return chassis, int(log.split("upgrade: started a new chassis (pid=")[1].split(")")[0])


@pytest.mark.parametrize("angel", [False, True], ids=["single", "keepalive"])
def test_a_stop_while_the_new_chassis_starts_stops_both(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup, angel: bool) -> None:
    chassis, hung = upgrade_to_a_hanging_chassis(chassis_factory, echo, angel)
    chassis.signal(signal.SIGTERM)
    chassis.wait_for_log(f"upgrade abandoned: this chassis is stopping, so is the new one "
                         f"(pid={hung})", timeout=30)
    wait_for(lambda: not is_alive(chassis.pid), 30, "the old chassis to stop")
    wait_for(lambda: not is_alive(hung), 30, "the new chassis to stop")


@pytest.mark.parametrize("angel", [False, True], ids=["single", "keepalive"])
def test_a_second_sigusr2_while_the_new_chassis_starts_is_ignored_with_one_line(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup, angel: bool) -> None:
    chassis, hung = upgrade_to_a_hanging_chassis(chassis_factory, echo, angel)
    chassis.signal(signal.SIGUSR2)
    ignored = f"upgrade: received SIGUSR2 while the new chassis (pid={hung}) starts; ignored"
    log = chassis.wait_for_log(ignored, timeout=30)
    assert log.count("upgrade: received SIGUSR2, starting a new chassis") == 1
    assert log.count("upgrade: started a new chassis (pid=") == 1
    assert echo_line(echo.port) == b"hi"  # the old one still serves
    chassis.signal(signal.SIGTERM)
    wait_for(lambda: not is_alive(chassis.pid), 30, "the old chassis to stop")
    wait_for(lambda: not is_alive(hung), 30, "the new chassis to stop")


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_an_upgrade_may_change_the_number_of_workers(
        chassis_factory: Callable[..., ChassisProcess], echo: EchoSetup, before: int,
        after: int) -> None:
    """Fewer workers: the surplus inherited listeners are closed; more: they share one."""
    cnf = echo.dir / "chassis.cnf"
    pidfile = echo.dir / "chassis.pid"
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", keepalive="true",
          event_threads=str(before))
    chassis = chassis_factory([f"--defaults-file={cnf}", f"--log-file={echo.log}",
                               f"--pid-file={pidfile}"])
    old = chassis.pid
    sockets = listening_inodes(echo.port)
    assert len(sockets) == before
    write_defaults(cnf, plugins="echo", echo_address=f"127.0.0.1:{echo.port}", keepalive="true",
          event_threads=str(after))
    chassis.signal(signal.SIGUSR2)
    new = wait_for(lambda: (p := pid_in(pidfile)) and p != old and p, 30, "the new pid file")
    wait_for(lambda: not is_alive(old), 30, "the old chassis to exit")
    now = listening_inodes(echo.port)
    assert now <= sockets and len(now) == min(before, after)
    served = {whoami(echo.port)["pid"] for _ in range(20)}
    assert all(pid != old and is_alive(pid) for pid in served)
    os.kill(new, signal.SIGTERM)
    wait_for(lambda: not is_alive(new), 30, "the new chassis to stop")


@pytest.mark.parametrize("angel", [False, True], ids=["single", "keepalive"])
def test_a_passed_socket_the_configuration_does_not_use_is_closed(
        echo: EchoSetup, angel: bool) -> None:
    """Clients of an address nobody serves any more are refused, not left waiting."""
    unused = free_port()
    chassis = start_chassis(
        echo.args(*(["--keepalive"] if angel else [])),
        prefix=["/usr/bin/systemd-socket-activate", "-l", f"127.0.0.1:{echo.port}",
                "-l", f"127.0.0.1:{unused}", "-E", "NOTIFY_SOCKET"], wait_ready=False)
    try:
        wait_for(lambda: listening_inodes(unused), 15, "the tool to listen")
        first = socket.create_connection(("127.0.0.1", echo.port), timeout=30)
        chassis.wait_ready(30)
        first.close()
        assert echo_line(echo.port) == b"hi"
        assert not listening_inodes(unused)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", unused), timeout=10)
    finally:
        chassis.stop()
