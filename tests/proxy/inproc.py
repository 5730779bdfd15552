"""The proxy service in a thread of the test process, with a script host written in Python.

The Lua bridge lives in its own package; the connection's scripting mechanism is tested
here on its own, through real clients and the real test server, with hooks written as
small Python classes. The service runs on its own uvloop event loop in a thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import uvloop
from chassis_mysql.packets import err_packet, ok_packet
from chassis_mysql.resultset import text_column, text_resultset
from chassis_proxy.hooks import (
    NO_DECISION,
    ConnectionHooks,
    ConnectionView,
    Decision,
    Injection,
    InjectionResult,
    Outcome,
    ScriptLoadError,
)
from chassis_proxy.queries import QueryRecorder
from chassis_proxy.service import ProxyService
from chassis_proxy.settings import ProxySettings, parse_backends

from chassis.listen import bind_listener, parse_address


class Hooks:
    """Every hook returns "no decision"; tests override what they need. Records calls."""

    def __init__(self, conn: ConnectionView, calls: list[str]) -> None:
        self.conn = conn
        self.calls = calls
        self._next_id = 0

    def _log(self, name: str) -> None:
        self.calls.append(name)

    def connect_server(self) -> Outcome:
        self._log("connect_server")
        return NO_DECISION

    def read_handshake(self) -> Outcome:
        self._log("read_handshake")
        return NO_DECISION

    def read_auth(self) -> Outcome:
        self._log("read_auth")
        return NO_DECISION

    def read_auth_result(self, packet: bytes) -> Outcome:
        self._log("read_auth_result")
        return NO_DECISION

    def read_query(self, packet: bytes) -> Outcome:
        self._log("read_query")
        return NO_DECISION

    def read_query_result(self, result: InjectionResult) -> Outcome:
        self._log("read_query_result")
        return NO_DECISION

    def sees_results(self) -> bool:
        return True

    def disconnect_client(self) -> None:
        self._log("disconnect_client")

    # what a script would do through proxy.* ---------------------------------------

    def inject(self, packet: bytes, needed: bool = False, ident: int | None = None) -> None:
        self._next_id += 1
        self.conn.queries.append(Injection(ident if ident is not None else self._next_id,
                                           packet, resultset_is_needed=needed))


def answer_ok(affected: int = 0) -> Outcome:
    return Outcome(Decision.SEND_RESULT, [ok_packet(affected)])


def answer_err(code: int, message: str, state: str = "42000") -> Outcome:
    return Outcome(Decision.SEND_RESULT, [err_packet(code, message, state)])


def answer_rows(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> Outcome:
    return Outcome(Decision.SEND_RESULT, text_resultset([text_column(n) for n in names],
                                                        rows))


class PyScriptHost:
    """A ScriptHost whose "script" is a Hooks subclass."""

    def __init__(self, hooks_class: type[Hooks], fail: str | None = None) -> None:
        self.hooks_class = hooks_class
        self.fail = fail
        self.calls: list[str] = []
        self.opened: list[Hooks] = []

    def open(self, conn: ConnectionView) -> ConnectionHooks:
        if self.fail is not None:
            raise ScriptLoadError(self.fail)
        hooks = self.hooks_class(conn, self.calls)
        self.opened.append(hooks)
        return hooks

    def close(self) -> None:
        pass


class InProcessProxy:
    """A ProxyService on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, backends: Sequence[str], host: PyScriptHost | None = None,
                 recorder: QueryRecorder | None = None, **settings: Any) -> None:
        self.settings = ProxySettings(listen=parse_address("127.0.0.1:0", 4040),
                                      backends=parse_backends(list(backends), []), **settings)
        self.host = host
        #: Query digests and the slow log, as the plugin makes them (None: neither).
        self.recorder = recorder
        self.loop: asyncio.AbstractEventLoop | None = None
        self.service: ProxyService | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="inproc-proxy", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        try:
            uvloop.run(self._serve())
        except BaseException as e:
            self.error = e
            self._ready.set()

    async def _serve(self) -> None:
        assert self.settings.listen is not None
        sock = bind_listener(self.settings.listen, reuse_port=False)
        self.service = ProxyService(self.settings, sock, self.host, recorder=self.recorder)
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.service.serve()
        self._ready.set()
        await self._stop.wait()
        await self.service.stop(self.loop.time() + 2)
        self.service.shutdown()

    @property
    def port(self) -> int:
        assert self.service is not None and self.service.port is not None
        return self.service.port

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the proxy's loop and return its result (thread-safe)."""
        assert self.loop is not None

        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def __enter__(self) -> InProcessProxy:
        self._thread.start()
        self._ready.wait(10)
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
