"""Reload on SIGHUP: the configuration read again, checked by every plugin, then applied.

Two phases, so that a configuration that one plugin refuses is refused whole:

1. **check**, once, by the process that got SIGHUP (the angel, or the single process):
   the command line and the defaults-file are parsed again exactly as at start-up
   (``cli.reparse``). Options whose value changed are sorted: the chassis' own
   options that a running process cannot change (``--user``, ``--event-threads``,
   ``--plugins``, ...), and every option of a plugin that does not implement
   ``chassis_check_reload``, keep their running values and are logged as "needs a
   restart"; each plugin's ``chassis_check_reload`` may refuse the whole configuration
   (raise :class:`ChassisError`) or name more options that need a restart.
2. **apply**, in every worker: ``chassis_reload`` with the running and the new
   configuration, in which the kept options have their running values.

Why check once rather than in each of N workers: the workers are forks of one angel,
with the same code, configuration and privileges, and a check depends only on the two
configurations and on the files they name, so every worker would give the same answer;
gathering N answers (with time-outs, and workers restarting in between) buys nothing.
The angel runs the check in a short-lived child, forked like a worker and with the
workers' privileges (``--user``): files are read as the workers would read them, and
what a check loads (a Lua state, a TLS context) never lives in the angel, from which
later workers fork. The angel then hands the accepted configuration to each worker over
a socket of its own (:func:`send`), and keeps it for the workers it starts later.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import os
import pickle
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from chassis import logs, privileges
from chassis.config import Config
from chassis.errors import ChassisError
from chassis.options import core_options
from chassis.plugins import options_by_plugin, plugin_calls
from chassis.runtime import Runtime

log = logging.getLogger("chassis.reload")

#: Reads the configuration again (``cli.reparse``; handed down, the CLI imports us).
Reread = Callable[[Config, pluggy.PluginManager], Config]

#: The chassis' own options that take effect without a restart.
RELOADABLE_CORE = frozenset({"log_level", "shutdown_timeout", "verbose_shutdown", "plugin_dir"})
#: Seconds the angel waits for the check of a new configuration.
CHECK_TIMEOUT = 30.0
#: Most bytes of one configuration sent to a worker.
MAX_MESSAGE = 1 << 20


class ReloadRefused(ChassisError):
    """The new configuration cannot be used; the running one stays."""


@dataclass
class Plan:
    """An accepted configuration: what to apply, and what waits for a restart."""

    config: Config
    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def option_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _owners(pm: pluggy.PluginManager) -> dict[str, str]:
    owners = {opt.name: "chassis" for opt in core_options() if opt.name}
    owners["plugins"] = "chassis"
    for plugin, opts in options_by_plugin(pm).items():
        owners.update({opt.name: plugin for opt in opts if opt.name})
    return owners


def check(pm: pluggy.PluginManager, old: Config, new: Config) -> Plan:
    """Phase one: the plugins' ``chassis_check_reload``; :class:`ReloadRefused` if one refuses."""
    names = sorted(old.values.keys() | new.values.keys())
    changed = [n for n in names if old.values.get(n) != new.values.get(n)]
    owners = _owners(pm)
    checkers = plugin_calls(pm, "chassis_check_reload")
    checking = {call.plugin_name for call in checkers}
    kept = {n for n in changed if (owners.get(n, "chassis") == "chassis" and n not in RELOADABLE_CORE)
            or (owners.get(n, "chassis") != "chassis" and owners[n] not in checking)}
    for call in checkers:
        try:
            named = call(old=old, new=new)
        except ChassisError as e:
            raise ReloadRefused(f"plugin {call.plugin_name!r}: {e}") from None
        except Exception as e:
            raise ReloadRefused(f"plugin {call.plugin_name!r} failed in chassis_check_reload: "
                                f"{type(e).__name__}: {e}") from e
        kept |= set(named or ()) & set(changed)
    return plan_with(old, new, kept)


def prepare(pm: pluggy.PluginManager, running: Config, reread: Reread,
            checker: Callable[[Config], Plan] | None = None) -> Plan | None:
    """Read and check the configuration again; log the outcome (one line each).

    None when it is refused (the reason logged) or when nothing changed. ``checker``
    runs phase one elsewhere (the angel's child); by default here.
    """
    try:
        new = reread(running, pm)
        plan = checker(new) if checker is not None else check(pm, running, new)
    except ChassisError as e:
        log.log(logs.CRITICAL, "reload refused, the running configuration stays: %s", e)
        return None
    if plan.kept:
        log.warning("reload: needs a restart, so keeping the running value of: %s",
                    ", ".join(option_flag(n) for n in plan.kept))
    if not plan.changed:
        log.log(logs.MESSAGE, "reload: no option to change%s",
                "" if plan.kept else " (the configuration is the same)")
        return None
    log.log(logs.MESSAGE, "reload: configuration accepted, changing: %s",
            ", ".join(option_flag(n) for n in plan.changed))
    return plan


