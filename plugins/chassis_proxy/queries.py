"""What the proxy records of each query it forwards: its digest and, when slow, a
slow-log entry.

:class:`QueryRecorder` is the worker's (``service.recorder``, None when both
``--proxy-query-digest`` and ``--proxy-slow-query-log`` are off, so that nothing is
tracked). :class:`ConnectionQueries` is one connection's: the command loop or the relay
calls :meth:`~ConnectionQueries.start` as a command goes to the server and
:meth:`~ConnectionQueries.finish` when the codec's :class:`ResponseTracker` says its
answer is complete; the tracker's rows, affected rows and error are what is recorded.

Recorded: COM_QUERY by its text, COM_STMT_EXECUTE by the text of its prepared statement
(remembered from the COM_STMT_PREPARE answer, per connection). The schema follows
COM_INIT_DB and ``USE db`` when the server accepts them.
"""

from __future__ import annotations

import time

from chassis_mysql.constants import Command
from chassis_mysql.response import ResponseTracker

from chassis_proxy.digests import DigestTable
from chassis_proxy.slowlog import SlowLog, entry
from chassis_proxy.state import ConnectionState

_QUERY = int(Command.QUERY)
_EXECUTE = int(Command.STMT_EXECUTE)
_PREPARE = int(Command.STMT_PREPARE)
_CLOSE = int(Command.STMT_CLOSE)
_INIT_DB = int(Command.INIT_DB)
_USE = b"use ?"
#: Prepared statements remembered per connection (a client that never closes its
#: statements is not followed past this; their executions are not recorded).
MAX_STATEMENTS = 1024


class QueryRecorder:
    """A worker's digest table and slow log (either may be off)."""

    def __init__(self, digests: DigestTable | None, slowlog: SlowLog | None) -> None:
        self.digests = digests
        self.slowlog = slowlog
        self.long_query_time = slowlog.long_query_time if slowlog is not None else 0.0

    def connection(self, state: ConnectionState) -> ConnectionQueries:
        return ConnectionQueries(self, state)

    def close(self) -> None:
        if self.slowlog is not None:
            self.slowlog.close()


class ConnectionQueries:
    """One connection's queries: the command on its way, the prepared statements, the schema."""

    __slots__ = ("command", "digests", "fp", "recorder", "schema", "slowlog", "started",
                 "state", "statements", "text", "tracker")

    def __init__(self, recorder: QueryRecorder, state: ConnectionState) -> None:
        self.recorder = recorder
        self.digests = recorder.digests
        self.slowlog = recorder.slowlog
        self.state = state
        self.schema: str | None = None  # the login's default_db until a USE changes it
        self.statements: dict[int, tuple[bytes, bytes | None]] = {}
        self.tracker: ResponseTracker | None = None
        self.command = 0
        self.text: bytes | None = None
        self.fp: bytes | None = None
        self.started = 0.0

    def start(self, payload: bytes, tracker: ResponseTracker) -> None:
        """The command ``payload`` (its first byte the COM_ code) goes to the server now."""
        command = payload[0]
        backend = self.state.backend
        if backend is not None:
            backend.stats.by_command[command] += 1
        self.tracker = tracker
        self.command = command
        self.fp = None
        if command == _QUERY:
            self.text = payload[1:]
        elif command == _EXECUTE:
            found = self.statements.get(int.from_bytes(payload[1:5], "little"))
            if found is None:
                self.text = None
            else:
                self.text, self.fp = found
        elif command in (_PREPARE, _INIT_DB):
            self.text = payload[1:]
        else:
            if command == _CLOSE:
                self.statements.pop(int.from_bytes(payload[1:5], "little"), None)
            self.text = None
        self.started = time.monotonic()

    def finish(self) -> None:
        """The answer to the command :meth:`start` saw is complete (or the server now waits
        for the client): record it."""
        tracker = self.tracker
        if tracker is None:
            return
        self.tracker = None
        seconds = time.monotonic() - self.started
        error = tracker.error_code
        backend = self.state.backend
        if backend is not None and tracker.expects_response:
            stats = backend.stats
            stats.latency.observe(seconds)
            if error:
                stats.server_errors += 1
        text = self.text
        if text is None:
            return
        command = self.command
        if command in (_QUERY, _EXECUTE):
            fp = self.fp
            digests = self.digests
            if digests is not None:
                if fp is None:
                    fp = digests.fingerprint(text)
                state = self.state
                schema = self.schema
                if schema is None:
                    schema = self.schema = state.client.default_db
                digests.record(fp, state.client.username, schema,
                               str(backend.addr) if backend is not None else "",
                               seconds, tracker.rows, tracker.affected_rows, error != 0)
            if self.slowlog is not None and seconds >= self.recorder.long_query_time:
                self._slow(text, seconds, tracker)
            if not error and command == _QUERY and text[:4].lower() in (b"use ", b"use`", b"use\t"):
                self._use(text)
        elif error:
            return
        elif command == _PREPARE:
            ok = tracker.prepare_ok
            if ok is not None and len(self.statements) < MAX_STATEMENTS:
                fp = self.digests.fingerprint(text) if self.digests is not None else None
                self.statements[ok.statement_id] = (text, fp)
        elif command == _INIT_DB:
            self.schema = text.decode("utf-8", "replace")

    def _use(self, text: bytes) -> None:
        words = text[3:].split(None, 1)
        if words:
            name = words[0].rstrip(b";")
            if name.startswith(b"`") and name.endswith(b"`"):
                name = name[1:-1].replace(b"``", b"`")
            self.schema = name.decode("utf-8", "replace")

    def _slow(self, text: bytes, seconds: float, tracker: ResponseTracker) -> None:
        assert self.slowlog is not None
        state = self.state
        src = state.client.src
        schema = self.schema if self.schema is not None else state.client.default_db
        self.slowlog.write(entry(
            now=time.time(), user=state.client.username or "unknown",
            host=src.address if src is not None else "",
            connection_id=state.connection_id, schema=schema, seconds=seconds,
            rows_sent=tracker.rows, rows_affected=tracker.affected_rows, query=text))
