"""Placeholder: replaced by the process core (daemon, angel, workers)."""

from __future__ import annotations

import pluggy

from chassis.config import Config


def run(config: Config, pm: pluggy.PluginManager) -> int:
    raise NotImplementedError
