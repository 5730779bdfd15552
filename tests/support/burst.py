"""A burst of TCP clients held in a listen backlog, for the backlog tests of every plugin."""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.chassis_proc import wait_for


@contextmanager
def burst(worker: int, port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections opened while ``worker`` is stopped (so it cannot accept).

    Yields once the kernel has queued all of them (a backlog too small drops the SYNs
    past it and this fails), with the worker running again; closes them afterwards.
    """
    socks: list[socket.socket] = []
    os.kill(worker, signal.SIGSTOP)
    try:
        try:
            for _ in range(count):
                sock = socket.socket()
                socks.append(sock)
                sock.setblocking(False)
                code = sock.connect_ex(("127.0.0.1", port))
                assert code in (0, errno.EINPROGRESS), os.strerror(code)
            wait_for(lambda: all(_connected(s) for s in socks), 10,
                     f"all {count} connections to be queued by the kernel")
        finally:
            os.kill(worker, signal.SIGCONT)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _connected(sock: socket.socket) -> bool:
    _, writable, _ = select.select([], [sock], [], 0)
    return bool(writable) and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0


def read_greetings(socks: list[socket.socket], timeout: float) -> dict[socket.socket, bytes]:
    """The first bytes every socket receives, read concurrently until each has a header."""
    got = {s: b"" for s in socks}
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    deadline = time.monotonic() + timeout
    pending = set(by_fd)
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(100):
            sock = by_fd[fd]
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                continue
            got[sock] += chunk
            if not chunk or len(got[sock]) >= 5:
                pending.discard(fd)
                poller.unregister(fd)
    return got
