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
from bisect import bisect_left

from chassis_mysql.constants import Command
from chassis_mysql.response import ResponseTracker

from chassis_proxy.digests import Digest, DigestTable
from chassis_proxy.slowlog import SlowLog, entry
from chassis_proxy.state import ConnectionState
from chassis_proxy.stats import LATENCY_BOUNDS, Counters

_QUERY = int(Command.QUERY)
_EXECUTE = int(Command.STMT_EXECUTE)
_PREPARE = int(Command.STMT_PREPARE)
_CLOSE = int(Command.STMT_CLOSE)
_INIT_DB = int(Command.INIT_DB)
#: Commands after which the server has forgotten the connection's prepared statements.
_FORGETTING = frozenset({int(Command.CHANGE_USER), int(Command.RESET_CONNECTION)})
_USES = (b"use ", b"use`", b"use\t", b"use\n")
#: Digest rows a connection keeps at hand (see ConnectionQueries).
MAX_CACHED = 64
#: Slots a connection keeps (see Slot).
MAX_SLOTS = 256
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


class Slot:
    """A command a connection sends again and again (a prepared statement's execution, or
    one exact query text), as the relay records it without asking anything else: its
    digest row and its backend's counters at hand, and what the codec said of its last
    result set: ``prefix``, its bytes before the rows (column count, definitions; b""
    until one is seen), which need not be read again when the next answer starts with
    them (:func:`chassis_mysql.summary.rows_from`), and when it had at most one row its
    ``size``, ``head`` and ``tail`` (:func:`chassis_mysql.summary.outline`): an answer
    of that size, head and tail has ``rows`` rows, no error, and nothing to walk.

    The relay appends each query's time to ``times`` and sets ``last`` (and adds the
    figures of an answer it had to read, see :meth:`read`); :meth:`fold` adds the rest
    to the digest row (count, sum, min, max, rows of the answers shaped as the last) and
    the backend's histogram and commands, with a few C-level passes (sum, min, max,
    sorted, bisect) instead of a dozen additions per query. The table folds within
    :data:`~chassis_proxy.digests.FOLD_AFTER`, and before anyone reads.

    Valid while the connection's user, schema and backend stay and the digest table is
    not truncated: whoever changes those empties the connection's ``slots``.
    """

    __slots__ = ("command", "digest", "head", "head_at", "last", "prefix", "read_count", "rows",
                 "size", "stats", "table", "tail", "tail_at", "text", "times")

    def __init__(self, table: DigestTable, digest: Digest, stats: Counters, command: int,
                 text: bytes) -> None:
        self.table = table
        self.digest = digest
        self.stats = stats
        self.command = command
        self.text = text
        self.times: list[float] = []
        self.last = 0.0  # when the last query was seen (monotonic)
        self.read_count = 0  # answers in times whose rows were added by read()
        self.prefix = b""
        self.size = -1  # no outline
        self.head = self.tail = b""
        self.head_at = self.tail_at = slice(0)
        self.rows = 0

    def shape(self, head: bytes, tail: bytes, size: int, rows: int) -> None:
        """Answers of ``size`` bytes that begin with ``head`` and end with ``tail`` have
        ``rows`` rows from now on (folds what was counted under the last shape)."""
        if self.times:
            self.fold()
        self.head, self.tail, self.size, self.rows = head, tail, size, rows
        self.head_at = slice(0, len(head))
        self.tail_at = slice(size - len(tail), size)

    def read(self, rows: int, affected: int, error: int) -> None:
        """The figures of an answer the codec read (not shaped as the last one)."""
        d = self.digest
        d.rows_sent += rows
        d.rows_affected += affected
        self.read_count += 1
        if error:
            d.errors += 1
            self.stats.server_errors += 1

    def pend(self) -> None:
        """The first time in ``times`` since the last fold: have it folded."""
        self.table.pending(self)

    def fold(self) -> None:
        times = self.times
        n = len(times)
        if not n:
            return
        d = self.digest
        total = sum(times)
        d.count += n
        d.sum_time += total
        d.min_time = min(d.min_time, min(times))
        d.max_time = max(d.max_time, max(times))
        d.rows_sent += self.rows * (n - self.read_count)
        d.last_seen = max(d.last_seen, self.last)
        self.read_count = 0
        stats = self.stats
        stats.by_command[self.command] += n
        stats.latency.observe_sorted(sorted(times), total)
        del times[:]


