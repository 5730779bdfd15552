"""``--metrics-address``: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz`` over HTTP.

Every worker binds the address with ``SO_REUSEPORT``, like the plugins' listeners, so the
kernel hands a scrape to any of them; that worker asks every worker over the control
channel (:mod:`chassis.control`), itself included, and answers for all of them, as the
admin console does. Each worker answers with what its plugins return from
``chassis_metrics`` (and the chassis' own series: start times, restarts); the merge is
:func:`chassis.metrics.merge`.

The endpoint is a chassis-internal plugin object, registered by the worker when
``--metrics-address`` is set, so it binds before the privilege drop, serves and stops
with the other plugins through the same hooks. The HTTP side is a minimal HTTP/1.1
server (GET and HEAD, one request per connection): enough for Prometheus, a load
balancer's probe and curl, with no web framework in the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

import pluggy

import chassis
from chassis import metrics
from chassis.errors import StartupError
from chassis.plugins import plugin_calls

if TYPE_CHECKING:
    from chassis.config import Config
    from chassis.runtime import Runtime

log = logging.getLogger("chassis.metrics")

#: The control request's plugin name; also the endpoint's name among the plugins.
NAME = "chassis.metrics"
#: The environment variable in which the angel tells a worker how often its slot restarted.
RESTARTS_ENV = "CHASSIS_WORKER_RESTARTS"
DEFAULT_PORT = 9104
#: A request's head must arrive within this many seconds and bytes.
REQUEST_TIMEOUT = 10.0
MAX_REQUEST_HEAD = 16 * 1024
#: How long a scrape waits for the other workers.
ASK_TIMEOUT = 2.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


def install(pm: pluggy.PluginManager, config: Config, angel_pid: int | None) -> None:
    """Register the endpoint in this worker's plugin manager when ``--metrics-address`` is set."""
    if config.get("metrics_address") and not pm.has_plugin(NAME):
        pm.register(MetricsEndpoint(pm, angel_pid), name=NAME)


