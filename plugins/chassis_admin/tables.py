"""The admin tables: their columns and how their rows come from the workers' answers.

Pure functions over the answers of the control channel (one answer per worker, each
with ``worker``, 0-based, and ``pid``), so each table is tested on a given answer. The
console (:mod:`chassis_admin.console`) asks the workers for what a statement needs and
:mod:`chassis_admin.snapshot` loads the rows into SQLite. ``worker`` columns count from
1, as the log lines (``worker#2``) and the metrics (``worker="2"``) do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chassis_admin import sql, variables

Row = tuple[Any, ...]
#: Column name and SQLite type (INTEGER, REAL, TEXT, or "" for none).
Column = tuple[str, str]
#: Answers by control op (``"proxy.backends"``, ``"admin.worker"``): one per worker.
Answers = dict[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Source:
    """What a table is built from: the workers' answers and this worker's configuration."""

    answers: Answers
    config_values: dict[str, Any]
    config_sources: dict[str, str]


@dataclass(frozen=True)
class Table:
    name: str
    description: str
    #: Control ops (``plugin.op``) whose answers the rows need.
    needs: tuple[str, ...]
    build: Callable[[Source], tuple[Sequence[Column], list[Row]]]
    #: Ops whose answers fill some columns when their plugin is loaded (NULL otherwise).
    optional: tuple[str, ...] = ()


_STATE_ORDER = ("up", "unknown", "offline", "down")


def merge_backends(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per backend over all workers: counters summed, the most hopeful state
    (``offline`` wins: an operator asked for it)."""
    merged: dict[int, dict[str, Any]] = {}
    states: dict[int, list[str]] = {}
    for reply in replies:
        for b in reply.get("backends", ()):
            ndx = b["ndx"]
            states.setdefault(ndx, []).append(b["state"])
            row = merged.get(ndx)
            if row is None:
                merged[ndx] = dict(b)
                continue
            for key, value in b.items():
                if key != "ndx" and isinstance(value, int) and not isinstance(value, bool):
                    row[key] = row.get(key, 0) + value
    for ndx, row in merged.items():
        seen = states[ndx]
        row["state"] = "offline" if "offline" in seen else min(seen, key=_STATE_ORDER.index)
    return [merged[k] for k in sorted(merged)]


def _backends(src: Source) -> tuple[Sequence[Column], list[Row]]:
    """MySQL Proxy's six columns, then the replication monitor's (docs/operations.md,
    "Replication-aware backends"): the same in every worker, taken from the first."""
    columns = [("backend_ndx", "INTEGER"), ("address", "TEXT"), ("state", "TEXT"), ("type", "TEXT"),
               ("uuid", "TEXT"), ("connected_clients", "INTEGER"),
               ("replication", "TEXT"), ("lag", "REAL"), ("stale", "TEXT")]
    rows = [(b["ndx"], b["address"], b["state"], b["type"], b.get("uuid"), b["connected_clients"],
             b.get("replication", "unmonitored"), b.get("lag"), b.get("stale", "no"))
            for b in merge_backends(src.answers.get("proxy.backends", []))]
    return columns, rows


_STAT_COLUMNS = ("connections", "queries", "errors", "bytes_in", "bytes_out", "pool_idle")


def _backend_stats(src: Source) -> tuple[Sequence[Column], list[Row]]:
    columns = [("backend_ndx", "INTEGER"), ("address", "TEXT"), *((c, "INTEGER") for c in _STAT_COLUMNS)]
    rows = [(b["ndx"], b["address"], *(b.get(c, 0) for c in _STAT_COLUMNS))
            for b in merge_backends(src.answers.get("proxy.backends", []))]
    return columns, rows


