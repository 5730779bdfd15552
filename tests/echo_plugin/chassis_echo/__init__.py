"""A third-party chassis plugin for the tests: a TCP echo server that knows nothing of MySQL.

It uses every hook, so it doubles as the example in docs/plugins.md. Lines are echoed
back, except a few commands the process tests need:

* ``whoami``: the worker's credentials, pid, umask, cwd, limits... as JSON, so the
  tests can check a privilege drop or a daemon from the outside;
* ``peers``: every worker's answer to a ``chassis_control`` request, as JSON;
* ``echoed``: how many lines this worker echoed, read through what the plugin offers
  as ``"echo.echoed"`` (``chassis_offer``), the way another plugin would read it;
* ``offered NAME``: whether anything is offered under NAME (``yes``/``no``);
* ``exit``: ``runtime.request_shutdown()`` (the worker stops on its own, exit 0);
* ``die N``: ``os._exit(N)`` (a crash with an exit code);
* ``crash``: a segmentation fault (for ``--log-backtrace-on-crash``; no core file);
* ``block``: a blocking call that never returns, so the worker's event loop is stuck
  (for the angel's watchdog, ``--watchdog-timeout``).

Options that make it misbehave on purpose: ``--echo-fail-startup`` (StartupError in
apply_config), ``--echo-fail-serve`` (an unexpected exception in serve),
``--echo-crash-at-start=N`` with ``--echo-counter-file`` (SIGKILL itself in serve
for the first N starts, counted across processes in the file),
``--echo-serve-hang``/``--echo-stop-hang`` (chassis_serve/chassis_stop never finish).
``--echo-prefix`` is put before echoed lines and changes on a reload (SIGHUP); a reload
to ``--echo-prefix=refuse`` is refused by its ``chassis_check_reload``.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import json
import logging
import os
import platform
import resource
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

import click

import chassis
from chassis.config import Config
from chassis.errors import StartupError
from chassis.listen import bind_listener, parse_address
from chassis.runtime import Runtime

log = logging.getLogger("chassis.echo")

_state: dict[str, Any] = {}


@chassis.hookimpl
def chassis_add_options() -> Sequence[click.Option]:
    return [
        click.Option(["--echo-address"], default="127.0.0.1:4050", show_default=True,
                     help="Where the echo server listens."),
        click.Option(["--echo-fail-startup"], is_flag=True,
                     help="Fail in apply_config (tests a start-up failure)."),
        click.Option(["--echo-fail-serve"], is_flag=True,
                     help="Raise an unexpected exception in serve (tests a start-up failure)."),
        click.Option(["--echo-crash-at-start"], type=int, default=0,
                     help="SIGKILL the worker in serve for the first N starts "
                          "(needs --echo-counter-file)."),
        click.Option(["--echo-counter-file"], metavar="FILE",
                     help="Counts worker starts across processes (for --echo-crash-at-start)."),
        click.Option(["--echo-serve-hang"], is_flag=True,
                     help="Never finish chassis_serve (tests a stop during start-up)."),
        click.Option(["--echo-stop-hang"], is_flag=True,
                     help="Never finish chassis_stop (tests --shutdown-timeout)."),
        click.Option(["--echo-prefix"], default="",
                     help="Put this before every echoed line (a reload changes it)."),
    ]


@chassis.hookimpl
def chassis_version_info() -> Sequence[str]:
    return [f"echo protocol: 1 (python {platform.python_version()})"]


@chassis.hookimpl
def chassis_apply_config(config: Config, runtime: Runtime) -> None:
    if config.echo_fail_startup:
        raise StartupError("echo: failing on purpose (--echo-fail-startup)")
    try:
        address = parse_address(config.echo_address, default_port=4050)
    except ValueError as e:
        raise StartupError(f"--echo-address: {e}") from None
    _state["sock"] = bind_listener(address, option="--echo-address")
    _state["config"] = config
    log.log(25, "echo listening on %s", address)


def _count_start(path: str) -> int:
    """Append this start's time to ``path``; returns how many starts it holds.

    Locked, because workers start at the same time; the tests read the times to check
    that restart delays grow.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{time.time():.6f}\n".encode())
        return os.pread(fd, 1 << 20, 0).count(b"\n")
    finally:
        os.close(fd)


def _proc_status() -> dict[str, list[str]]:
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups", "NoNewPrivs", "CapEff"):
                status[key] = value.split()
    return status


def _credentials(runtime: Runtime) -> dict[str, object]:
    status = _proc_status()
    try:
        os.setuid(0)
        regained = True
    except PermissionError:
        regained = False
    with open("/proc/self/stat") as f:
        stat_fields = f.read().rsplit(")", 1)[1].split()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "worker_id": runtime.worker_id,
        "resuid": list(os.getresuid()),
        "resgid": list(os.getresgid()),
        "groups": os.getgroups(),
        "setuid0_succeeded": regained,
        "status": status,
        "umask": _umask(),
        "cwd": os.getcwd(),
        "sid": os.getsid(0),
        "pgid": os.getpgid(0),
        "tty_nr": int(stat_fields[4]),
        "stdio": [os.readlink(f"/proc/self/fd/{fd}") for fd in (0, 1, 2)],
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "pdeathsig": _pdeathsig(),
        "env": {k: os.environ.get(k) for k in ("LUA_PATH", "LUA_CPATH", "NOTIFY_SOCKET")},
    }