class ConnectionQueries:
    """One connection's queries: the command on its way, the prepared statements, the schema.

    Also a cache of the digest rows this connection adds to (by fingerprint), valid while
    the user, the schema and the backend stay and the table is not truncated: a repeated
    query then costs a dict lookup and a few additions.
    """

    __slots__ = ("__weakref__", "_backend", "_cache", "_generation", "_seen", "_user", "_who",
                 "command", "digests", "fp", "long_query_time", "recorder", "schema", "slots",
                 "slowlog", "started", "state", "statements", "text", "tracker")

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
        self._cache: dict[bytes, Digest] = {}
        self._generation = -1
        self._backend: object = None
        self._user: str | None = None
        self._who = ("", "", "")
        #: By the client's packet that starts the command (COM_STMT_EXECUTE: its first
        #: five bytes, the command and the statement id; COM_QUERY: all of it).
        self.slots: dict[bytes, Slot] = {}
        #: Keys of :attr:`slots` seen once: a command gets its slot when it comes again (a
        #: client that connects, asks one query and quits makes none). None until the first;
        #: the table watches the connection from its first slot on (see DigestTable.watch).
        self._seen: set[bytes] | None = None
        #: Queries that take this long are written to the slow log (never without one).
        self.long_query_time = recorder.long_query_time if self.slowlog is not None else float("inf")

    def start(self, payload: bytes, tracker: ResponseTracker, started: float = 0.0) -> None:
        """The command ``payload`` (its first byte the COM_ code) goes to the server now
        (or went at ``started``, on the monotonic clock)."""
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
                self.slots.pop(payload[:5], None)
            elif command in _FORGETTING:
                self.statements.clear()
                self.slots.clear()
            self.text = None
        self.started = started or time.monotonic()

    def finish(self) -> None:
        """The answer to the command :meth:`start` saw is complete (or the server now waits
        for the client): record it."""
        tracker = self.tracker
        if tracker is None:
            return
        self.tracker = None
        now = time.monotonic()
        seconds = now - self.started
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
            self._record(command, text, self.fp, seconds, tracker.rows, tracker.affected_rows,
                         error, now)
        elif error:
            return
        elif command == _PREPARE:
            ok = tracker.prepare_ok
            if ok is not None and len(self.statements) < MAX_STATEMENTS:
                fp = self.digests.fingerprint(text) if self.digests is not None else None
                self.statements[ok.statement_id] = (text, fp)
        elif command == _INIT_DB:
            self.schema = text.decode("utf-8", "replace")
            self._generation = -1  # the cached rows are the old schema's
            self.slots.clear()

    def slot(self, packet: bytes) -> Slot | None:
        """A slot for the COM_QUERY or COM_STMT_EXECUTE ``packet`` (the client's buffer that
        started it, header included), kept in :attr:`slots` under ``key``; None when the
        command cannot have one (digests off, an unknown statement, a USE, no room) or is
        seen for the first time."""
        digests = self.digests
        backend = self.state.backend
        if digests is None or backend is None or len(self.slots) >= MAX_SLOTS:
            return None
        if packet[4] == _QUERY:
            key = packet
            if not self._again(key):
                return None
            text = packet[5:4 + (packet[0] | (packet[1] << 8) | (packet[2] << 16))]
            if len(text) + 5 != len(packet) or text[:4].lower() in _USES:
                return None
            fp = digests.fingerprint(text)
        else:
            found = self.statements.get(int.from_bytes(packet[5:9], "little"))
            if found is None or found[1] is None:
                return None
            key = packet[4:9]
            if not self._again(key):
                return None
            text, fp = found[0], found[1]
        slots = self.slots
        if not slots:
            digests.watch(self)  # (a no-op when it is watched already)
        slot = slots[key] = Slot(digests, self._row(digests, fp), backend.stats, packet[4], text)
        return slot

    def _again(self, key: bytes) -> bool:
        """Whether the command ``key`` was seen before (else it is remembered)."""
        seen = self._seen
        if seen is None:
            self._seen = {key}
            return False
        if key in seen:
            return True
        if len(seen) >= MAX_SLOTS:
            seen.clear()
        seen.add(key)
        return False

    def relayed(self, packet: bytes, started: float, rows: int, affected: int, error: int) -> None:
        """The relay's fast path: a COM_QUERY or COM_STMT_EXECUTE (``packet``: the client's
        buffer that started it, header included) whose whole answer came in one buffer."""
        now = time.monotonic()
        seconds = now - started
        command = packet[4]
        backend = self.state.backend
        if backend is not None:
            stats = backend.stats
            stats.by_command[command] += 1
            latency = stats.latency  # Latency.observe, inlined
            latency.counts[bisect_left(LATENCY_BOUNDS, seconds)] += 1
            latency.sum += seconds
            if error:
                stats.server_errors += 1
        if command == _QUERY:
            self._record(command, packet[5:4 + (packet[0] | (packet[1] << 8) | (packet[2] << 16))],
                         None, seconds, rows, affected, error, now)
        else:
            found = self.statements.get(int.from_bytes(packet[5:9], "little"))
            if found is not None:
                self._record(command, found[0], found[1], seconds, rows, affected, error, now)

    def _record(self, command: int, text: bytes, fp: bytes | None, seconds: float, rows: int,
                affected: int, error: int, now: float = 0.0) -> None:
        digests = self.digests
        if digests is not None:
            d = self._row(digests, fp if fp is not None else digests.fingerprint(text))
            d.count += 1
            d.sum_time += seconds
            if seconds < d.min_time:
                d.min_time = seconds
            if seconds > d.max_time:
                d.max_time = seconds
            d.rows_sent += rows
            d.rows_affected += affected
            if error:
                d.errors += 1
            d.last_seen = now or time.monotonic()
        if seconds >= self.long_query_time:
            self.slow(text, seconds, rows, affected)
        if not error and command == _QUERY and text[:4].lower() in _USES:
            self._use(text)

    def _row(self, digests: DigestTable, fp: bytes) -> Digest:
        """The digest row of ``fp`` for this connection's user, schema and backend."""
        state = self.state
        if (digests.generation != self._generation or state.backend is not self._backend
                or state.client.username is not self._user):
            self._forget()
        d = self._cache.get(fp)
        if d is None:
            d = digests.row(fp, *self._who)
            if len(self._cache) < MAX_CACHED:
                self._cache[fp] = d
        return d

    def _forget(self) -> None:
        """The cached rows no longer fit (a new user, schema or backend, or a truncate)."""
        state = self.state
        self._cache.clear()
        self.slots.clear()
        self._generation = self.digests.generation if self.digests is not None else -1
        backend = state.backend
        self._backend = backend
        self._user = state.client.username
        if self.schema is None:
            self.schema = state.client.default_db
        self._who = (state.client.username, self.schema,
                     backend.address.name if backend is not None else "")  # str(backend.addr)

    def _use(self, text: bytes) -> None:
        words = text[3:].split(None, 1)
        if words:
            name = words[0].rstrip(b";")
            if name.startswith(b"`") and name.endswith(b"`"):
                name = name[1:-1].replace(b"``", b"`")
            self.schema = name.decode("utf-8", "replace")
            self._generation = -1  # the cached rows are the old schema's
            self.slots.clear()

    def slow(self, text: bytes, seconds: float, rows: int, affected: int) -> None:
        """Write the query ``text`` to the slow log."""
        assert self.slowlog is not None
        state = self.state
        src = state.client.src
        schema = self.schema if self.schema is not None else state.client.default_db
        self.slowlog.write(entry(
            now=time.time(), user=state.client.username or "unknown",
            host=src.address if src is not None else "",
            connection_id=state.connection_id, schema=schema, seconds=seconds,
            rows_sent=rows, rows_affected=affected, query=text))
