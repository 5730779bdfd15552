"""Start a real ``chassis`` process in a test and know when it is ready, without sleeping.

Each chassis runs in its own session with ``NOTIFY_SOCKET`` pointing at a datagram
socket owned by the test: ``READY=1`` (sent by the main process once every worker
serves) is the readiness signal, ``STOPPING=1`` the start of a stop. Teardown kills
whole process groups, including a ``--daemon``'s (found through ``MAINPID``).

Usage from any test suite::

    # tests/conftest.py puts the repository root on sys.path
    from tests.support.chassis_proc import start_chassis

    with start_chassis(["--plugins=proxy", "--proxy-address=127.0.0.1:0"]) as chassis:
        ...  # chassis.main_pid, chassis.log_text(), chassis.signal(signal.SIGHUP)
    # stopped with SIGTERM; chassis.returncode is its exit code

or the ``chassis_factory`` fixture (defined here, imported into a conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.support.mariadb import free_port as free_port  # re-exported: the tests import it from here

CHASSIS = Path(sys.executable).parent / "chassis"

T = TypeVar("T")


class ChassisStartError(AssertionError):
    """The chassis exited (or timed out) before it was ready; carries its output."""


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, message: str = "",
              interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for "
                                 f"{message or predicate}")
        time.sleep(interval)


def process_state(pid: int) -> str | None:
    """The one-letter state from /proc/PID/stat (None: no such process)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data.rsplit(")", 1)[1].split()[0]


def is_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as gone)."""
    return process_state(pid) not in (None, "Z", "X")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), zombies excluded."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return sorted(found)


class ChassisProcess:
    """A running chassis: its launcher, its main pid (angel or worker), its output."""

    def __init__(self, args: Sequence[str], *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None,
                 prefix: Sequence[str] = ()) -> None:
        self.args = list(args)
        self.workdir = Path(tempfile.mkdtemp(prefix="chassis-test-"))
        os.chmod(self.workdir, 0o755)
        self.notify_path = str(self.workdir / "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        os.chmod(self.notify_path, 0o777)  # a chassis running as another user may send
        self.messages: list[str] = []
        self.stderr_path = self.workdir / "stderr"
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["NOTIFY_SOCKET"] = self.notify_path
        self._stderr: str | None = None
        self.main_pid: int | None = None
        self.returncode: int | None = None
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [*prefix, str(CHASSIS), *self.args], env=full_env, cwd=cwd,
                stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True,
            )
        self.groups = {self.proc.pid}

    # -- output ---------------------------------------------------------------------

    @property
    def log_path(self) -> Path | None:
        for i, arg in enumerate(self.args):
            if arg.startswith("--log-file="):
                return Path(arg.split("=", 1)[1])
            if arg == "--log-file" and i + 1 < len(self.args):
                return Path(self.args[i + 1])
        return None

    def stderr_text(self) -> str:
        if self._stderr is not None:  # killed: the scratch directory is gone
            return self._stderr
        return self.stderr_path.read_text(errors="replace")

    def log_text(self) -> str:
        """The log file if there is one, else stderr."""
        path = self.log_path
        if path is not None:
            try:
                return path.read_text(errors="replace")
            except FileNotFoundError:
                return ""
        return self.stderr_text()

    def output(self) -> str:
        text = f"--- stderr ---\n{self.stderr_text()}"
        if self.log_path is not None:
            text += f"\n--- {self.log_path} ---\n{self.log_text()}"
        return text

    def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        """Wait until ``text`` occurs ``count`` times in the log; returns the log."""
        return wait_for(lambda: self.log_text() if self.log_text().count(text) >= count
                        else "", timeout, f"{text!r} x{count} in the log:\n{self.output()}")

    # -- notify socket --------------------------------------------------------------

    def _receive(self, timeout: float) -> bool:
        self.notify.settimeout(max(timeout, 0.001))
        try:
            data = self.notify.recv(4096)
        except (TimeoutError, BlockingIOError):
            return False
        for field in data.decode(errors="replace").split("\n"):
            self.messages.append(field)
            if field.startswith("MAINPID=") and self.main_pid is None:
                self.main_pid = int(field.split("=", 1)[1])
                with contextlib.suppress(ProcessLookupError):
                    self.groups.add(os.getpgid(self.main_pid))
        return True

    def wait_message(self, field: str, timeout: float = 15.0) -> None:
        """Wait for a notify field such as ``READY=1``; raise if the chassis exits first."""
        deadline = time.monotonic() + timeout
        while field not in self.messages:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ChassisStartError(f"no {field} within {timeout} s\n{self.output()}")
            if self._receive(min(remaining, 0.1)):
                continue
            if self.proc.poll() is not None and not (
                    self.main_pid is not None and is_alive(self.main_pid)):
                if self._receive(0.05):
                    continue
                raise ChassisStartError(
                    f"chassis exited with code {self.proc.returncode} before {field}\n"
                    f"{self.output()}")

    def wait_ready(self, timeout: float = 15.0) -> ChassisProcess:
        self.wait_message("READY=1", timeout)
        if self.main_pid is None:
            self.main_pid = self.proc.pid
        return self

    # -- control --------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The process to signal: the angel with one, else the worker."""
        return self.main_pid if self.main_pid is not None else self.proc.pid

    def workers(self) -> list[int]:
        """The angel's children, or the main process itself when it has none."""
        kids = children_of(self.pid)
        return kids or [self.pid]

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def wait(self, timeout: float = 15.0) -> int | None:
        """Wait for the main process to end; its exit code if it is our child."""
        if self.pid == self.proc.pid:
            try:
                self.returncode = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"chassis still running after {timeout} s\n"
                                     f"{self.output()}") from None
            return self.returncode
        wait_for(lambda: not is_alive(self.pid), timeout, f"pid {self.pid} to exit")
        self.proc.wait(timeout)
        return None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL whatever is left of its process groups."""
        try:
            if is_alive(self.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGTERM)
            with contextlib.suppress(AssertionError):
                self.wait(timeout)
        finally:
            self.kill()
        return self.returncode

    def kill(self) -> None:
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self.returncode is None and self.proc.returncode is not None \
                and self.pid == self.proc.pid:
            self.returncode = self.proc.returncode
        self.notify.close()
        if self._stderr is None:
            self._stderr = self.stderr_text()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ChassisProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_chassis(args: Sequence[str], *, env: Mapping[str, str] | None = None,
                  cwd: str | os.PathLike[str] | None = None, timeout: float = 15.0,
                  prefix: Sequence[str] = (), wait_ready: bool = True) -> ChassisProcess:
    """Spawn ``.venv/bin/chassis ARGS`` and wait for ``READY=1`` (``wait_ready=False``: don't).

    ``prefix`` runs it under another command (``["setpriv", "--groups", "4,27", "--"]``).
    Raises :class:`ChassisStartError` with the captured stderr/log if it exits first.
    """
    process = ChassisProcess(args, env=env, cwd=cwd, prefix=prefix)
    if wait_ready:
        try:
            process.wait_ready(timeout)
        except BaseException:
            process.kill()
            raise
    return process


@pytest.fixture
def chassis_factory() -> Iterator[Callable[..., ChassisProcess]]:
    """``chassis_factory(args, **kw)`` -> a ready :class:`ChassisProcess`, killed at teardown."""
    started: list[ChassisProcess] = []

    def factory(args: Sequence[str], **kwargs: Any) -> ChassisProcess:
        process = start_chassis(args, **kwargs)
        started.append(process)
        return process

    yield factory
    for process in started:
        process.stop(timeout=10)
