"""From parsed options to running processes: checks, logging, daemon, angel or worker.

Everything that can fail because of the options fails here, in the launching process,
before anything forks, so the user sees the error on the terminal: ``--user`` (root
only, known user), ``--max-open-files``, the log file, a pid file locked by a running
chassis. Then ``--daemon`` detaches, and either an angel supervises the workers or,
with one worker and nothing to supervise, the process itself becomes the worker.

An angel runs with ``--keepalive``, with ``--event-threads`` above 1 (someone must
supervise N workers), and with ``--user`` together with ``--pid-file`` (the pid file
must be written and removed by a process that keeps root).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import socket
import sys

import pluggy

from chassis import (
    __version__,
    angel,
    daemon,
    limits,
    listenfds,
    logs,
    privileges,
    reload,
    signals,
    upgrade,
    worker,
)
from chassis.config import Config
from chassis.errors import ChassisError
from chassis.pidfile import PidFile
from chassis.readiness import Reporter
from chassis.sdnotify import Notifier

log = logging.getLogger("chassis")


def needs_angel(config: Config) -> bool:
    return bool(
        config.get("keepalive")
        or int(config.get("event_threads") or 1) > 1
        or (config.get("user") and config.get("pid_file"))
    )


def export_lua_paths(config: Config) -> None:
    """MySQL Proxy exports ``--lua-path``/``--lua-cpath`` for Lua's ``package`` to read."""
    if config.get("lua_path"):
        os.environ["LUA_PATH"] = str(config.lua_path)
    if config.get("lua_cpath"):
        os.environ["LUA_CPATH"] = str(config.lua_cpath)


def run(config: Config, pm: pluggy.PluginManager, reread: reload.Reread | None = None) -> int:
    """Run chassis with ``config``; returns the exit code of this process.

    ``reread`` reads the configuration again on SIGHUP (``cli.reparse``; None: SIGHUP
    only reopens the log file).
    """
    inheritance = upgrade.from_environment()  # started by a chassis on SIGUSR2
    listenfds.adopt_environment()  # systemd socket activation, or that chassis' listeners
    listenfds.close_surplus(int(config.get("event_threads") or 1))
    user = _target_user(config, inheritance)
    owner = user.owner if user is not None else None
    export_lua_paths(config)
    if config.get("max_open_files"):
        limits.set_max_open_files(int(config.max_open_files))
    umask = config.get("umask")
    if umask is None and config.get("daemon"):
        umask = daemon.DEFAULT_UMASK
    if umask is not None:
        os.umask(umask)
    chassis_logs = logs.Logs()
    chassis_logs.setup(
        level=config.get("log_level") or "message",
        path=config.path(config.get("log_file")),
        use_syslog=bool(config.get("log_use_syslog")),
        owner=owner,
        backtrace_on_crash=bool(config.get("log_backtrace_on_crash")),
    )
    pid_path = config.path(config.get("pid_file"))
    pidfile = PidFile(pid_path, owner) if pid_path is not None else None
    if pidfile is not None:
        pidfile.acquire()
    signals.block()
    launcher: Reporter = _Terminal(echo=not chassis_logs.on_stderr)
    if inheritance is not None:
        # The chassis we replace waits for our report; it was the daemon already.
        launcher = inheritance.reporter
        if config.get("daemon"):
            os.chdir("/")
    elif config.get("daemon"):
        if chassis_logs.on_stderr:
            # The daemon's stderr is /dev/null: say so while there is a terminal.
            print("chassis: --daemon without --log-file or --log-use-syslog: the daemon's "
                  "log is discarded (its stderr is /dev/null); give --log-file=FILE to keep it",
                  file=sys.stderr, flush=True)
        result = daemon.daemonize(umask)
        if isinstance(result, int):
            return result  # the launching shell's process: the daemon reported
        launcher = result
    notifier = Notifier.from_environment()
    os.environ.pop("NOTIFY_SOCKET", None)  # only the main process talks to systemd
    log.log(logs.MESSAGE, "chassis %s started (plugins: %s)%s", __version__,
            ", ".join(config.plugins) or "none",
            f", taking over from pid {inheritance.old_pid}" if inheritance is not None else "")
    if listenfds.inherited():
        log.info("inherited %d listening socket(s): %s", len(listenfds.inherited()),
                 ", ".join(str(s.key) for s in listenfds.inherited()))
    handoff = inheritance.handoff if inheritance is not None else None
    try:
        if needs_angel(config):
            return angel.Angel(config, pm, chassis_logs, user=user, pidfile=pidfile,
                               notifier=notifier, launcher=launcher, reread=reread,
                               handoff=handoff).run()
        return _run_single(config, pm, chassis_logs, user, pidfile, notifier, launcher, reread,
                           handoff)
    except ChassisError as e:
        _report_late_failure(launcher, str(e), e.exit_code)
        raise
    except Exception as e:
        log.log(logs.ERROR, "internal error: %s", e, exc_info=True)
        _report_late_failure(launcher, f"internal error: {type(e).__name__}: {e}", 1)
        raise
    finally:
        if pidfile is not None:
            pidfile.release()
        chassis_logs.flush()


def _target_user(config: Config, inheritance: upgrade.Inheritance | None
                 ) -> privileges.TargetUser | None:
    """``--user``, checked; None when there is none, or when this chassis was started by
    an upgrade from a single process that already runs as that user (it cannot switch
    again, and need not)."""
    name = config.get("user")
    if not name:
        return None
    if inheritance is not None and os.geteuid() != 0:
        with contextlib.suppress(KeyError):
            if pwd.getpwnam(name).pw_uid == os.geteuid():
                return None
    return privileges.lookup(name)


def _report_late_failure(launcher: Reporter, message: str, exit_code: int) -> None:
    """A failure after daemonizing: the daemon's stderr is /dev/null, so log and tell."""
    if isinstance(launcher, _Terminal):
        return  # cli.main prints it on the terminal
    log.log(logs.CRITICAL, "%s", message)
    launcher.failed(message, exit_code)


class _Terminal(Reporter):
    """In the foreground, a start-up error also reaches the terminal when logs go elsewhere."""

    def __init__(self, echo: bool) -> None:
        super().__init__(None)
        self.echo = echo

    def failed(self, message: str, exit_code: int) -> None:
        if self.echo:
            print(f"chassis: {message}", file=sys.stderr, flush=True)
            self.echo = False


def _run_single(
    config: Config,
    pm: pluggy.PluginManager,
    chassis_logs: logs.Logs,
    user: privileges.TargetUser | None,
    pidfile: PidFile | None,
    notifier: Notifier,
    launcher: Reporter,
    reread: reload.Reread | None = None,
    handoff: socket.socket | None = None,
) -> int:
    """No angel: this process is the worker and does the main process's duties."""
    logs.set_role("worker")

    def on_ready() -> None:
        if pidfile is not None:
            pidfile.write(os.getpid())
        notifier.ready("serving")

    return worker.run(worker.WorkerSetup(
        config=config, pm=pm, logs=chassis_logs, reporter=launcher, user=user,
        on_ready=on_ready, on_stopping=notifier.stopping, reread=reread,
        pidfile=pidfile, notifier=notifier, handoff=handoff,
    ))