def _stats(src: Source) -> tuple[Sequence[Column], list[Row]]:
    """One row per worker and a ``total`` row; a column per counter the workers report."""
    replies = src.answers.get("proxy.stats", [])
    names = sorted({k for r in replies for k, v in r.get("stats", {}).items()
                    if isinstance(v, int) and not isinstance(v, bool)})
    rows: list[Row] = []
    totals = dict.fromkeys(names, 0)
    for r in replies:
        stats = r.get("stats", {})
        rows.append((str(r["worker"] + 1), r.get("pid"), *(stats.get(n, 0) for n in names)))
        for n in names:
            totals[n] += stats.get(n, 0)
    rows.append(("total", None, *(totals[n] for n in names)))
    return [("worker", "TEXT"), ("pid", "INTEGER"), *((n, "INTEGER") for n in names)], rows


_DIGEST_KEY = ("digest", "user", "schema", "backend")
_DIGEST_SUMS = ("count", "sum_time", "rows_sent", "rows_affected", "errors")


def merge_digests(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (digest, user, schema, backend) over all workers: counts and times
    summed, the smallest min and first_seen, the largest max and last_seen."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for reply in replies:
        for d in reply.get("digests", ()):
            key = tuple(d.get(k) for k in _DIGEST_KEY)
            row = merged.get(key)
            if row is None:
                merged[key] = dict(d)
                continue
            for k in _DIGEST_SUMS:
                row[k] = (row.get(k) or 0) + (d.get(k) or 0)
            for k, pick in (("min_time", min), ("first_seen", min), ("max_time", max), ("last_seen", max)):
                values = [v for v in (row.get(k), d.get(k)) if v is not None]
                row[k] = pick(values) if values else None
    return list(merged.values())


_DIGEST_COLUMNS: list[Column] = [
    ("digest", "TEXT"), ("digest_text", "TEXT"), ("user", "TEXT"), ("schema", "TEXT"),
    ("backend", "TEXT"), ("count", "INTEGER"), ("sum_time", "REAL"), ("min_time", "REAL"),
    ("max_time", "REAL"), ("rows_sent", "INTEGER"), ("rows_affected", "INTEGER"),
    ("errors", "INTEGER"), ("first_seen", ""), ("last_seen", ""),
]


def _query_digest(src: Source) -> tuple[Sequence[Column], list[Row]]:
    rows = [tuple(d.get(name) for name, _ in _DIGEST_COLUMNS)
            for d in merge_digests(src.answers.get("proxy.digests", []))]
    return _DIGEST_COLUMNS, rows


_CONNECTION_COLUMNS: list[Column] = [
    ("id", "INTEGER"), ("user", "TEXT"), ("client", "TEXT"), ("backend", "TEXT"), ("state", "TEXT"),
    ("statement", "TEXT"), ("time", "REAL"),
]


def _connections(src: Source) -> tuple[Sequence[Column], list[Row]]:
    rows = [(*(c.get(name) for name, _ in _CONNECTION_COLUMNS), r["worker"] + 1)
            for r in src.answers.get("proxy.connections", []) for c in r.get("connections", ())]
    rows.sort(key=lambda row: row[0] or 0)
    return [*_CONNECTION_COLUMNS, ("worker", "INTEGER")], rows


def _pool(src: Source) -> tuple[Sequence[Column], list[Row]]:
    columns = [("worker", "INTEGER"), ("backend_ndx", "INTEGER"), ("address", "TEXT"), ("idle", "INTEGER"),
               ("taken", "INTEGER"), ("max_idle", "INTEGER"), ("max_idle_age", "REAL")]
    rows = [(r["worker"] + 1, p.get("ndx"), p.get("address"), p.get("idle"), p.get("taken"),
             p.get("max_idle"), p.get("max_idle_age"))
            for r in src.answers.get("proxy.pool", []) for p in r.get("pool", ())]
    return columns, rows


_LUA_COLUMNS: list[Column] = [
    ("script", "TEXT"), ("runtime", "TEXT"), ("memory_used", "INTEGER"), ("memory_limit", "INTEGER"),
    ("hook_timeout", "REAL"), ("hook_calls", "INTEGER"), ("hook_errors", "INTEGER"),
    ("hook_timeouts", "INTEGER"), ("hook_seconds", "REAL"),
]


def _lua(src: Source) -> tuple[Sequence[Column], list[Row]]:
    """One row per worker that runs a --proxy-lua-script; counters the bridge does not
    keep are NULL."""
    rows = [(r["worker"] + 1, *(r["lua"].get(name) for name, _ in _LUA_COLUMNS))
            for r in src.answers.get("proxy.lua", []) if isinstance(r.get("lua"), dict)]
    return [("worker", "INTEGER"), *_LUA_COLUMNS], rows


_HOOK_COLUMNS: list[Column] = [
    ("hook", "TEXT"), ("calls", "INTEGER"), ("seconds", "REAL"), ("errors", "INTEGER"), ("timeouts", "INTEGER"),
]


def _lua_hooks(src: Source) -> tuple[Sequence[Column], list[Row]]:
    """One row per worker and hook the script defines, when the bridge counts calls."""
    rows = [(r["worker"] + 1, *(h.get(name) for name, _ in _HOOK_COLUMNS))
            for r in src.answers.get("proxy.lua", []) if isinstance(r.get("lua"), dict)
            for h in r["lua"].get("hooks") or ()]
    return [("worker", "INTEGER"), *_HOOK_COLUMNS], rows


_WORKER_COLUMNS: list[Column] = [
    ("pid", "INTEGER"), ("started", "REAL"), ("uptime", "REAL"), ("cpu_user", "REAL"),
    ("cpu_system", "REAL"), ("rss_bytes", "INTEGER"), ("admin_connections", "INTEGER"),
]


def _workers(src: Source) -> tuple[Sequence[Column], list[Row]]:
    """One row per worker from its own answer; ``client_connections`` from the proxy
    (NULL without it)."""
    clients = {r["worker"]: r.get("stats", {}).get("connections_current")
               for r in src.answers.get("proxy.stats", [])}
    rows = [(r["worker"] + 1, *(r.get(name) for name, _ in _WORKER_COLUMNS), clients.get(r["worker"]))
            for r in src.answers.get("admin.worker", [])]
    return [("worker", "INTEGER"), *_WORKER_COLUMNS, ("client_connections", "INTEGER")], rows


def _variables(src: Source) -> tuple[Sequence[Column], list[Row]]:
    return ([("variable_name", "TEXT"), ("value", "TEXT"), ("source", "TEXT")],
            variables.rows(src.config_values, src.config_sources))


def _help(src: Source) -> tuple[Sequence[Column], list[Row]]:
    return [("command", "TEXT"), ("description", "TEXT")], [tuple(r) for r in sql.HELP]


def _tables(src: Source) -> tuple[Sequence[Column], list[Row]]:
    return [("name", "TEXT"), ("description", "TEXT")], [(t.name, t.description) for t in TABLES.values()]


TABLES: dict[str, Table] = {t.name: t for t in (
    Table("backends", "the backends over all workers: MySQL Proxy's columns, then replication, "
                      "lag, stale",
          ("proxy.backends",), _backends),
    Table("backend_stats", "connections, queries, errors, bytes and idle pooled connections per backend",
          ("proxy.backends",), _backend_stats),
    Table("stats", "the proxy's counters per worker and in total", ("proxy.stats",), _stats),
    Table("query_digest", "queries grouped by digest, user, schema and backend",
          ("proxy.digests",), _query_digest),
    Table("connections", "one row per client connection", ("proxy.connections",), _connections),
    Table("pool", "idle and taken server connections per worker and backend", ("proxy.pool",), _pool),
    Table("lua", "the --proxy-lua-script of each worker", ("proxy.lua",), _lua),
    Table("lua_hooks", "calls, seconds, errors and timeouts of each Lua hook, per worker",
          ("proxy.lua",), _lua_hooks),
    Table("workers", "one row per worker process", ("admin.worker",), _workers,
          optional=("proxy.stats",)),
    Table("variables", "the running configuration (secrets masked)", (), _variables),
    Table("help", "the console's statements", (), _help),
    Table("tables", "these tables", (), _tables),
)}
