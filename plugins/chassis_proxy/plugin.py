"""Entry point of the ``proxy`` plugin: its options and its chassis hooks.

Kept light: heavy modules are imported when the plugin starts, not when ``--help``
lists its options.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import click

import chassis
from chassis.listen import DEFAULT_BACKLOG
from chassis_proxy import tls as proxy_tls

if TYPE_CHECKING:
    from chassis.config import Config
    from chassis.runtime import Runtime
    from chassis.upgrade import HandoverItem, Send
    from chassis_proxy.hooks import BackendView, ScriptHost
    from chassis_proxy.queries import QueryRecorder
    from chassis_proxy.service import ProxyService
    from chassis_proxy.settings import ProxySettings


@chassis.hookimpl
def chassis_add_options() -> Sequence[click.Option]:
    return [
        click.Option(["-P", "--proxy-address"], default=":4040", show_default=True,
                     help="Listen address host:port, or a unix socket path."),
        click.Option(["-b", "--proxy-backend-addresses"], multiple=True, metavar="HOST:PORT",
                     help="Read/write backend; repeatable (default 127.0.0.1:3306)."),
        click.Option(["-r", "--proxy-read-only-backend-addresses"], multiple=True,
                     metavar="HOST:PORT", help="Read-only backend; repeatable."),
        click.Option(["--proxy-skip-profiling"], is_flag=True,
                     help="Accepted for compatibility (no effect, as in MySQL Proxy)."),
        click.Option(["--proxy-fix-bug-25371"], is_flag=True,
                     help="Accepted for compatibility (no effect)."),
        click.Option(["-s", "--proxy-lua-script"], metavar="FILE",
                     help="Lua script with the proxy hooks; a bare name that is no file "
                          "picks a bundled script (rw-splitting.lua)."),
        click.Option(["--proxy-lua-on-error"], type=click.Choice(["forward", "reject"]),
                     default=None, help="When a hook fails: forward the query as MySQL Proxy "
                                        "did (default), or reject it with an ERR."),
        click.Option(["--lua-runtime"], type=click.Choice(["lua5.1", "luajit"]), default=None,
                     callback=_note_lua_runtime,
                     help="Lua of the scripts: lua5.1 (default; PUC Lua 5.1, as MySQL Proxy "
                          "0.8.5 ran) or luajit (faster; rejects some 5.1 sources, see docs/lua.md)."),
        click.Option(["--lua-hook-timeout"], type=float, default=None, metavar="SECONDS",
                     help="Interrupt a Lua hook running longer than this (default 1; 0: never)."),
        click.Option(["--lua-max-memory"], default=None, metavar="SIZE",
                     help="Memory limit of the worker's Lua state, e.g. 256M (default 256M)."),
        click.Option(["--no-proxy"], is_flag=True, help="Do not open the proxy listener."),
        click.Option(["--proxy-backlog"], type=click.IntRange(min=1), default=DEFAULT_BACKLOG,
                     show_default=True, metavar="N",
                     help="Connections the kernel queues until a worker accepts them (a burst "
                          "of logins); the kernel caps it at net.core.somaxconn."),
        click.Option(["--proxy-pool-no-change-user"], is_flag=True,
                     help="A client logging in on a pooled connection is checked against "
                          "its first login instead of by COM_CHANGE_USER."),
        click.Option(["--proxy-pool-max-idle"], type=click.IntRange(min=0), default=64,
                     show_default=True, metavar="N",
                     help="Idle pooled connections kept per backend (0: no pooling)."),
        click.Option(["--proxy-pool-max-idle-age"], type=click.FloatRange(min=0), default=300.0,
                     show_default=True, metavar="SECONDS",
                     help="Close pooled connections idle for longer (0: never)."),
        click.Option(["--proxy-connect-timeout"], type=float, default=2.0, show_default=True,
                     help="Seconds to wait for a backend connection."),
        click.Option(["--proxy-login-timeout"], type=float, default=10.0, show_default=True,
                     help="Seconds a client has from connecting to being logged in (0: no limit)."),
        click.Option(["--proxy-idle-timeout"], type=float, default=0.0, show_default=True,
                     help="Close a logged-in client idle this long with no command running "
                          "(0: never, like MariaDB's wait_timeout left to the server)."),
        click.Option(["--proxy-read-timeout"], type=float, default=28800.0, show_default=True,
                     help="Seconds to wait for a client's LOCAL INFILE data and for answers to "
                          "the proxy's own commands; a running query is never cut."),
        click.Option(["--proxy-write-timeout"], type=float, default=28800.0, show_default=True,
                     help="Seconds to wait for a write."),
        click.Option(["--proxy-health-check-interval"], type=float, default=4.0, show_default=True,
                     help="Seconds between background probes of DOWN backends (0: only when clients connect)."),
        click.Option(["--proxy-max-connections"], type=click.IntRange(min=0), default=0,
                     help="Most client connections per worker (0: no limit)."),
        click.Option(["--proxy-max-allowed-packet"], type=click.IntRange(min=1024),
                     default=64 * 1024 * 1024, show_default=True, metavar="BYTES",
                     help="With a script: largest client command it is shown; a bigger one "
                          "gets ERR 1153 and the connection is closed (match the server's "
                          "max_allowed_packet; MariaDB's default is 16 MiB). A command the "
                          "script cannot hold twice within --lua-max-memory also gets "
                          "ERR 1153. Without a script every packet is relayed."),
        click.Option(["--proxy-protocol-networks"], multiple=True, metavar="CIDRS",
                     help="Peers (load balancers) that start every connection with a PROXY "
                          "protocol v1/v2 header naming the real client; repeatable and "
                          "comma-separated, e.g. 10.0.0.0/8. They must send one; nobody "
                          "else may (default: nobody)."),
        click.Option(["--proxy-backend-proxy-protocol"], type=click.Choice(["off", "v1", "v2"]),
                     default="off", show_default=True,
                     help="Start every server connection with a PROXY header naming the "
                          "client, so the server's grants see the client's address (MariaDB: "
                          "proxy_protocol_networks); v2 is the binary form, v1 the text one."),

        click.Option(["--proxy-query-digest"], type=click.Choice(["on", "off"]), default="on",
                     show_default=True,
                     help="Keep query digests (count, time, rows, errors per normalised "
                          "query, user, schema and backend): the admin table query_digest "
                          "and the metrics' top digests."),
        click.Option(["--proxy-query-digest-max"], type=click.IntRange(min=1), default=10_000,
                     show_default=True, metavar="N",
                     help="Distinct digest rows kept per worker; queries of new shapes past "
                          "it are counted in one 'overflow' row."),
        click.Option(["--proxy-slow-query-log"], metavar="FILE",
                     help="Write queries slower than --proxy-long-query-time to FILE in "
                          "MariaDB's slow-log format (pt-query-digest, mariadb-dumpslow); "
                          "SIGHUP reopens it."),
        click.Option(["--proxy-long-query-time"], type=click.FloatRange(min=0), default=10.0,
                     show_default=True, metavar="SECONDS",
                     help="A query this slow or slower goes to --proxy-slow-query-log "
                          "(0: every query)."),
        *proxy_tls.options(),  # --proxy-ssl-*, --proxy-backend-ssl-*
        *_monitor_options(),
    ]


def _monitor_options() -> list[click.Option]:
    """The replication monitor's options (docs/operations.md, "Replication-aware backends")."""
    return [
        click.Option(["--proxy-monitor-user"], metavar="USER",
                     help="Account the replication monitor logs in as on every backend (needs "
                          "SLAVE MONITOR or REPLICATION CLIENT); without it there is no monitor."),
        click.Option(["--proxy-monitor-password-file"], metavar="FILE",
                     help="The monitor account's password: the file's first line "
                          "(mode 0640 or stricter)."),
        click.Option(["--proxy-monitor-interval"], type=float, default=None, metavar="SECONDS",
                     help="Seconds between two probes of every backend (default 1)."),
        click.Option(["--proxy-monitor-timeout"], type=float, default=None, metavar="SECONDS",
                     help="Most seconds one probe may take: connect, log in, read (default: "
                          "the interval, at most 1)."),
        click.Option(["--proxy-backend-roles"], type=click.Choice(["static", "auto"]), default=None,
                     help="static (default): -b backends are read/write, -r read-only; auto: "
                          "a backend's role follows its server's read_only (needs the monitor)."),
        click.Option(["--proxy-max-replication-lag"], type=click.FloatRange(min=0), default=None,
                     metavar="SECONDS",
                     help="A replica further behind, or whose replication is stopped or broken, "
                          "gets no reads until it catches up (needs the monitor)."),
    ]


