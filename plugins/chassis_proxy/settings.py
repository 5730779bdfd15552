"""The proxy's configuration, checked once per worker: addresses, timeouts and TLS.

Built from :class:`chassis.config.Config` by :func:`load`; every problem becomes a
:class:`chassis.errors.StartupError` whose message names the option to fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from chassis.config import Config
from chassis.errors import StartupError
from chassis.listen import DEFAULT_BACKLOG, Address, parse_address
from chassis.proxy_protocol import Network, parse_networks
from chassis.secretfile import read_password_file
from chassis.tls import ListenerTLS, TLSMode
from chassis_proxy import tls
from chassis_proxy.tls import BackendTLS

DEFAULT_BACKEND = "127.0.0.1:3306"
MYSQL_PORT = 3306

# MySQL Proxy's built-in defaults; negative values given by the user are ignored.
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_READ_TIMEOUT = 28800.0
DEFAULT_WRITE_TIMEOUT = 28800.0
#: --proxy-max-allowed-packet: the largest command a script is shown (MariaDB's own default is 16 MiB).
DEFAULT_MAX_ALLOWED_PACKET = 64 * 1024 * 1024

#: Scripts shipped with chassis (``rw-splitting.lua``, the examples such as
#: ``query-logger.lua``): a bare ``--proxy-lua-script`` name that is not a file (relative
#: to --basedir) is looked up in these directories, in order.
BUNDLED_SCRIPTS = (
    Path(__file__).resolve().parent / "lualib",
    Path(__file__).resolve().parent / "lua" / "examples",
)

# Connection pool limits (see chassis_proxy.pool): per backend, idle connections kept
# and seconds one may stay idle.
DEFAULT_POOL_MAX_IDLE = 64
DEFAULT_POOL_MAX_IDLE_AGE = 300.0

#: --proxy-query-digest-max: distinct (digest, user, schema, backend) rows per worker.
DEFAULT_QUERY_DIGEST_MAX = 10_000
#: --proxy-long-query-time: MariaDB's long_query_time default.
DEFAULT_LONG_QUERY_TIME = 10.0


#: Options a running proxy cannot change; a reload (SIGHUP) keeps their running values
#: and logs them as "needs a restart": the listener, and TLS of both legs (see
#: :func:`needs_restart`). Every other proxy option is read again from a new
#: :class:`ProxySettings` (``ProxyService.reconfigure``): an option added here that is
#: turned into long-lived state at start-up must be listed too.
RESTART_OPTIONS = frozenset({"proxy_address", "no_proxy", "proxy_backlog",
                             "proxy_slow_query_log"})  # created before --user
#: Lua options that need a new script host (a new Lua state) when they change.
LUA_OPTIONS = ("proxy_lua_on_error", "lua_runtime", "lua_hook_timeout", "lua_max_memory")


def needs_restart(name: str) -> bool:
    """Whether option ``name`` (Python name) keeps its value until a restart."""
    return name in RESTART_OPTIONS or name.startswith(("proxy_ssl", "proxy_backend_ssl"))


@dataclass(frozen=True)
class BackendAddress:
    """One configured backend: where it is and whether it takes writes."""

    address: Address
    read_only: bool


@dataclass(frozen=True)
class MonitorSettings:
    """The replication monitor (``--proxy-monitor-*``): who it logs in as, how often it
    probes, and what the proxy does with what it learns (see chassis_proxy.monitor)."""

    user: str
    password: bytes = field(default=b"", repr=False)  # never logged
    interval: float = 1.0
    timeout: float = 1.0  # one probe: connect, log in, read
    roles_auto: bool = False  # --proxy-backend-roles=auto: the type follows read_only
    max_lag: float | None = None  # --proxy-max-replication-lag; None: reads ignore lag


@dataclass
class ProxySettings:
    """Everything a worker's proxy needs to know before it serves."""

    listen: Address | None  # None with --no-proxy
    backends: list[BackendAddress]
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    read_timeout: float = DEFAULT_READ_TIMEOUT
    write_timeout: float = DEFAULT_WRITE_TIMEOUT
    max_connections: int = 0
    max_allowed_packet: int = DEFAULT_MAX_ALLOWED_PACKET  # scripted mode only
    lua_script: Path | None = None
    #: The client leg's TLS (--proxy-ssl-*): CLIENT_SSL is advertised when offered.
    client_tls: ListenerTLS = field(default_factory=lambda: ListenerTLS(TLSMode.DISABLED))
    #: The backend leg's TLS (--proxy-backend-ssl-*).
    backend_tls: BackendTLS = field(default_factory=BackendTLS)
    pool_no_change_user: bool = False
    pool_max_idle: int = DEFAULT_POOL_MAX_IDLE
    pool_max_idle_age: float = DEFAULT_POOL_MAX_IDLE_AGE  # 0: no age limit
    health_check_interval: float = 4.0  # seconds between probes of DOWN backends; 0: none
    backlog: int = DEFAULT_BACKLOG  # listen backlog (--proxy-backlog)
    login_timeout: float = 10.0  # accept to logged in; 0: no limit
    idle_timeout: float = 0.0  # a logged-in client with no command running; 0: no limit
    monitor: MonitorSettings | None = None  # None: no --proxy-monitor-user
    #: Peers that must start with a PROXY header (--proxy-protocol-networks); no other may.
    proxy_protocol_networks: tuple[Network, ...] = ()
    #: PROXY header version sent first on server connections (--proxy-backend-proxy-protocol); 0: none.
    backend_proxy_protocol: int = 0

    query_digest: bool = True  # --proxy-query-digest
    query_digest_max: int = DEFAULT_QUERY_DIGEST_MAX  # rows kept before the overflow row
    slow_query_log: Path | None = None  # --proxy-slow-query-log
    long_query_time: float = DEFAULT_LONG_QUERY_TIME  # seconds (MariaDB's default)


