"""The proxy's metrics (``chassis_metrics``) and readiness (``chassis_ready``).

Built only when Prometheus scrapes, from the plain counters the connections already
keep (:mod:`chassis_proxy.stats`): the relay adds nothing per packet for them. What the
flat relay cannot know without following answers (when a command ends, its ERR) is
measured there only while it follows them, i.e. with query digests or the slow log on
(the default): the latency histogram, commands by type and server errors; queries and
bytes are counted in both modes (in relay mode a "query" is a client buffer that starts
a command). The top :data:`TOP_DIGESTS` digests of each worker by time are series too.
"""

from __future__ import annotations

from typing import Any

from chassis_mysql.constants import Command

from chassis.metrics import Metric, counter, gauge, histogram
from chassis_proxy.digests import DigestTable
from chassis_proxy.hooks import BackendState
from chassis_proxy.service import ProxyService
from chassis_proxy.stats import LATENCY_BOUNDS

#: Digests per worker shown as series (the most time spent); the admin table has them all.
TOP_DIGESTS = 10
#: Longest digest_text label.
DIGEST_LABEL_TEXT = 200
#: The ``command`` label: COM_QUERY -> "query".
_COMMAND_NAMES = {int(c): c.name.lower() for c in Command}


def collect(service: ProxyService) -> list[Metric]:
    """This worker's proxy metrics; the chassis merges the workers'."""
    recorder = service.recorder
    if recorder is not None and recorder.digests is not None:
        recorder.digests.fold()  # the relay's times kept aside go to the backends' counters
    total = service.stats
    backends = list(service.backends)
    label = [({"backend": str(b.addr)}, b) for b in backends]
    out = [
        gauge("chassis_proxy_client_connections", "Client connections open now.",
              [({}, len(service.connections))]),
        counter("chassis_proxy_client_connections_total", "Client connections accepted.",
                [({}, total.connections)]),
        counter("chassis_proxy_client_refused_total",
                "Clients refused or dropped before they were served, by reason.",
                [({"reason": reason}, n) for reason, n in total.refused.items()]),
        counter("chassis_proxy_errors_total",
                "Errors: refused clients, failed logins, backends that could not be reached.",
                [({}, total.errors)]),
        gauge("chassis_proxy_backend_up",
              "1 when this worker sees the backend UP (or not yet tried: UNKNOWN), else 0.",
              [({"backend": str(b.addr), "type": b.type.name.lower()},
                int(b.state in (BackendState.UP, BackendState.UNKNOWN))) for b in backends],
              aggregate="worker"),
        gauge("chassis_proxy_backend_state",
              "Workers that see the backend in each state (up, down, offline, unknown).",
              [({"backend": str(b.addr), "state": state.name.lower()}, int(b.state == state))
               for b in backends for state in BackendState]),
        gauge("chassis_proxy_backend_connections", "Client connections attached to the backend now.",
              [(lb, b.connected_clients) for lb, b in label]),
        counter("chassis_proxy_backend_connections_total",
                "Client connections the backend was given (new or pooled server connections).",
                [(lb, b.stats.connections) for lb, b in label]),
        gauge("chassis_proxy_pool_idle_connections", "Idle pooled server connections of the backend.",
              [(lb, b.pool.idle_count) for lb, b in label]),
        counter("chassis_proxy_queries_total",
                "Client commands sent to the backend (relay mode: buffers that start a command).",
                [(lb, b.stats.queries) for lb, b in label]),
        counter("chassis_proxy_backend_errors_total",
                "Failed connects to the backend (each one marks it DOWN).",
                [(lb, b.stats.errors) for lb, b in label]),
        counter("chassis_proxy_received_bytes_total", "Bytes received from clients, by backend.",
                [(lb, b.stats.bytes_in) for lb, b in label]),
        counter("chassis_proxy_sent_bytes_total", "Bytes sent to clients, by backend.",
                [(lb, b.stats.bytes_out) for lb, b in label]),
        histogram("chassis_proxy_query_duration_seconds",
                  "Time from a command's sending to the backend to the end of its answer "
                  "(without a script: only while digests or the slow log follow answers).",
                  LATENCY_BOUNDS,
                  [(lb, b.stats.latency.counts, b.stats.latency.sum) for lb, b in label]),
        counter("chassis_proxy_commands_total",
                "Commands sent to the backend, by type (followed commands: with a script, or "
                "with digests or the slow log on).",
                [({**lb, "command": _COMMAND_NAMES.get(code, f"0x{code:02x}")}, n)
                 for lb, b in label for code, n in enumerate(b.stats.by_command) if n]),
        counter("chassis_proxy_server_errors_total",
                "ERR answers of the backend to followed commands.",
                [(lb, b.stats.server_errors) for lb, b in label]),
        counter("chassis_proxy_pool_taken_total",
                "Idle pooled connections of the backend handed to a client.",
                [(lb, b.pool.taken) for lb, b in label]),
    ]
    out.extend(_replication(backends))
    if service.monitor is not None:  # worker 1 only: it alone probes
        probes = service.monitor.probes
        out.append(counter(
            "chassis_proxy_monitor_probes_total",
            "Replication monitor probes of the backend, by result (ok, error).",
            [({"backend": str(b.addr), "result": result}, probes[str(b.addr), result])
             for b in backends for result in ("ok", "error")]))
    out.extend(_lua(service.script_host))
    if recorder is not None and recorder.digests is not None:
        out.extend(_digests(recorder.digests))
    return out