def check_in_child(pm: pluggy.PluginManager, old: Config, new: Config,
                   user: privileges.TargetUser | None, timeout: float = CHECK_TIMEOUT) -> Plan:
    """Phase one in a forked child with the workers' privileges (the angel's way)."""
    _flush_logs()  # nothing buffered is written twice
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(rfd)
            logs.set_role("reload-check")
            if user is not None:
                privileges.drop(user)
            try:
                answer: dict[str, Any] = {"kept": check(pm, old, new).kept}
            except ChassisError as e:
                answer = {"error": str(e)}
            os.write(wfd, json.dumps(answer).encode())
        except BaseException as e:
            with contextlib.suppress(BaseException):
                os.write(wfd, json.dumps({"error": f"the check failed: {e}"}).encode())
            code = 1
        finally:
            with contextlib.suppress(BaseException):
                _flush_logs()
            os._exit(code)
    os.close(wfd)
    data = b""
    deadline = time.monotonic() + timeout
    try:
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([rfd], [], [], remaining)[0]:
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                break
            data += chunk
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    finally:
        os.close(rfd)
        os.waitpid(pid, 0)
    if not data:
        raise ReloadRefused(f"the check of the new configuration did not answer within {timeout:g} s")
    answer = json.loads(data)
    if "error" in answer:
        raise ReloadRefused(answer["error"])
    return plan_with(old, new, set(answer["kept"]))


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def plan_with(old: Config, new: Config, kept: set[str]) -> Plan:
    """``new`` with the ``kept`` options at their running values."""
    names = sorted(old.values.keys() | new.values.keys())
    changed = [n for n in names if old.values.get(n) != new.values.get(n)]
    effective = Config(values=dict(new.values), sources=dict(new.sources),
                       defaults_file=new.defaults_file, plugins=list(old.plugins),
                       start_dir=old.start_dir, argv=list(old.argv))
    for name in kept:
        if name in old.values:
            effective.values[name] = old.values[name]
            effective.sources[name] = old.source(name)
        else:
            effective.values.pop(name, None)
    return Plan(effective, [n for n in changed if n not in kept], sorted(kept))


# -- the angel hands an accepted configuration to its workers -----------------------------


def channel() -> tuple[socket.socket, socket.socket]:
    """A message socket pair: the angel's end and a worker's end (one config a message)."""
    angel_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    angel_end.setblocking(False)
    return angel_end, worker_end


def send(sock: socket.socket, config: Config) -> str | None:
    """Send ``config`` to a worker; why it could not be sent, or None."""
    data = pickle.dumps(config)
    if len(data) > MAX_MESSAGE:
        return f"the configuration is too large to send ({len(data)} bytes)"
    try:
        sock.send(data)
    except BlockingIOError:
        return "its earlier reloads are still unread (is it hung?)"
    except OSError as e:
        return e.strerror or str(e)
    return None


def decode(data: bytes) -> Config:
    """The configuration in a message the angel sent (the worker reads the socket: the
    same socket carries an upgrade's requests, :mod:`chassis.upgrade`)."""
    config = pickle.loads(data)  # from our own angel, over a socketpair made before the fork
    if not isinstance(config, Config):
        raise TypeError(f"expected a Config, got {type(config).__name__}")
    return config


# -- phase two, in a worker ----------------------------------------------------------------


async def apply(pm: pluggy.PluginManager, old: Config, new: Config, runtime: Runtime,
                chassis_logs: logs.Logs) -> None:
    """Every plugin's ``chassis_reload``; then the chassis' own reloadable options.

    A plugin that fails here is logged and keeps what it had: the check said it could.
    """
    for call in plugin_calls(pm, "chassis_reload"):
        try:
            result = call(old=old, new=new, runtime=runtime)
            if inspect.isawaitable(result):
                await result
        except Exception as e:
            log.log(logs.CRITICAL, "plugin %r failed to apply the reload (it keeps its running "
                    "configuration): %s: %s", call.plugin_name, type(e).__name__, e,
                    exc_info=True)
    chassis_logs.set_level(new.get("log_level") or "message")
    runtime.config = new
