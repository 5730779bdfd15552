"""The chassis' own options: MySQL Proxy 0.8.5's names and meanings, plus ours."""

from __future__ import annotations

import click

LOG_LEVELS = ("error", "critical", "warning", "message", "info", "debug")


def _umask(value: str | int | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        mask = int(str(value), 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal number such as 027") from None
    if not 0 <= mask <= 0o777:
        raise click.BadParameter(f"{value!r} is out of range 000-777")
    return mask


class UmaskType(click.ParamType):
    name = "octal"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        try:
            result = _umask(value)  # type: ignore[arg-type]
        except click.BadParameter as e:
            self.fail(e.message, param, ctx)
        assert result is not None
        return result


def core_options() -> list[click.Option]:
    """Options every chassis has, whatever plugins are loaded."""
    return [
        click.Option(["--defaults-file"], metavar="FILE",
                     help="Read options from FILE, group [mysql-proxy] (command line only)."),
        click.Option(["--verbose-shutdown"], is_flag=True,
                     help="Always log the exit code when shutting down."),
        click.Option(["--daemon"], is_flag=True,
                     help="Start in the background; returns once the daemon serves."),
        click.Option(["--user"], metavar="USER",
                     help="Run as USER after binding ports (root only)."),
        click.Option(["--basedir"], metavar="DIR",
                     help="Absolute base directory for relative paths (default: the current directory)."),
        click.Option(["--pid-file"], metavar="FILE", help="Write the PID to FILE (locked while running)."),
        click.Option(["--plugin-dir"], metavar="DIR",
                     help="Accepted for compatibility; plugins are found by entry point (group chassis.plugins)."),
        click.Option(["--plugins"], multiple=True, metavar="NAMES",
                     help="Plugins to load; repeatable and comma-separated (default: proxy)."),
        click.Option(["--log-level"], type=click.Choice(LOG_LEVELS), default="message",
                     show_default=True, help="Least important level to log."),
        click.Option(["--log-file"], metavar="FILE", help="Log to FILE instead of stderr; SIGHUP reopens it."),
        click.Option(["--log-use-syslog"], is_flag=True, help="Log to syslog."),
        click.Option(["--log-backtrace-on-crash"], is_flag=True,
                     help="Dump the Python tracebacks of all threads on a fatal signal."),
        click.Option(["--keepalive"], is_flag=True,
                     help="Run an angel process that restarts a crashed worker."),
        click.Option(["--watchdog-timeout"], type=click.FloatRange(min=0), default=30.0,
                     show_default=True, metavar="SECONDS",
                     help="With --keepalive: a worker whose event loop has not run for this "
                          "long is killed (tracebacks dumped with --log-backtrace-on-crash) "
                          "and restarted (0: off)."),
        click.Option(["--max-open-files"], type=click.IntRange(min=0), default=0,
                     help="Set the open files limit (RLIMIT_NOFILE) to N: raised, with the hard limit "
                          "when allowed, or lowered (0: leave as is)."),
        click.Option(["--event-threads"], type=click.IntRange(min=1), default=1, show_default=True,
                     help="Number of worker processes, each with its own event loop."),
        click.Option(["--lua-path"], metavar="PATH", help="Lua package.path (exported as LUA_PATH)."),
        click.Option(["--lua-cpath"], metavar="PATH", help="Lua package.cpath (exported as LUA_CPATH)."),
        click.Option(["--umask"], type=UmaskType(), default=None,
                     help="Octal umask for created files (default 027 with --daemon, else inherited)."),
        click.Option(["--metrics-address"], metavar="HOST:PORT", default=None,
                     help="Serve Prometheus metrics (/metrics), /healthz and /readyz over HTTP "
                          "on HOST:PORT, for every worker (default: off)."),
        click.Option(["--shutdown-timeout"], type=click.FloatRange(min=0), default=30.0,
                     show_default=True,
                     help="Seconds a graceful stop (SIGTERM) waits for running work."),
    ]


#: Options read before everything else and never from the defaults-file.
CLI_ONLY = frozenset({"defaults-file", "version", "help"})