def _pdeathsig() -> int:
    value = ctypes.c_int(0)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    return value.value


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _segfault() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file in the test directory
    ctypes.string_at(0)


def _block_the_loop() -> None:
    """What a plugin's blocking call does to its worker: nothing else runs, ever."""
    log.log(25, "echo: blocking the event loop on purpose")
    while True:
        time.sleep(3600)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    runtime: Runtime = _state["runtime"]
    try:
        while line := await reader.readline():
            command = line.strip()
            if command == b"whoami":
                writer.write(json.dumps(_credentials(runtime)).encode() + b"\n")
            elif command == b"peers":
                assert runtime.control is not None
                replies = await runtime.control.broadcast({"plugin": "echo"})
                writer.write(json.dumps(replies).encode() + b"\n")
            elif command == b"echoed":
                echoed = runtime.offered("echo.echoed")
                writer.write(f"{echoed()}\n".encode())
            elif command.startswith(b"offered "):
                found = runtime.offered(command.split()[1].decode()) is not None
                writer.write(b"yes\n" if found else b"no\n")
            elif command == b"exit":
                writer.write(b"bye\n")
                runtime.request_shutdown("echo: a client sent 'exit'")
            elif command.startswith(b"die "):
                os._exit(int(command.split()[1]))
            elif command == b"crash":
                _segfault()
            elif command == b"block":
                _block_the_loop()
            else:
                writer.write(_state["config"].echo_prefix.encode() + line)
                _state["echoed"] = _state.get("echoed", 0) + 1
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@chassis.hookimpl
async def chassis_serve(runtime: Runtime) -> None:
    config: Config = _state["config"]
    _state["runtime"] = runtime
    if config.echo_crash_at_start:
        if not config.echo_counter_file:
            raise StartupError("--echo-crash-at-start needs --echo-counter-file")
        if _count_start(config.echo_counter_file) <= config.echo_crash_at_start:
            os.kill(os.getpid(), signal.SIGKILL)
    if config.echo_serve_hang:
        log.log(25, "echo: hanging in chassis_serve on purpose")
        await asyncio.Event().wait()
    if config.echo_fail_serve:
        raise RuntimeError("echo: serve failing on purpose (--echo-fail-serve)")
    sock = _state["sock"]
    assert isinstance(sock, socket.socket)
    _state["server"] = await asyncio.start_server(_handle, sock=sock)


@chassis.hookimpl
async def chassis_stop(runtime: Runtime, deadline: float) -> None:
    server = _state.get("server")
    if isinstance(server, asyncio.Server):
        server.close()
    config: Config | None = _state.get("config")
    if config is not None and config.echo_stop_hang:
        log.log(25, "echo: hanging in chassis_stop on purpose")
        await asyncio.Event().wait()


@chassis.hookimpl
def chassis_control(runtime: Runtime, request: dict[str, Any]) -> Any:
    if request.get("plugin") == "echo":
        return {"pid": os.getpid(), "worker_id": runtime.worker_id}
    return None


@chassis.hookimpl
def chassis_offer(name: str, runtime: Runtime) -> Any:
    if name == "echo.echoed":
        return lambda: _state.get("echoed", 0)
    return None


@chassis.hookimpl
def chassis_metrics(runtime: Runtime) -> Any:
    from chassis.metrics import counter

    return [counter("chassis_echo_lines_total", "Lines echoed.", [({}, _state.get("echoed", 0))])]


@chassis.hookimpl
def chassis_ready(runtime: Runtime) -> str | None:
    return None if "server" in _state else "echo: not listening"


@chassis.hookimpl
def chassis_check_reload(old: Config, new: Config) -> Sequence[str] | None:
    """A new --echo-address must parse; the listener keeps the old one until a restart."""
    log.log(25, "echo: checking the reload as uid %d", os.geteuid())  # the tests read it
    try:
        parse_address(new.echo_address, default_port=4050)
    except ValueError as e:
        raise StartupError(f"--echo-address: {e}") from None
    if new.echo_prefix == "refuse":
        raise StartupError("--echo-prefix=refuse: refused on purpose")
    return ["echo_address"]


@chassis.hookimpl
def chassis_reload(old: Config, new: Config, runtime: Runtime) -> None:
    _state["config"] = new  # the next echoed line has the new --echo-prefix


@chassis.hookimpl
def chassis_handover_out(runtime: Runtime, send: Any) -> Any:
    """An upgrade: the count of echoed lines moves to the new chassis (a state without
    fds); the echo connections themselves drain here."""
    async def hand_over() -> tuple[int, int]:
        await send({"echoed": _state.get("echoed", 0)}, [])
        return 1, 0
    return hand_over()


@chassis.hookimpl
def chassis_handover_in(runtime: Runtime, item: Any) -> bool | None:
    if item.plugin != "echo":
        return None
    item.close()
    _state["echoed"] = _state.get("echoed", 0) + int(item.state.get("echoed", 0))
    log.log(25, "echo: %d echoed line(s) handed over", item.state.get("echoed", 0))
    return True


@chassis.hookimpl
def chassis_reopen_logs(runtime: Runtime) -> None:
    # The echo plugin writes no file of its own; a plugin that does reopens it here.
    log.log(25, "echo: SIGHUP, nothing of ours to reopen")


@chassis.hookimpl
def chassis_shutdown(runtime: Runtime) -> None:
    sock = _state.pop("sock", None)
    if isinstance(sock, socket.socket):
        sock.close()
    log.log(25, "echo: shut down")