def _timeout(config: Config, name: str, default: float) -> float:
    value = config.get(name)
    if value is None or value < 0:  # MySQL Proxy ignores negative values
        return default
    return float(value)


def parse_backends(rw: tuple[str, ...] | list[str], ro: tuple[str, ...] | list[str]) -> list[BackendAddress]:
    """The backend list in the order given: read/write ones first, then read-only ones.

    A duplicate address is an error, as in MySQL Proxy ("backend X is already known").
    """
    result: list[BackendAddress] = []
    seen: dict[Address, str] = {}
    items = [(text, False) for text in (rw or (DEFAULT_BACKEND,))] + [(text, True) for text in ro]
    for text, read_only in items:
        option = "--proxy-read-only-backend-addresses" if read_only else "--proxy-backend-addresses"
        try:
            address = parse_address(text, default_port=MYSQL_PORT)
        except ValueError as e:
            raise StartupError(f"{option}: {e}") from None
        if address.path is None and not address.host:
            address = Address(host="127.0.0.1", port=address.port)
        if address in seen:
            raise StartupError(
                f"{option}: backend {address} is already known (given as {seen[address]!r}); "
                "list each backend once"
            )
        seen[address] = text
        result.append(BackendAddress(address, read_only))
    return result


def lua_script_path(config: Config, value: str | None) -> Path | None:
    """``--proxy-lua-script``: a path (relative to --basedir), or the bare name of a
    bundled script such as ``rw-splitting.lua`` or ``query-logger.lua`` when no file of
    that name exists (each example's usage line names it so).

    A path that exists nowhere is returned as given: the script host's start-up check
    then stops the start naming it (``--proxy-lua-script: ...``, exit 3).
    """
    if not value:
        return None
    path = config.path(value)
    assert path is not None
    if path.exists() or "/" in value or value.startswith("~"):
        return path
    for directory in BUNDLED_SCRIPTS:
        bundled = directory / value
        if bundled.is_file():
            return bundled
    return path


def load_monitor(config: Config) -> MonitorSettings | None:
    """``--proxy-monitor-*``, ``--proxy-backend-roles`` and ``--proxy-max-replication-lag``;
    None without a monitor user (the options that need one then stop the start)."""
    user = config.get("proxy_monitor_user")
    roles = config.get("proxy_backend_roles") or "static"
    max_lag = config.get("proxy_max_replication_lag")
    password_file = config.get("proxy_monitor_password_file")
    if not user:
        needs = [name for name, given in (
            ("--proxy-backend-roles=auto", roles == "auto"),
            ("--proxy-max-replication-lag", max_lag is not None),
            ("--proxy-monitor-password-file", bool(password_file)),
        ) if given]
        if needs:
            raise StartupError(f"{', '.join(needs)} needs the replication monitor: "
                               "give --proxy-monitor-user (and --proxy-monitor-password-file)")
        return None
    password = ""
    if password_file:
        path = config.path(password_file)
        assert path is not None
        password = read_password_file(path, "--proxy-monitor-password-file")
    interval = config.get("proxy_monitor_interval")
    interval = 1.0 if interval is None else float(interval)
    if interval <= 0:
        raise StartupError(f"--proxy-monitor-interval={interval:g}: give a number of seconds above 0")
    timeout = config.get("proxy_monitor_timeout")
    timeout = min(interval, 1.0) if timeout is None else float(timeout)
    if timeout <= 0:
        raise StartupError(f"--proxy-monitor-timeout={timeout:g}: give a number of seconds above 0")
    if max_lag is not None and max_lag < 0:
        raise StartupError(f"--proxy-max-replication-lag={max_lag:g}: give 0 or more seconds")
    return MonitorSettings(user=str(user), password=password.encode(), interval=interval,
                           timeout=timeout, roles_auto=roles == "auto",
                           max_lag=None if max_lag is None else float(max_lag))