class MetricsEndpoint:
    """One worker's metrics server and its answers to the other workers' scrapes."""

    def __init__(self, pm: pluggy.PluginManager, angel_pid: int | None = None) -> None:
        self.pm = pm
        self.angel_pid = angel_pid
        self.sock: socket.socket | None = None
        self.server: asyncio.AbstractServer | None = None
        self.runtime: Runtime | None = None
        try:
            self.restarts = int(os.environ.get(RESTARTS_ENV, "0"))
        except ValueError:
            self.restarts = 0

    # the chassis hooks --------------------------------------------------------------

    @chassis.hookimpl
    def chassis_apply_config(self, config: Config, runtime: Runtime) -> None:
        from chassis.listen import bind_listener, parse_address

        try:
            address = parse_address(str(config.metrics_address), default_port=DEFAULT_PORT)
        except ValueError as e:
            raise StartupError(f"--metrics-address: {e}") from None
        if address.is_unix:
            raise StartupError("--metrics-address: a TCP address is needed (host:port), "
                               "Prometheus scrapes over TCP")
        self.sock = bind_listener(address, option="--metrics-address")
        if runtime.worker_id == 0:
            port = self.sock.getsockname()[1]
            log.log(25, "metrics on http://%s:%d/metrics", address.host or "0.0.0.0", port)

    @chassis.hookimpl
    async def chassis_serve(self, runtime: Runtime) -> None:
        self.runtime = runtime
        if self.sock is not None:
            self.server = await asyncio.start_server(self._serve, sock=self.sock,
                                                     limit=MAX_REQUEST_HEAD)

    @chassis.hookimpl
    def chassis_stop(self, runtime: Runtime, deadline: float) -> None:
        if self.server is not None:
            self.server.close()

    @chassis.hookimpl
    def chassis_shutdown(self, runtime: Runtime) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    @chassis.hookimpl
    def chassis_control(self, runtime: Runtime, request: dict[str, Any]) -> dict[str, Any] | None:
        if request.get("plugin") != NAME:
            return None
        op = request.get("op")
        if op == "collect":
            return {"metrics": self.local_metrics(runtime)}
        if op == "ready":
            return {"not_ready": self.local_not_ready(runtime)}
        raise ValueError(f"unknown metrics operation {op!r}")

    # what this worker answers -------------------------------------------------------

    def local_metrics(self, runtime: Runtime) -> list[metrics.Metric]:
        """This worker's plugins' metrics and the chassis' own; a failing plugin is logged."""
        out = self.own_metrics()
        for call in plugin_calls(self.pm, "chassis_metrics"):
            try:
                out.extend(call(runtime=runtime) or ())
            except Exception:
                log.exception("plugin %r failed in chassis_metrics", call.plugin_name)
        return out

    def local_not_ready(self, runtime: Runtime) -> list[str]:
        """Why this worker is not ready (empty: ready)."""
        if runtime.stopping:
            return [f"worker {runtime.worker_id + 1} is stopping"]
        reasons: list[str] = []
        for call in plugin_calls(self.pm, "chassis_ready"):
            try:
                reason = call(runtime=runtime)
            except Exception as e:
                reason = f"plugin {call.plugin_name!r} failed in chassis_ready: {e}"
            if reason:
                reasons.append(str(reason))
        return reasons

    def own_metrics(self) -> list[metrics.Metric]:
        """Start times (the chassis' and this worker's) and this worker slot's restarts."""
        pid = os.getpid()
        now: list[tuple[dict[str, str], float]] = [({}, process_start_time(pid))]
        own: list[metrics.Metric] = [
            metrics.gauge("chassis_process_start_time_seconds",
                          "Start time of the worker process since the Unix epoch in seconds.",
                          now, aggregate="worker"),
            metrics.counter("chassis_worker_restarts_total",
                            "Times the angel restarted this worker slot (--keepalive).",
                            [({}, self.restarts)], aggregate="worker"),
            metrics.counter("chassis_process_cpu_seconds_total",
                            "User and system CPU time of the worker processes in seconds.",
                            [({}, sum(os.times()[:2]))]),
        ]
        first = self.angel_pid or pid
        own.append(metrics.gauge("chassis_start_time_seconds",
                                 "Start time of the chassis (its angel, or its only process) "
                                 "since the Unix epoch in seconds.",
                                 [({}, process_start_time(first))], aggregate="max"))
        return own

    # the HTTP side ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            status, content_type, body, method = await self._answer(head)
            lines = [f"HTTP/1.1 {status} {_REASONS.get(status, '')}",
                     f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
                     "Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1"))
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except Exception:
            log.exception("metrics: a request failed")
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[int, str, bytes, str]:
        text = "text/plain; charset=utf-8"
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return 400, text, b"bad request\n", "GET"
        method, target = parts[0], parts[1]
        if method not in ("GET", "HEAD"):
            return 405, text, b"only GET and HEAD\n", "GET"
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        path = target.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = metrics.exposition(await self.scrape(), headers.get("accept", ""))
            return 200, content_type, body, method
        if path == "/healthz":
            return 200, text, b"ok\n", method
        if path == "/readyz":
            reasons = await self.not_ready()
            if reasons:
                return 503, text, ("not ready: " + "; ".join(reasons) + "\n").encode(), method
            return 200, text, b"ready\n", method
        return 404, text, b"not found: try /metrics, /healthz or /readyz\n", method

    async def _ask_all(self, op: str) -> list[tuple[int, dict[str, Any] | None]]:
        """Every worker's answer to ``op`` (None for a worker that did not answer)."""
        runtime = self.runtime
        assert runtime is not None
        request = {"plugin": NAME, "op": op}
        replies: list[dict[str, Any]]
        if runtime.control is None:
            replies = [{"worker": runtime.worker_id,
                        "results": [self.chassis_control(runtime, request)]}]
        else:
            replies = await runtime.control.broadcast(request, timeout=ASK_TIMEOUT)
        out: list[tuple[int, dict[str, Any] | None]] = []
        for reply in replies:
            found = next((r for r in reply.get("results") or () if isinstance(r, dict)), None)
            if found is None:
                log.warning("metrics: %s", reply.get("error") or f"worker {reply.get('worker')} "
                            "gave no answer")
            out.append((int(reply.get("worker", 0)), found))
        return out

    async def scrape(self) -> list[metrics.Metric]:
        """Every worker's metrics, merged, and how many workers answered."""
        answers = await self._ask_all("collect")
        merged = metrics.merge((w, a.get("metrics", [])) for w, a in answers if a is not None)
        answered = sum(1 for _, a in answers if a is not None)
        merged.append(metrics.gauge(
            "chassis_workers", "Worker processes (--event-threads) by whether they answered this scrape.",
            [({"state": "answered"}, answered), ({"state": "missing"}, len(answers) - answered)]))
        return merged

    async def not_ready(self) -> list[str]:
        reasons: list[str] = []
        for worker, answer in await self._ask_all("ready"):
            if answer is None:
                reasons.append(f"worker {worker + 1} did not answer")
            else:
                reasons.extend(answer.get("not_ready") or ())
        return reasons


def process_start_time(pid: int) -> float:
    """When ``pid`` started, in seconds since the epoch (from /proc; now when unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()
    return boot + ticks / os.sysconf("SC_CLK_TCK")

