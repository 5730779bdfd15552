"""Finding and loading plugins: entry points of the group ``chassis.plugins``."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

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
    """Call each plugin's ``chassis_add_options`` separately, so help can group them
    (in registration order)."""
    grouped: dict[str, list[click.Option]] = {}
    for call in reversed(plugin_calls(pm, "chassis_add_options")):
        opts: Iterable[click.Option] = call() or ()
        grouped.setdefault(call.plugin_name, []).extend(opts)
    return grouped


@dataclass(frozen=True)
class PluginCall:
    """One plugin's implementation of a hook, called through pluggy.

    The worker calls plugins one at a time, so that a failure names its plugin and does
    not keep the others from stopping; going through a subset of pluggy's hook caller
    (rather than the implementation's function) keeps what pluggy adds to every call:
    hookwrappers, tracing (``CHASSIS_TRACE_PLUGINS``) and call monitoring.
    """

    plugin_name: str
    caller: Callable[..., Any]

    def __call__(self, **kwargs: Any) -> Any:
        """The plugin's return value (pluggy drops a None, which comes back as None)."""
        results = self.caller(**kwargs)
        return results[0] if results else None


def plugin_calls(pm: pluggy.PluginManager, hook: str) -> list[PluginCall]:
    """Each plugin's implementation of ``hook``, in pluggy's calling order (last
    registered first; ``tryfirst``/``trylast`` honoured). Hookwrappers are not in the
    list: they wrap every call."""
    impls = [impl for impl in getattr(pm.hook, hook).get_hookimpls()
             if not (impl.hookwrapper or impl.wrapper)]
    calls = []
    for impl in reversed(impls):
        caller = pm.subset_hook_caller(hook, [other.plugin for other in impls if other is not impl])
        called = [i for i in caller.get_hookimpls() if not (i.hookwrapper or i.wrapper)]
        if called != [impl]:  # an implementation under another name (specname): call it alone
            calls.append(PluginCall(impl.plugin_name, _direct(impl)))
        else:
            calls.append(PluginCall(impl.plugin_name, caller))
    return calls


def _direct(impl: pluggy.HookImpl) -> Callable[..., list[Any]]:
    def call(**kwargs: Any) -> list[Any]:
        result = impl.function(*(kwargs[name] for name in impl.argnames))
        return [] if result is None else [result]

    return call


def plugin_module(pm: pluggy.PluginManager, name: str) -> ModuleType | None:
    plugin = pm.get_plugin(name)
    return plugin if isinstance(plugin, ModuleType) else None