def load(config: Config, *, with_tls: bool = True) -> ProxySettings:
    """Check the proxy options and turn them into :class:`ProxySettings`.

    ``with_tls=False`` (a reload) leaves TLS at its defaults without reading a key or a
    certificate: TLS needs a restart, and its files may be readable by root only.
    """
    listen: Address | None = None
    if not config.get("no_proxy"):
        try:
            listen = parse_address(config.get("proxy_address") or ":4040", default_port=4040)
        except ValueError as e:
            raise StartupError(f"--proxy-address: {e}") from None
    backends = parse_backends(
        tuple(config.get("proxy_backend_addresses") or ()),
        tuple(config.get("proxy_read_only_backend_addresses") or ()),
    )

    client_tls, backend_tls = tls.load(config) if with_tls else (ListenerTLS(TLSMode.DISABLED),
                                                                 BackendTLS())

    try:
        networks = parse_networks(config.get("proxy_protocol_networks") or ())
    except ValueError as e:
        raise StartupError(f"--proxy-protocol-networks: {e}") from None
    backend_pp = config.get("proxy_backend_proxy_protocol") or "off"

    pool_max_idle = config.get("proxy_pool_max_idle")
    pool_max_idle_age = config.get("proxy_pool_max_idle_age")
    return ProxySettings(
        listen=listen,
        backends=backends,
        connect_timeout=_timeout(config, "proxy_connect_timeout", DEFAULT_CONNECT_TIMEOUT),
        read_timeout=_timeout(config, "proxy_read_timeout", DEFAULT_READ_TIMEOUT),
        write_timeout=_timeout(config, "proxy_write_timeout", DEFAULT_WRITE_TIMEOUT),
        max_connections=int(config.get("proxy_max_connections") or 0),
        max_allowed_packet=int(config.get("proxy_max_allowed_packet") or DEFAULT_MAX_ALLOWED_PACKET),
        lua_script=lua_script_path(config, config.get("proxy_lua_script")),
        client_tls=client_tls,
        backend_tls=backend_tls,
        pool_no_change_user=bool(config.get("proxy_pool_no_change_user")),
        pool_max_idle=DEFAULT_POOL_MAX_IDLE if pool_max_idle is None else max(0, int(pool_max_idle)),
        pool_max_idle_age=(DEFAULT_POOL_MAX_IDLE_AGE if pool_max_idle_age is None
                           else max(0.0, float(pool_max_idle_age))),
        health_check_interval=_timeout(config, "proxy_health_check_interval", 4.0),
        backlog=int(config.get("proxy_backlog") or DEFAULT_BACKLOG),
        login_timeout=_timeout(config, "proxy_login_timeout", 10.0),
        idle_timeout=_timeout(config, "proxy_idle_timeout", 0.0),
        monitor=load_monitor(config),
        proxy_protocol_networks=networks,
        backend_proxy_protocol={"off": 0, "v1": 1, "v2": 2}[backend_pp],

        query_digest=config.get("proxy_query_digest") != "off",
        query_digest_max=_int(config, "proxy_query_digest_max", DEFAULT_QUERY_DIGEST_MAX),
        slow_query_log=config.path(config.get("proxy_slow_query_log")),
        long_query_time=_timeout(config, "proxy_long_query_time", DEFAULT_LONG_QUERY_TIME),
    )


def _int(config: Config, name: str, default: int) -> int:
    value = config.get(name)
    return default if value is None else max(0, int(value))


def describe(settings: ProxySettings, port: int | None = None) -> str:
    """One log line summarising what this worker will do (``port``: the one bound, for :0)."""
    backends = ", ".join(f"{b.address}{' (ro)' if b.read_only else ''}" for b in settings.backends)
    listen = settings.listen
    if listen is not None and port is not None and listen.port != port:
        listen = Address(host=listen.host, port=port)
    parts = tls.describe(settings.client_tls, settings.backend_tls)
    if settings.proxy_protocol_networks:
        parts.append("PROXY headers from " + ",".join(map(str, settings.proxy_protocol_networks)))
    if settings.backend_proxy_protocol:
        parts.append(f"PROXY v{settings.backend_proxy_protocol} headers to backends")
    return (
        f"proxy listening on {listen}, backends: {backends}"
        + (f"; {', '.join(parts)}" if parts else "")
        + f"; pid {os.getpid()}"
    )
