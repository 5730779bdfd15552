"""Logging the MySQL Proxy way: ``2026-11-24 23:00:00: (message) [worker 123] text``.

MySQL Proxy orders its levels ``error > critical > warning > message > info > debug``
(GLib's: ``error`` is fatal, ``critical`` is a serious error the program survives), and
``--log-level`` names the least important level written. Python's ``logging.ERROR``
is therefore shown as ``critical`` and ``logging.CRITICAL`` as ``error``; ``message``
sits between info and warning. Use the constants below rather than guessing.

Every process (launcher, angel, workers) writes its own lines to the same destination;
the role and pid in each line say who wrote it. A log file is reopened on SIGHUP (for
logrotate) and chowned to ``--user`` so that a worker that dropped privileges can
reopen it too.
"""

from __future__ import annotations

import faulthandler
import logging
import logging.handlers
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

from chassis.errors import ChassisError

DEBUG = logging.DEBUG
INFO = logging.INFO
MESSAGE = 25
WARNING = logging.WARNING
CRITICAL = logging.ERROR  # MySQL Proxy's "critical": a serious error, the process goes on
ERROR = logging.CRITICAL  # MySQL Proxy's "error": fatal

LEVELS: dict[str, int] = {
    "debug": DEBUG,
    "info": INFO,
    "message": MESSAGE,
    "warning": WARNING,
    "critical": CRITICAL,
    "error": ERROR,
}

# MySQL Proxy's syslog mapping (chassis-log.c).
_SYSLOG_PRIORITY = {
    ERROR: "critical",
    CRITICAL: "error",
    WARNING: "warning",
    MESSAGE: "notice",
    INFO: "info",
    DEBUG: "debug",
}

LINE_FORMAT = "%(asctime)s: (%(levelname)s) [%(role)s %(process)d] %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
#: syslog adds the time itself; the tag and pid come first, as syslog(3) writes them.
SYSLOG_FORMAT = "chassis[%(process)d]: (%(levelname)s) [%(role)s] %(message)s"

_role = "chassis"

for _name, _level in LEVELS.items():
    logging.addLevelName(_level, _name)

log = logging.getLogger("chassis")


def set_role(role: str) -> None:
    """Name this process in every line from now on: ``angel``, ``worker``, ``worker#2``."""
    global _role
    _role = role


class _RoleFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.role = _role
        return True


class LogFile(logging.StreamHandler):
    """An append-only log file that SIGHUP closes and opens again at the same path."""

    def __init__(self, path: Path, owner: tuple[int, int] | None = None) -> None:
        self.path = path
        self.owner = owner
        super().__init__(self._open())

    def _open(self) -> IO[str]:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o660)
        except OSError as e:
            raise ChassisError(
                f"cannot open log file {self.path}: {e.strerror} (check --log-file and "
                "the directory's permissions)"
            ) from None
        if self.owner is not None and os.geteuid() == 0:
            try:
                os.fchown(fd, *self.owner)
            except OSError as e:
                os.close(fd)
                raise ChassisError(
                    f"cannot chown log file {self.path} to uid {self.owner[0]}: {e.strerror}"
                ) from None
        return os.fdopen(fd, "a", buffering=1, encoding="utf-8", errors="backslashreplace")

    def reopen(self) -> None:
        """Close the file and open the path again (a rotated file is left alone)."""
        self.acquire()
        try:
            new = self._open()
            old = self.stream
            self.setStream(new)
            old.close()
        finally:
            self.release()


class _SysLog(logging.handlers.SysLogHandler):
    def mapPriority(self, levelName: str) -> str:
        return _SYSLOG_PRIORITY.get(logging.getLevelName(levelName), "warning")


class Logs:
    """The logging set-up of one chassis process, with what SIGHUP needs to reopen."""

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None
        self.backtrace_on_crash = False

    @property
    def file(self) -> LogFile | None:
        return self.handler if isinstance(self.handler, LogFile) else None

    @property
    def on_stderr(self) -> bool:
        return self.file is None and not isinstance(self.handler, _SysLog)

    def setup(
        self,
        *,
        level: str,
        path: Path | None = None,
        use_syslog: bool = False,
        owner: tuple[int, int] | None = None,
        backtrace_on_crash: bool = False,
    ) -> None:
        handler: logging.Handler
        if path is not None:
            handler = LogFile(path, owner)
        elif use_syslog:
            handler = _syslog_handler()
        else:
            handler = logging.StreamHandler(sys.stderr)
        if isinstance(handler, _SysLog):
            handler.setFormatter(logging.Formatter(SYSLOG_FORMAT))
        else:
            handler.setFormatter(logging.Formatter(LINE_FORMAT, DATE_FORMAT))
        handler.addFilter(_RoleFilter())
        root = logging.getLogger()
        for old in list(root.handlers):
            root.removeHandler(old)
        root.addHandler(handler)
        root.setLevel(LEVELS[level])
        self.handler = handler
        self.backtrace_on_crash = backtrace_on_crash
        self._enable_faulthandler()

    def _enable_faulthandler(self) -> None:
        if not self.backtrace_on_crash:
            return
        stream: Any = self.file.stream if self.file is not None else sys.stderr
        faulthandler.enable(file=stream, all_threads=True)
        # The angel's watchdog asks a hung worker for its tracebacks with SIGQUIT.
        faulthandler.register(signal.SIGQUIT, file=stream, all_threads=True, chain=False)

    def set_level(self, level: str) -> None:
        """``--log-level`` changed by a reload."""
        logging.getLogger().setLevel(LEVELS[level])

    def reopen_after_sighup(self) -> None:
        """What SIGHUP does: MySQL Proxy's two lines around a reopen of the log file."""
        if self.file is None:
            log.log(MESSAGE, "received a SIGHUP, no log file to reopen")
            return
        log.log(MESSAGE, "received a SIGHUP, closing log file")
        try:
            self.file.reopen()
        except ChassisError as e:
            log.log(CRITICAL, "%s; still writing to the old file", e)
            return
        self._enable_faulthandler()
        log.log(MESSAGE, "re-opened log file after SIGHUP")

    def flush(self) -> None:
        if self.handler is not None:
            self.handler.flush()


#: Where syslog listens; ``CHASSIS_SYSLOG_SOCKET`` overrides it (tests, odd systems).
SYSLOG_SOCKETS = ("/dev/log", "/var/run/syslog")


def _syslog_handler() -> logging.Handler:
    override = os.environ.get("CHASSIS_SYSLOG_SOCKET")
    candidates = (override,) if override else SYSLOG_SOCKETS
    for address in candidates:
        if os.path.exists(address):
            try:
                return _SysLog(address=address, facility=_SysLog.LOG_DAEMON)
            except OSError as e:
                raise ChassisError(f"--log-use-syslog: cannot connect to {address}: "
                                   f"{e.strerror}") from None
    raise ChassisError(f"--log-use-syslog: no syslog socket ({', '.join(candidates)}); is a "
                       "syslog daemon or journald running? Else use --log-file")
