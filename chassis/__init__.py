"""chassis: a process core for long-running servers, with pluggy plugins.

The chassis knows nothing about MySQL: it parses options, daemonizes, supervises
workers, drops privileges, logs and runs an asyncio main loop. Everything else is a
plugin (see :mod:`chassis.hookspecs`).
"""

import pluggy

__version__ = "0.1.0"

#: Marker for plugin hook implementations: ``@chassis.hookimpl``.
hookimpl = pluggy.HookimplMarker("chassis")

__all__ = ["__version__", "hookimpl"]
