"""A child tells its parent "ready" or why it failed, through a pipe (daemon(7)).

Used twice: a worker reports to its angel, and the daemon's main process reports to
the shell that ran ``chassis --daemon``. One JSON line per report; the pipe closing
without a report means the child died before it could say anything.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Report:
    ready: bool
    error: str = ""
    exit_code: int = 0
    #: A worker's: which inherited listening sockets it took (chassis.listenfds).
    inherited: tuple[int, ...] = ()


class Reporter:
    """The child's end: report once; later reports are ignored."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def _send(self, report: dict[str, object]) -> None:
        if self.fd is None:
            return
        data = json.dumps(report).encode() + b"\n"
        with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
            os.write(self.fd, data)
        self.close()

    def ready(self, inherited: list[int] | None = None) -> None:
        self._send({"ready": True, "inherited": inherited or []})

    def failed(self, message: str, exit_code: int) -> None:
        self._send({"ready": False, "error": message, "exit_code": exit_code})

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


class Listener:
    """The parent's end of one child's pipe; feed it bytes as they arrive."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.report: Report | None = None
        self.closed = False

    def poll(self) -> Report | None:
        """Read what is there without blocking (the fd must be non-blocking)."""
        while not self.closed:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.close()
                break
            self.buffer += chunk
        return self._parse()

    def wait(self) -> Report | None:
        """Block until the child reports or the pipe closes (None: it died silently)."""
        os.set_blocking(self.fd, True)
        while not self.closed and b"\n" not in self.buffer:
            try:
                chunk = os.read(self.fd, 4096)
            except InterruptedError:
                continue
            if not chunk:
                self.close()
            self.buffer += chunk
        return self._parse()

    def _parse(self) -> Report | None:
        if self.report is None and b"\n" in self.buffer:
            line = self.buffer.split(b"\n", 1)[0]
            try:
                data = json.loads(line)
                self.report = Report(
                    ready=bool(data.get("ready")),
                    error=str(data.get("error", "")),
                    exit_code=int(data.get("exit_code", 0)),
                    inherited=tuple(int(i) for i in data.get("inherited") or ()),
                )
            except (ValueError, AttributeError, TypeError):
                self.report = Report(ready=False, error=f"garbled report {line[:200]!r}",
                                     exit_code=1)
        return self.report

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                os.close(self.fd)


def pipe() -> tuple[Listener, Reporter]:
    r, w = os.pipe()
    return Listener(r), Reporter(w)
