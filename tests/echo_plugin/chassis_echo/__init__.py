"""A third-party chassis plugin for the tests: a TCP echo server that knows nothing of MySQL.

Lines are echoed back, except ``whoami``, answered with the worker's credentials as JSON,
so the tests can check a privilege drop from the outside.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Sequence

import click

import chassis
from chassis.config import Config
from chassis.errors import StartupError
from chassis.listen import bind_listener, parse_address
from chassis.runtime import Runtime

_state: dict[str, object] = {}


@chassis.hookimpl
def chassis_add_options() -> Sequence[click.Option]:
    return [
        click.Option(["--echo-address"], default="127.0.0.1:4050", show_default=True,
                     help="Where the echo server listens."),
        click.Option(["--echo-fail-startup"], is_flag=True,
                     help="Fail in apply_config (tests a start-up failure)."),
    ]


@chassis.hookimpl
def chassis_apply_config(config: Config, runtime: Runtime) -> None:
    if config.echo_fail_startup:
        raise StartupError("echo: failing on purpose (--echo-fail-startup)")
    try:
        address = parse_address(config.echo_address, default_port=4050)
    except ValueError as e:
        raise StartupError(f"--echo-address: {e}") from None
    _state["sock"] = bind_listener(address)


def _credentials() -> dict[str, object]:
    status = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups", "NoNewPrivs", "CapEff"):
                status[key] = value.split()
    try:
        os.setuid(0)
        regained = True
    except PermissionError:
        regained = False
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "resuid": list(os.getresuid()),
        "resgid": list(os.getresgid()),
        "groups": os.getgroups(),
        "setuid0_succeeded": regained,
        "status": status,
        "umask": _umask(),
        "cwd": os.getcwd(),
        "sid": os.getsid(0),
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while line := await reader.readline():
            if line.strip() == b"whoami":
                writer.write(json.dumps(_credentials()).encode() + b"\n")
            else:
                writer.write(line)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@chassis.hookimpl
async def chassis_serve(runtime: Runtime) -> None:
    sock = _state["sock"]
    assert isinstance(sock, socket.socket)
    _state["server"] = await asyncio.start_server(_handle, sock=sock)


@chassis.hookimpl
async def chassis_stop(runtime: Runtime, deadline: float) -> None:
    server = _state.get("server")
    if isinstance(server, asyncio.Server):
        server.close()
        await server.wait_closed()