#: States the replication monitor reports (chassis_proxy.hooks.ReplicationInfo).
_REPLICATION_STATES = ("none", "running", "lagging", "connecting", "stopped", "broken",
                       "unknown", "synced", "desynced")


def _replication(backends: list[Any]) -> list[Metric]:
    """The replication monitor's view (with --proxy-monitor-user): every worker holds the
    same reports, so the workers' values are not summed but the largest kept."""
    monitored = [b for b in backends if b.replication.state != "unmonitored"]
    if not monitored:
        return []
    return [
        gauge("chassis_proxy_backend_replication_lag_seconds",
              "Seconds_Behind_Master the monitor last read (replicas whose lag is known).",
              [({"backend": str(b.addr)}, float(b.replication.lag)) for b in monitored
               if b.replication.lag is not None], aggregate="max"),
        gauge("chassis_proxy_backend_replication_state",
              "1 for the backend's replication state as the monitor last saw it.",
              [({"backend": str(b.addr), "state": state}, int(b.replication.state == state))
               for b in monitored for state in _REPLICATION_STATES], aggregate="max"),
        gauge("chassis_proxy_backend_stale",
              "1 while the backend gets no reads (--proxy-max-replication-lag).",
              [({"backend": str(b.addr)}, int(b.replication.stale)) for b in monitored],
              aggregate="max"),
    ]


def _digests(table: DigestTable) -> list[Metric]:
    """The top digests of this worker by time, labelled by id and (shortened) text."""
    top = [({"digest": digest, "digest_text": text[:DIGEST_LABEL_TEXT]}, d)
           for digest, text, d in table.top(TOP_DIGESTS)]
    return [
        counter("chassis_proxy_digest_queries_total",
                f"Queries of the top {TOP_DIGESTS} digests (by time) of each worker.",
                [(lb, d.count) for lb, d in top]),
        counter("chassis_proxy_digest_seconds_total",
                "Seconds the queries of a top digest took (sending to end of answer).",
                [(lb, d.sum_time) for lb, d in top]),
        counter("chassis_proxy_digest_rows_sent_total", "Rows the queries of a top digest returned.",
                [(lb, d.rows_sent) for lb, d in top]),
        counter("chassis_proxy_digest_errors_total", "ERR answers to the queries of a top digest.",
                [(lb, d.errors) for lb, d in top]),
        gauge("chassis_proxy_digests", "Digest rows kept (--proxy-query-digest-max per worker).",
              [({}, len(table.rows))]),
    ]


def _lua(host: Any) -> list[Metric]:
    """The Lua state's memory, when there is a script (read from the bridge's LuaState)."""
    memory_used = getattr(getattr(host, "lua", None), "memory_used", None)
    if not callable(memory_used):
        return []
    out = [gauge("chassis_proxy_lua_memory_bytes", "Bytes the worker's Lua state holds.",
                 [({}, int(memory_used()))])]
    limit = getattr(host, "max_memory", None)
    if isinstance(limit, int) and limit > 0:
        out.append(gauge("chassis_proxy_lua_memory_limit_bytes", "--lua-max-memory, per worker.",
                         [({}, limit)]))
    hook_stats = getattr(getattr(host, "calls", None), "hook_stats", None)
    if callable(hook_stats):
        stats = hook_stats()
        out.append(counter("chassis_proxy_lua_hook_calls_total",
                           "Calls of the script's hooks ('script': its top level, per connection).",
                           [({"hook": hook}, n) for hook, (n, _s) in stats.items()]))
        out.append(counter("chassis_proxy_lua_hook_seconds_total", "Seconds spent in each hook.",
                           [({"hook": hook}, s) for hook, (_n, s) in stats.items()]))
    failures = getattr(getattr(host, "limits", None), "failures", None)
    if isinstance(failures, dict):
        out.append(counter("chassis_proxy_lua_hook_errors_total",
                           "Hook calls that did not return, by reason: error (raised), timeout "
                           "(--lua-hook-timeout), memory (--lua-max-memory).",
                           [({"hook": hook, "reason": reason}, n)
                            for (hook, reason), n in failures.items()]))
    return out


def not_ready(service: ProxyService) -> str | None:
    """Why this worker's proxy is not ready: its listener is closed, or no backend may be used."""
    if service.sock is not None and not service.accepting:
        return f"worker {service.worker_id + 1}: the proxy listener is not open"
    usable = (BackendState.UP, BackendState.UNKNOWN)
    if not any(b.state in usable for b in service.backends):
        return f"worker {service.worker_id + 1}: no backend is up"
    return None
