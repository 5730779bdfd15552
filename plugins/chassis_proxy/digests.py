"""Query digests: per fingerprint and per (user, schema, backend), what the queries cost.

One :class:`DigestTable` per worker. Recording a query is a dict lookup and a few
additions on a plain :class:`Digest`; the fingerprint is computed once per distinct
query text seen lately (:data:`TEXT_CACHE`) and the digest id (an MD5) once per new row,
so the hot path pays for the normalisation only when a text is new. Rows, sums and
the top-N are built when the control channel or Prometheus asks.

Memory is bounded by ``--proxy-query-digest-max`` rows: once full, queries of new
shapes are added to one overflow row (digest ``"overflow"``) until ``truncate()``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from typing import Any, Protocol

from chassis_mysql.digest import digest_of, fingerprint

#: ``--proxy-query-digest-max``'s default: distinct (digest, user, schema, backend) rows.
DEFAULT_MAX_DIGESTS = 10_000
#: Raw query texts whose fingerprint is kept (a repeated identical text skips the work).
TEXT_CACHE = 4096
#: Longest digest text shown (the id is the MD5 of the whole fingerprint).
MAX_DIGEST_TEXT = 4096
#: Seconds after a query that its time is folded into its row at the latest (readers fold
#: first: what they see is exact).
FOLD_AFTER = 1.0
#: The digest id and text of the row that counts queries past the cap.
OVERFLOW = "overflow"
OVERFLOW_TEXT = "(queries of new shapes after --proxy-query-digest-max rows were kept)"


class Digest:
    """The counters of one (fingerprint, user, schema, backend).

    ``first_seen`` and ``last_seen`` are on the monotonic clock (the relay has read it for
    the query's time already); :meth:`DigestTable.as_rows` gives them as Unix times.
    """

    __slots__ = ("count", "errors", "first_seen", "last_seen", "max_time", "min_time",
                 "rows_affected", "rows_sent", "sum_time")

    def __init__(self, now: float) -> None:
        self.count = 0
        self.sum_time = 0.0
        self.min_time = float("inf")
        self.max_time = 0.0
        self.rows_sent = 0
        self.rows_affected = 0
        self.errors = 0
        self.first_seen = now
        self.last_seen = now


class Folder(Protocol):
    """Figures kept aside to be added to rows later (:class:`chassis_proxy.queries.Slot`)."""

    def fold(self) -> None: ...


#: (fingerprint, user, schema, backend)
Key = tuple[bytes, str, str, str]


class DigestTable:
    """One worker's digests (see the module docstring)."""

    def __init__(self, max_digests: int = DEFAULT_MAX_DIGESTS) -> None:
        self.max_digests = max_digests
        self.rows: dict[Key, Digest] = {}
        self._fingerprints: dict[bytes, bytes] = {}
        self._ids: dict[bytes, str] = {}
        self.overflow: dict[tuple[str, str, str], Digest] = {}
        #: Changes at each truncate: connections drop the rows they keep at hand.
        self.generation = 0
        #: Connections whose ``slots`` hold rows of this table (emptied at each truncate).
        self._watchers: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pending: list[Folder] = []

    def pending(self, folder: Folder) -> None:
        """``folder`` has figures for rows of this table: fold them within FOLD_AFTER."""
        if not self._pending:
            try:
                asyncio.get_running_loop().call_later(FOLD_AFTER, self.fold)
            except RuntimeError:  # no loop (a test): folded when read
                pass
        self._pending.append(folder)

    def fold(self) -> None:
        """Add what is kept aside to the rows (and the backends' counters): before reading."""
        pending, self._pending = self._pending, []
        for folder in pending:
            folder.fold()

    def watch(self, connection: Any) -> None:
        """``connection.slots`` (a dict) keeps rows at hand: empty it when they go."""
        self._watchers.add(connection)

    def fingerprint(self, text: bytes) -> bytes:
        """The text's fingerprint, from the cache when the same text came lately."""
        cache = self._fingerprints
        fp = cache.get(text)
        if fp is None:
            fp = fingerprint(text)
            if len(cache) >= TEXT_CACHE:
                cache.clear()
            cache[text] = fp
        return fp

    def row(self, fp: bytes, user: str, schema: str, backend: str) -> Digest:
        """The row of (``fp``, user, schema, backend), made if new (the overflow row when full).

        The caller adds the query's figures (as :meth:`record` does), and may keep the row
        at hand until :attr:`generation` changes.
        """
        key = (fp, user, schema, backend)
        d = self.rows.get(key)
        if d is None:
            now = time.monotonic()
            if len(self.rows) >= self.max_digests:
                who = (user, schema, backend)
                d = self.overflow.get(who)
                if d is None:
                    d = self.overflow[who] = Digest(now)
            else:
                d = self.rows[key] = Digest(now)
        return d

    def truncate(self) -> None:
        """Forget every row (``TRUNCATE query_digest``)."""
        self.fold()  # the backends' counters keep what the rows lose
        self.rows.clear()
        self.overflow.clear()
        self._ids.clear()
        self.generation += 1
        for connection in list(self._watchers):
            connection.slots.clear()

    def digest_id(self, fp: bytes) -> str:
        found = self._ids.get(fp)
        if found is None:
            found = self._ids[fp] = digest_of(fp)
        return found

    def as_rows(self) -> list[dict[str, Any]]:
        """Every row, as the control channel's ``digests`` op returns them."""
        self.fold()
        wall = time.time() - time.monotonic()  # monotonic -> Unix time
        out = [_row(self.digest_id(fp), _text(fp), user, schema, backend, d, wall)
               for (fp, user, schema, backend), d in self.rows.items()]
        out.extend(_row(OVERFLOW, OVERFLOW_TEXT, user, schema, backend, d, wall)
                   for (user, schema, backend), d in self.overflow.items())
        return out

    def top(self, n: int) -> list[tuple[str, str, Digest]]:
        """The ``n`` digests with the most time (summed over users, schemas, backends):
        ``(id, text, sums)``, for the metrics."""
        self.fold()
        by_fp: dict[bytes, Digest] = {}
        for (fp, _user, _schema, _backend), d in self.rows.items():
            total = by_fp.get(fp)
            if total is None:
                total = by_fp[fp] = Digest(d.first_seen)
            _add(total, d)
        ranked = sorted(by_fp.items(), key=lambda item: item[1].sum_time, reverse=True)[:n]
        return [(self.digest_id(fp), _text(fp), d) for fp, d in ranked]


def _add(total: Digest, d: Digest) -> None:
    total.count += d.count
    total.sum_time += d.sum_time
    total.min_time = min(total.min_time, d.min_time)
    total.max_time = max(total.max_time, d.max_time)
    total.rows_sent += d.rows_sent
    total.rows_affected += d.rows_affected
    total.errors += d.errors
    total.first_seen = min(total.first_seen, d.first_seen)
    total.last_seen = max(total.last_seen, d.last_seen)


def _text(fp: bytes) -> str:
    return fp[:MAX_DIGEST_TEXT].decode("utf-8", "replace")


def _row(digest: str, text: str, user: str, schema: str, backend: str, d: Digest,
         wall: float) -> dict[str, Any]:
    return {
        "digest": digest, "digest_text": text, "user": user, "schema": schema,
        "backend": backend, "count": d.count, "sum_time": d.sum_time,
        "min_time": d.min_time if d.count else 0.0, "max_time": d.max_time,
        "rows_sent": d.rows_sent, "rows_affected": d.rows_affected, "errors": d.errors,
        "first_seen": d.first_seen + wall, "last_seen": d.last_seen + wall,
    }
