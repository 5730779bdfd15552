"""What a plugin sees of the running worker process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chassis.config import Config
from chassis.control import ControlChannel


@dataclass
class Runtime:
    """One worker process: its config, its event loop and a way to ask for shutdown.

    With ``--event-threads=N`` there are N workers (``worker_id`` 0..N-1), each with its
    own event loop and its own copy of every plugin's state.
    """

    config: Config
    worker_id: int = 0
    worker_count: int = 1
    loop: asyncio.AbstractEventLoop | None = None
    stopping: bool = False
    #: Requests to every worker of this chassis (set by the worker loop once it serves).
    control: ControlChannel | None = None
    #: Set when a new chassis took over (SIGUSR2): its pid. The listeners now belong to it
    #: too: do not remove a unix socket's file when you close yours.
    succeeded_by: int | None = None
    _on_shutdown: Callable[[str], None] | None = field(default=None, repr=False)
    _offers: Callable[[str], Any] | None = field(default=None, repr=False)

    def request_shutdown(self, reason: str = "requested by a plugin") -> None:
        """Begin a graceful stop of this worker, as SIGTERM would (exit code 0)."""
        if self._on_shutdown is not None:
            self._on_shutdown(reason)

    def offered(self, name: str) -> Any:
        """What another plugin of this worker offers under ``name`` (``chassis_offer``),
        or None when no loaded plugin does."""
        return self._offers(name) if self._offers is not None else None

    @staticmethod
    def logger(name: str) -> logging.Logger:
        """A logger under ``chassis.``; its lines go wherever ``--log-file`` says."""
        return logging.getLogger(f"chassis.{name}")
