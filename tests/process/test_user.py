"""``--user``: started as root with supplementary groups, the worker keeps none of root."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.process.conftest import EchoSetup
from tests.support.chassis_proc import (
    ChassisProcess,
    children_of,
    start_chassis,
    wait_for,
)
from tests.support.echo_client import ask, whoami

Factory = Callable[..., ChassisProcess]


def _nobody() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        return None


NOBODY = _nobody()
pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(NOBODY is None, reason="needs the user nobody"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]

#: Root with supplementary groups adm and sudo: a drop that kept them would show.
AS_ROOT_WITH_GROUPS = ["setpriv", "--groups", "4,27", "--"]
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def status_field(pid: int, name: str) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return value.split()
    raise KeyError(name)


def test_the_worker_runs_as_nobody_with_nothing_left_of_root(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    assert NOBODY is not None
    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    chassis = chassis_factory(echo.args("--user=nobody", "--keepalive"),
                              prefix=AS_ROOT_WITH_GROUPS)
    # the angel kept root and the groups it was started with: the test can fail
    assert status_field(chassis.pid, "Uid")[0] == "0"
    assert status_field(chassis.pid, "Groups") == ["4", "27"]
    me = whoami(echo.port)
    assert me["ppid"] == chassis.pid
    assert me["resuid"] == [uid] * 3
    assert me["resgid"] == [gid] * 3
    assert sorted(me["groups"]) == sorted(set(os.getgrouplist("nobody", gid)))
    assert "4" not in me["status"]["Groups"] and "27" not in me["status"]["Groups"]
    assert "0" not in me["status"]["Groups"]
    assert me["setuid0_succeeded"] is False
    assert me["status"]["NoNewPrivs"] == ["1"]
    assert int(me["status"]["CapEff"][0], 16) == 0
    assert me["pdeathsig"] == signal.SIGTERM  # set again after the drop cleared it
    assert echo.log.stat().st_uid == uid
    assert "now running as user: nobody" in echo.log.read_text()


def test_without_an_angel_the_process_itself_drops(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    assert NOBODY is not None
    chassis = chassis_factory(echo.args("--user=nobody"), prefix=AS_ROOT_WITH_GROUPS)
    me = whoami(echo.port)
    assert me["pid"] == chassis.pid
    assert me["resuid"] == [NOBODY.pw_uid] * 3
    assert "27" not in me["status"]["Groups"]
    assert me["setuid0_succeeded"] is False
    assert chassis.stop() == 0


def test_with_a_pid_file_an_angel_keeps_root_to_write_and_remove_it(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    assert NOBODY is not None
    pid_file = echo.dir / "c.pid"
    chassis = chassis_factory(echo.args("--user=nobody", f"--pid-file={pid_file}"),
                              prefix=AS_ROOT_WITH_GROUPS)
    [worker] = children_of(chassis.pid)
    assert pid_file.read_text() == f"{chassis.pid}\n"
    assert pid_file.stat().st_uid == NOBODY.pw_uid
    assert whoami(echo.port)["pid"] == worker
    assert chassis.stop() == 0
    assert not pid_file.exists()


def test_sighup_after_rotation_works_for_a_worker_that_dropped_root(
        chassis_factory: Factory, echo: EchoSetup) -> None:
    assert NOBODY is not None
    chassis = chassis_factory(echo.args("--user=nobody", "--keepalive"))
    [worker] = children_of(chassis.pid)
    assert os.stat(echo.dir).st_uid == 0  # nobody could not create a file there itself
    echo.log.rename(echo.log.with_name("chassis.log.1"))
    os.kill(chassis.pid, signal.SIGHUP)
    wait_for(lambda: echo.log.exists() and f"[worker {worker}] re-opened log file after SIGHUP"
             in echo.log.read_text(), 5, "the worker to reopen the new log file")
    assert echo.log.stat().st_uid == NOBODY.pw_uid
    assert ask(echo.port, "rotated") == "rotated"


def test_user_needs_root(echo: EchoSetup) -> None:
    chassis = start_chassis(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                             "--user=nobody"], prefix=AS_NOBODY, wait_ready=False)
    try:
        assert chassis.wait() == 2
        assert "--user=nobody: can only switch user when started as root" in \
            chassis.stderr_text()
    finally:
        chassis.kill()


def test_an_unknown_user_is_an_error(echo: EchoSetup) -> None:
    chassis = start_chassis(["--plugins=echo", f"--echo-address=127.0.0.1:{echo.port}",
                             "--user=no-such-user-here"], wait_ready=False)
    try:
        assert chassis.wait() == 2
        assert "--user=no-such-user-here: no such user" in chassis.stderr_text()
    finally:
        chassis.kill()
