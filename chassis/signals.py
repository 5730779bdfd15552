"""The signals the chassis handles, and how they are kept blocked until someone handles them.

The runner blocks them before anything forks: the angel then takes them with
``sigtimedwait`` (no handler runs in the middle of its work), and a worker, which
inherits the mask, unblocks them only once its event loop has handlers for them, so a
SIGTERM that arrives during start-up waits and then stops the worker gracefully.
"""

from __future__ import annotations

import signal

#: Forwarded by the angel to its workers, every time (MySQL Proxy's list).
FORWARDED: tuple[signal.Signals, ...] = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGUSR2,
)

#: Blocked in every chassis process until handled: the forwarded ones, plus SIGCHLD
#: (the angel reaps in its loop) and SIGIO (a worker's readiness pipe has data).
BLOCKED: frozenset[signal.Signals] = frozenset((*FORWARDED, signal.SIGCHLD, signal.SIGIO))


def block() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, BLOCKED)


def unblock() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, BLOCKED)


def name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
