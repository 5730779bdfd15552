"""``--proxy-slow-query-log``: queries slower than ``--proxy-long-query-time``, in
MariaDB's slow-log format, so that ``pt-query-digest`` and ``mariadb-dumpslow`` read it.

One entry per query, written with a single ``write`` on a descriptor opened with
``O_APPEND``: the workers of ``--event-threads`` share the file and each entry lands
whole. SIGHUP reopens the path (``chassis_reopen_logs``), as it does the chassis' own
log, so logrotate can move the file away.

An entry::

    # Time: 261204 10:27:30
    # User@Host: app[app] @ 127.0.0.1 [127.0.0.1]
    # Thread_id: 12  Schema: shop  QC_hit: No
    # Query_time: 1.204518  Lock_time: 0.000000  Rows_sent: 1  Rows_examined: 0
    # Rows_affected: 0
    use shop;
    SET timestamp=1796380050;
    SELECT SLEEP(1.2);

The proxy cannot know the server's lock time nor how many rows it examined: both are 0.
Query_time runs from the command's sending to the backend to the end of its answer.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from chassis.errors import StartupError

log = logging.getLogger("chassis.proxy")


def entry(*, now: float, user: str, host: str, connection_id: int, schema: str,
          seconds: float, rows_sent: int, rows_affected: int, query: bytes) -> bytes:
    """One slow-log entry (see the module docstring), ready to write."""
    local = time.localtime(now)
    head = (
        f"# Time: {time.strftime('%y%m%d %H:%M:%S', local)}\n"
        f"# User@Host: {user}[{user}] @ {host} [{host}]\n"
        f"# Thread_id: {connection_id}  Schema: {schema}  QC_hit: No\n"
        f"# Query_time: {seconds:.6f}  Lock_time: 0.000000  Rows_sent: {rows_sent}"
        f"  Rows_examined: 0\n"
        f"# Rows_affected: {rows_affected}\n"
        + (f"use {schema};\n" if schema else "")
        + f"SET timestamp={int(now)};\n"
    ).encode("utf-8", "replace")
    return head + query.rstrip().rstrip(b";").rstrip() + b";\n"


class SlowLog:
    """The open slow log of one worker."""

    def __init__(self, path: Path, long_query_time: float, owner: tuple[int, int] | None = None) -> None:
        self.path = path
        #: Seconds from which a query is written (0: every query).
        self.long_query_time = long_query_time
        self.owner = owner
        self.fd = self._open()
        self._failing = False

    def _open(self) -> int:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as e:
            raise StartupError(f"--proxy-slow-query-log: cannot open {self.path}: {e.strerror} "
                               "(check the path and the directory's permissions)") from None
        if self.owner is not None and os.geteuid() == 0:
            try:
                os.fchown(fd, *self.owner)  # the workers reopen it after --user
            except OSError as e:
                os.close(fd)
                raise StartupError(f"--proxy-slow-query-log: cannot chown {self.path} to uid "
                                   f"{self.owner[0]}: {e.strerror}") from None
        return fd

    def write(self, data: bytes) -> None:
        """Append one entry in one write; a failure is logged once until writes work again."""
        try:
            os.write(self.fd, data)
        except OSError as e:
            if not self._failing:
                self._failing = True
                log.error("cannot write the slow query log %s: %s; entries are lost until "
                          "it works again", self.path, e.strerror)
            return
        self._failing = False

    def reopen(self) -> None:
        """Open the path again (after logrotate moved the file), then close the old one."""
        try:
            fd = self._open()
        except StartupError as e:
            log.error("%s; still writing to the old file", e)
            return
        old, self.fd = self.fd, fd
        os.close(old)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
