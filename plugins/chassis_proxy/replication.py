"""What a monitor probe found on one server, and what it means for routing.

A :class:`ServerReport` is the raw finding (``@@read_only``, the replication threads
and lag, Galera's state), made by worker 1's monitor and sent to every worker as JSON.
:func:`judge` turns it into the :class:`~chassis_proxy.hooks.ReplicationInfo` each
worker keeps on its backend, and :func:`role` into the backend's type. Plain functions
over plain values: tested without a server.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from chassis_proxy.hooks import UNMONITORED, BackendType, ReplicationInfo

#: Galera's wsrep_local_state when the node is in sync and may serve.
GALERA_SYNCED = 4

#: Replication states in which reads may go to the backend.
FRESH_STATES = frozenset({"none", "running", "synced"})


@dataclass(frozen=True)
class ServerReport:
    """One probe of the backend at ``address`` (as configured: reports find their backend
    by it, in every worker and across a reload). ``error`` set: the probe failed and
    nothing else is known. Replication fields summarise every channel (MariaDB's
    multi-source): the worst thread state and the largest lag."""

    address: str
    error: str = ""
    read_only: bool | None = None
    replica: bool = False  # SHOW ALL SLAVES STATUS / SHOW REPLICA STATUS had a row
    io_running: str = ""  # Yes, No, Connecting (a channel that is not Yes wins)
    sql_running: str = ""  # Yes, No
    lag: float | None = None  # Seconds_Behind_Master; None when NULL
    last_error: str = ""  # Last_IO_Error or Last_SQL_Error of a stopped channel
    galera_ready: bool | None = None  # wsrep_ready; None: not a Galera node
    galera_state: int | None = None  # wsrep_local_state (4: Synced)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServerReport:
        """From another worker's JSON; unknown keys (a newer worker) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _running(value: str | None) -> str:
    return (value or "No").strip()


def summarise_channels(rows: list[dict[str, str | None]]) -> dict[str, Any]:
    """The ServerReport fields of ``SHOW ALL SLAVES STATUS`` (MariaDB) or ``SHOW REPLICA
    STATUS`` (MySQL 8.0.22+, whose columns say Replica/Source) rows."""
    if not rows:
        return {"replica": False}
    io_states, sql_states, lags, errors = [], [], [], []
    lag_known = True
    for row in rows:
        io = _running(row.get("Slave_IO_Running", row.get("Replica_IO_Running")))
        sql = _running(row.get("Slave_SQL_Running", row.get("Replica_SQL_Running")))
        io_states.append(io)
        sql_states.append(sql)
        seconds = row.get("Seconds_Behind_Master", row.get("Seconds_Behind_Source"))
        if seconds is None:
            lag_known = False
        else:
            lags.append(float(seconds))
        for key in ("Last_SQL_Error", "Last_IO_Error"):
            if row.get(key):
                errors.append(str(row[key]))
    return {
        "replica": True,
        "io_running": next((s for s in io_states if s != "Yes"), "Yes"),
        "sql_running": next((s for s in sql_states if s != "Yes"), "Yes"),
        "lag": max(lags) if lag_known and lags else None,
        "last_error": errors[0] if errors else "",
    }


def judge(report: ServerReport, max_lag: float | None,
          before: ReplicationInfo = UNMONITORED) -> ReplicationInfo:
    """What ``report`` means: the state, and whether reads must stay away (``stale``:
    only with a lag limit). A failed probe (``unknown``) changes nothing else: the lag
    and ``stale`` stay what the last good probe found, so a monitor that cannot log in
    never takes a backend's clients away, nor gives a stopped replica reads again."""
    if report.error:
        return ReplicationInfo(state="unknown", lag=before.lag, stale=before.stale,
                               error=report.error)
    if report.galera_ready is not None:
        ok = report.galera_ready and report.galera_state == GALERA_SYNCED
        state = "synced" if ok else "desynced"
    elif not report.replica:
        state = "none"
    elif report.io_running == "Yes" and report.sql_running == "Yes":
        late = max_lag is not None and (report.lag is None or report.lag > max_lag)
        state = "lagging" if late else "running"
    elif report.last_error:
        state = "broken"
    elif report.io_running == "Connecting" and report.sql_running == "Yes":
        state = "connecting"
    else:
        state = "stopped"
    stale = max_lag is not None and state not in FRESH_STATES
    return ReplicationInfo(state=state, lag=report.lag, stale=stale)


def role(report: ServerReport) -> BackendType | None:
    """The type ``read_only`` gives the server (None: unknown, keep the one it has)."""
    if report.error or report.read_only is None:
        return None
    return BackendType.RO if report.read_only else BackendType.RW


def why(report: ServerReport, info: ReplicationInfo) -> str:
    """A few words on a state, for the one log line of a change."""
    if info.state == "unknown":
        return report.error
    if info.state in ("synced", "desynced"):
        return f"wsrep_ready={'ON' if report.galera_ready else 'OFF'}, wsrep_local_state={report.galera_state}"
    if info.state in ("running", "lagging"):
        return "lag unknown" if report.lag is None else f"{report.lag:g} s behind"
    if info.state == "none":
        return "not a replica"
    parts = [f"Slave_IO_Running={report.io_running}", f"Slave_SQL_Running={report.sql_running}"]
    if report.last_error:
        parts.append(f"error: {report.last_error}")
    return ", ".join(parts)
