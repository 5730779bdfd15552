"""Finding and loading plugins: entry points of the group ``chassis.plugins``."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType

import click
import pluggy

from chassis import hookspecs
from chassis.errors import ConfigError

ENTRY_POINT_GROUP = "chassis.plugins"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    entry_point: importlib.metadata.EntryPoint


def available() -> dict[str, PluginInfo]:
    """Every installed plugin by name (bundled ones are installed the same way)."""
    found: dict[str, PluginInfo] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        version = ep.dist.version if ep.dist is not None else "unknown"
        found.setdefault(ep.name, PluginInfo(ep.name, version, ep))
    return found


def make_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("chassis")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("CHASSIS_TRACE_PLUGINS"):
        pm.trace.root.setwriter(print)
        pm.enable_tracing()
    return pm


def load(names: Sequence[str], found: dict[str, PluginInfo]) -> pluggy.PluginManager:
    """Register the named plugins, in order; an unknown name lists the available ones."""
    pm = make_manager()
    for name in names:
        info = found.get(name)
        if info is None:
            listing = ", ".join(sorted(found)) or "none installed"
            raise ConfigError(f"unknown plugin {name!r} in --plugins (available: {listing})")
        try:
            module = info.entry_point.load()
        except Exception as e:  # a broken third-party plugin must not hide behind a traceback
            raise ConfigError(f"cannot load plugin {name!r} ({info.entry_point.value}): {e}") from e
        if pm.is_registered(module):
            continue
        pm.register(module, name=name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as e:
        raise ConfigError(f"plugin {e.plugin!r} implements an unknown hook: {e}") from e
    return pm


def options_by_plugin(pm: pluggy.PluginManager) -> dict[str, list[click.Option]]:
    """Call each plugin's ``chassis_add_options`` separately, so help can group them."""
    grouped: dict[str, list[click.Option]] = {}
    for impl in pm.hook.chassis_add_options.get_hookimpls():
        opts: Iterable[click.Option] = impl.function() or ()  # type: ignore[assignment]
        grouped.setdefault(impl.plugin_name, []).extend(opts)
    return grouped


def plugin_module(pm: pluggy.PluginManager, name: str) -> ModuleType | None:
    plugin = pm.get_plugin(name)
    return plugin if isinstance(plugin, ModuleType) else None
