"""Entry point of the ``admin`` plugin: options and chassis hooks.

Kept light: the server modules are imported when the plugin starts, not for ``--help``.
"""

from __future__ import annotations

import importlib
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

import chassis
from chassis.config import Config
from chassis.errors import StartupError
from chassis.listen import DEFAULT_BACKLOG
from chassis.runtime import Runtime
from chassis.secretfile import read_password_file
from chassis_admin import tls as admin_tls

if TYPE_CHECKING:
    from chassis_admin.server import AdminServer

_state: dict[str, Any] = {}


@chassis.hookimpl
def chassis_add_options() -> Sequence[click.Option]:
    return [
        click.Option(["--admin-address"], default="127.0.0.1:4041", show_default=True,
                     help="Listen address host:port, or a unix socket path (:4041 for every "
                          "address: the admin port controls the proxy, keep it local)."),
        click.Option(["--admin-login-timeout"], type=click.FloatRange(min=0), default=10.0,
                     show_default=True, metavar="SECONDS",
                     help="Cut a connection that has not logged in within this time (0: never)."),
        click.Option(["--admin-username"], metavar="NAME", help="The admin login name (required)."),
        click.Option(["--admin-password"], metavar="PASSWORD",
                     help="The admin password (visible in ps: prefer --admin-password-file)."),
        click.Option(["--admin-password-file"], metavar="FILE",
                     help="Read the admin password from the first line of FILE; others may not read it "
                          "and only its owner may write it (mode 0640 or stricter)."),
        click.Option(["--admin-backlog"], type=click.IntRange(min=1), default=DEFAULT_BACKLOG,
                     show_default=True, metavar="N",
                     help="Connections the kernel queues until a worker accepts them "
                          "(capped by net.core.somaxconn)."),
        click.Option(["--admin-lua-script"], metavar="FILE",
                     help="Lua script answering admin queries (MySQL Proxy admin scripts run unchanged)."),
        *admin_tls.options(),  # --admin-ssl-*
    ]


def read_password(config: Config) -> str:
    """The admin password, from the option or its file; refuse empty or exposed ones."""
    if config.admin_password and config.admin_password_file:
        raise StartupError("--admin-password and --admin-password-file: give only one")
    if config.admin_password_file:
        path = config.path(config.admin_password_file)
        assert path is not None
        password = read_password_file(path, "--admin-password-file")
    else:
        password = config.admin_password or ""
    if not password:
        raise StartupError(
            "the admin plugin needs a password: --admin-password-file=FILE (or --admin-password)"
        )
    return password


@chassis.hookimpl
def chassis_apply_config(config: Config, runtime: Runtime) -> None:
    from chassis.listen import bind_listener, parse_address

    # The server's modules load here, before --user drops privileges (the installation
    # may not be readable by the user the worker becomes), and not for --help.
    importlib.import_module("chassis_admin.server")
    importlib.import_module("chassis_admin.workerinfo")

    if not config.admin_username:
        raise StartupError("the admin plugin needs --admin-username")
    password = read_password(config)
    script: Path | None = config.path(config.admin_lua_script)
    if script is not None and not script.is_file():
        raise StartupError(f"--admin-lua-script {script}: no such file")
    try:
        address = parse_address(config.admin_address, default_port=4041)
    except ValueError as e:
        raise StartupError(f"--admin-address: {e}") from None
    _state["tls"] = admin_tls.load(config)  # before binding: a bad certificate binds nothing
    backlog = int(config.get("admin_backlog") or DEFAULT_BACKLOG)
    sock: socket.socket = bind_listener(address, backlog=backlog, option="--admin-address")
    login_timeout = float(config.get("admin_login_timeout") or 0)
    _state.update(sock=sock, backlog=backlog, login_timeout=login_timeout,
                  username=config.admin_username, password=password, script=script,
                  address=address)


@chassis.hookimpl
async def chassis_serve(runtime: Runtime) -> None:
    from chassis_admin.server import AdminServer  # imported already: see chassis_apply_config

    server = AdminServer(runtime, _state["username"], _state["password"], _state["script"],
                         login_timeout=_state["login_timeout"])
    server.tls = _state["tls"]
    await server.start(_state["sock"], _state["backlog"])
    _state["server"] = server
    _state["started"] = time.time()
    runtime.logger("admin").log(25, "admin listening on %s", _state["address"])


@chassis.hookimpl
async def chassis_stop(runtime: Runtime, deadline: float) -> None:
    server: AdminServer | None = _state.get("server")
    if server is not None:
        await server.stop()


@chassis.hookimpl
def chassis_shutdown(runtime: Runtime) -> None:
    sock = _state.pop("sock", None)
    if sock is not None:
        sock.close()
    _state.clear()


@chassis.hookimpl
def chassis_metrics(runtime: Runtime) -> list[Any] | None:
    """This worker's console metrics (``--metrics-address``): see :mod:`chassis_admin.metrics`."""
    from chassis_admin.metrics import collect

    server = _state.get("server")
    return None if server is None else list(collect(server))


@chassis.hookimpl
def chassis_ready(runtime: Runtime) -> str | None:
    """Not ready until the console listens (``/readyz``)."""
    from chassis_admin.metrics import not_ready

    return not_ready(_state.get("server"), runtime.worker_id)


@chassis.hookimpl
def chassis_control(runtime: Runtime, request: dict[str, Any]) -> dict[str, Any] | None:
    """``{"plugin": "admin", "op": "worker"}``: this worker's row of the ``workers`` table."""
    if request.get("plugin") != "admin":
        return None
    if request.get("op") != "worker":
        raise ValueError(f"unknown admin control operation {request.get('op')!r}")
    from chassis_admin.workerinfo import describe

    server = _state.get("server")
    return describe(_state.get("started", time.time()), len(getattr(server, "_tasks", ())))