#: ``--lua-runtime`` as parsed in this process (for ``--version``, which has no config).
_lua_runtime_given: str | None = None


def _note_lua_runtime(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    global _lua_runtime_given
    _lua_runtime_given = value
    return value


@chassis.hookimpl
def chassis_version_info() -> Sequence[str]:
    """lupa's version and the Lua runtime scripts run on (``--lua-runtime``, asked of the
    Lua bridge)."""
    from importlib import metadata

    try:
        lupa_version = metadata.version("lupa")
    except metadata.PackageNotFoundError:
        return ["lupa: not installed (--proxy-lua-script cannot work)"]
    try:
        from chassis_proxy.lua.runtime import implementation
        in_use = implementation(_lua_runtime_given)
    except ImportError as e:
        return [f"lupa: {lupa_version} (no usable Lua runtime: {e})"]
    return [f"lupa: {lupa_version} (Lua runtime: {in_use})"]


# The worker's proxy; one per process (each --event-threads worker has its own).
_service: ProxyService | None = None


@chassis.hookimpl
def chassis_apply_config(config: Config, runtime: Runtime) -> None:
    """Check the options, build the TLS contexts and bind the listener (before --user)."""
    global _service
    from chassis.listen import bind_listener
    from chassis_proxy import settings as proxy_settings
    from chassis_proxy.service import ProxyService

    settings = proxy_settings.load(config)
    log = logging.getLogger("chassis.proxy")
    sock = None
    if settings.listen is not None:
        if settings.listen.is_unix and runtime.worker_id > 0:
            # Processes cannot share a unix socket path the way SO_REUSEPORT shares a port.
            log.info("unix socket %s is served by worker 1 only", settings.listen)
        else:
            sock = bind_listener(settings.listen, backlog=settings.backlog, option="--proxy-address")
    try:
        host = _script_host(config, runtime, settings)
        recorder = _recorder(config, settings)
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    _service = ProxyService(settings, sock, host, worker_id=runtime.worker_id,
                            worker_count=runtime.worker_count, recorder=recorder)
    if sock is not None:
        log.info("%s", proxy_settings.describe(settings, _service.port))
    if runtime.worker_id == 0:
        _say_what_we_use(settings, _service.port)


def _say_what_we_use(settings: ProxySettings, port: int | None) -> None:
    """Where the proxy listens, its backends and its script: one ``message`` line each,
    so that a foreground chassis at the default level tells what it does."""
    from chassis.listen import Address
    from chassis.logs import MESSAGE

    log = logging.getLogger("chassis.proxy")
    listen = settings.listen
    if listen is None:
        log.log(MESSAGE, "proxy: not listening (--no-proxy)")
    else:
        if port is not None and listen.port != port:
            listen = Address(host=listen.host, port=port)
        log.log(MESSAGE, "proxy listening on %s", listen)
    log.log(MESSAGE, "proxy backends: %s", ", ".join(
        f"{b.address} ({'ro' if b.read_only else 'rw'})" for b in settings.backends))
    if settings.lua_script is None:
        log.log(MESSAGE, "proxy Lua script: none (queries are relayed as they are)")
    else:
        log.log(MESSAGE, "proxy Lua script: %s", settings.lua_script)


def _recorder(config: Config, settings: ProxySettings) -> QueryRecorder | None:
    """Query digests and the slow log, opened now (before --user), or None when both are off."""
    if not settings.query_digest and settings.slow_query_log is None:
        return None
    from chassis import privileges
    from chassis_proxy.digests import DigestTable
    from chassis_proxy.queries import QueryRecorder
    from chassis_proxy.slowlog import SlowLog

    slowlog = None
    if settings.slow_query_log is not None:
        user = config.get("user")
        owner = privileges.lookup(user).owner if user else None
        slowlog = SlowLog(settings.slow_query_log, settings.long_query_time, owner)
    digests = DigestTable(settings.query_digest_max) if settings.query_digest else None
    return QueryRecorder(digests, slowlog)


def _reloaded_recorder(running: QueryRecorder | None, settings: ProxySettings) -> QueryRecorder | None:
    """A reload's recorder for new connections: digests switched on or off, their cap and
    --proxy-long-query-time change (digests that stay on keep what they have; switched
    off, they are dropped); the slow log's file is
    the running one (a new path needs a restart: the file is created before --user)."""
    from chassis_proxy.digests import DigestTable
    from chassis_proxy.queries import QueryRecorder

    slowlog = running.slowlog if running is not None else None
    if slowlog is not None:
        slowlog.long_query_time = settings.long_query_time
    digests = None
    if settings.query_digest:
        digests = running.digests if running is not None else None
        if digests is None:
            digests = DigestTable(settings.query_digest_max)
        digests.max_digests = settings.query_digest_max
    if digests is None and slowlog is None:
        return None
    return QueryRecorder(digests, slowlog)


def _script_host(config: Config, runtime: Runtime, settings: ProxySettings) -> ScriptHost | None:
    """The Lua bridge, when --proxy-lua-script is given (imported only then)."""
    if settings.lua_script is None:
        return None
    from chassis.errors import StartupError

    try:
        from chassis_proxy import lua
    except ImportError as e:
        raise StartupError(
            f"--proxy-lua-script needs the Lua bridge (chassis_proxy.lua): {e}"
        ) from None
    factory = getattr(lua, "create_script_host", None)
    if factory is None:
        raise StartupError("--proxy-lua-script: the Lua bridge has no create_script_host()")
    host: ScriptHost = factory(config=config, runtime=runtime, settings=settings)
    return host


def _lua_changed(old: Config, new: Config, old_settings: ProxySettings,
                 new_settings: ProxySettings) -> bool:
    """Whether a reload needs a new script host (a new Lua state): another script file
    or other limits. The same file edited in place is reloaded by the host itself."""
    from chassis_proxy.settings import LUA_OPTIONS

    return old_settings.lua_script != new_settings.lua_script or any(
        old.get(name) != new.get(name) for name in LUA_OPTIONS)


@chassis.hookimpl
def chassis_check_reload(old: Config, new: Config) -> list[str]:
    """Refuse a new configuration start-up would refuse (a bad value, a backend address
    that does not parse, a Lua script that does not compile); name the options that need
    a restart (the listener, TLS)."""
    from chassis.runtime import Runtime as CheckRuntime
    from chassis_proxy import settings as proxy_settings

    settings = proxy_settings.load(new, with_tls=False)
    if settings.lua_script is not None:  # compiled as a worker would, then dropped
        host = _script_host(new, CheckRuntime(config=new), settings)
        if host is not None:
            host.close()
    return [name for name in new.values if proxy_settings.needs_restart(name)]


@chassis.hookimpl
def chassis_reload(old: Config, new: Config, runtime: Runtime) -> None:
    """New clients get the new backends, script, limits, timeouts and pool settings;
    connected clients keep theirs (see ProxyService.reconfigure)."""
    from chassis_proxy import settings as proxy_settings

    if _service is None:
        return
    running = _service.settings
    settings = dataclasses.replace(proxy_settings.load(new, with_tls=False),
                                   client_tls=running.client_tls, backend_tls=running.backend_tls)
    host = _service.script_host
    if _lua_changed(old, new, running, settings):
        host = _script_host(new, runtime, settings)
    _service.reconfigure(settings, host)
    _service.recorder = _reloaded_recorder(_service.recorder, settings)
    if runtime.worker_id == 0:
        _say_what_we_use(settings, _service.port)


@chassis.hookimpl
def chassis_serve(runtime: Runtime) -> Awaitable[None] | None:
    if _service is None:
        return None
    return _serve(_service, runtime)


async def _serve(service: ProxyService, runtime: Runtime) -> None:
    await service.serve()
    service.start_monitor(runtime.control)  # the replication monitor, with --proxy-monitor-user


@chassis.hookimpl
def chassis_stop(runtime: Runtime, deadline: float) -> Awaitable[None] | None:
    if _service is None:
        return None
    return _service.stop(deadline)


@chassis.hookimpl
def chassis_shutdown(runtime: Runtime) -> None:
    global _service
    if _service is not None:
        _service.shutdown(keep_socket_file=runtime.succeeded_by is not None)
        _service = None


@chassis.hookimpl
def chassis_handover_out(runtime: Runtime, send: Send) -> tuple[int, int] | None:
    """An upgrade: resting relayed connections move to the new chassis with their server
    connections (chassis_proxy.handoff); the others drain here."""
    if _service is None:
        return None
    return _service.hand_over(send)


@chassis.hookimpl
def chassis_handover_in(runtime: Runtime, item: HandoverItem) -> Awaitable[None] | None:
    """A connection the chassis we replace handed over: relay it here."""
    if item.plugin != "proxy":
        return None
    if _service is None:
        item.close()
        return None
    return _service.adopt(item.state, item.fds)


#: ``runtime.offered(LUA_SCRIPT_HOST)``: see :class:`chassis_proxy.control.ConsoleScripts`.
LUA_SCRIPT_HOST = "proxy.lua_script_host"


@chassis.hookimpl
def chassis_offer(name: str, runtime: Runtime) -> Any:
    """What this worker's proxy offers the other plugins (the admin console).

    ``"proxy.lua_script_host"``: a factory of Lua script hosts whose scripts see this
    worker's backends as ``proxy.global.backends`` (``--admin-lua-script``).
    """
    if name != LUA_SCRIPT_HOST or _service is None:
        return None
    from chassis_proxy.control import ConsoleScripts

    return ConsoleScripts(runtime.config, _backends)


def _backends() -> list[BackendView]:
    return list(_service.backends) if _service is not None else []


@chassis.hookimpl
def chassis_control(runtime: Runtime, request: dict[str, Any]) -> dict[str, Any] | None:
    """Answer the admin plugin (through any worker) about this worker's backends and counters."""
    if request.get("plugin") != "proxy" or _service is None:
        return None
    from chassis_proxy.control import answer

    return answer(_service, request)


@chassis.hookimpl
def chassis_reopen_logs(runtime: Runtime) -> None:
    """SIGHUP: reopen --proxy-slow-query-log (logrotate moved it)."""
    if _service is not None and _service.recorder is not None and \
            _service.recorder.slowlog is not None:
        _service.recorder.slowlog.reopen()


@chassis.hookimpl
def chassis_metrics(runtime: Runtime) -> list[Any] | None:
    """This worker's proxy metrics (``--metrics-address``): see :mod:`chassis_proxy.metrics`."""
    if _service is None:
        return None
    from chassis_proxy.metrics import collect

    return list(collect(_service))


@chassis.hookimpl
def chassis_ready(runtime: Runtime) -> str | None:
    """Not ready while the listener is closed or no backend is up (``/readyz``)."""
    if _service is None:
        return None
    from chassis_proxy.metrics import not_ready

    return not_ready(_service)
