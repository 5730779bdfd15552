"""The plugin author's reference: every hook the chassis calls, in the order it calls them.

A plugin is a module (or object) registered under the entry-point group
``chassis.plugins``; the entry point's name is what ``--plugins`` selects::

    [project.entry-points."chassis.plugins"]
    echo = "chassis_echo"

Implement hooks with the :data:`chassis.hookimpl` marker. Every hook is optional.

Life of a plugin, per process:

1. ``chassis_add_options`` (in every process, also for ``--help`` of plugins that are
   found but not selected); ``chassis_version_info`` for ``--version`` only.
2. The chassis parses the command line and the defaults-file, daemonizes, forks the
   angel and the workers (``--keepalive``, ``--event-threads``). The rest runs in
   **each worker process**, inside its asyncio event loop:
3. ``chassis_apply_config``: validate, bind listening sockets. Runs as root when the
   chassis was started as root: privileges are dropped (``--user``) right after it.
4. ``chassis_serve``: start serving. The worker reports ready (pid file, ``--daemon``
   launcher, ``READY=1`` to systemd) once every plugin's ``chassis_serve`` has returned.
5. ``chassis_stop``: SIGTERM/SIGINT arrived; stop accepting, let running work finish
   until ``deadline``.
6. ``chassis_shutdown``: last chance to release resources; the loop is about to close.

SIGUSR2, while serving, upgrades (see docs/operations.md, "Upgrading without dropping
clients"): a new chassis starts with the same command line, takes the listening sockets
(``chassis.listen.bind_listener`` finds them), and once it is ready each old worker
calls ``chassis_handover_out`` and then stops as on SIGTERM; the new workers get what
was handed over through ``chassis_handover_in``.

SIGHUP, while serving, reloads (see docs/operations.md, "Reloading"): the command line
and the defaults-file are parsed again, ``chassis_check_reload`` of every plugin is
called once (in the angel's check child, or in the single process), and when none
refuses, ``chassis_reload`` runs in every worker.

A failure in 3 or 4 (raise :class:`chassis.errors.StartupError`, or any exception) stops
start-up: the message is logged, reported to the launching shell, and the angel does not
restart the worker.

Plugins meet through the chassis, never by importing each other's modules:
``chassis_control`` carries JSON requests between workers, ``chassis_offer`` hands
objects to the other plugins of the same worker.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import click
import pluggy

if TYPE_CHECKING:
    from chassis.config import Config
    from chassis.metrics import Metric
    from chassis.runtime import Runtime
    from chassis.upgrade import HandoverItem, Send

hookspec = pluggy.HookspecMarker("chassis")


@hookspec
def chassis_add_options() -> Sequence[click.Option]:
    """Return the command-line options this plugin adds.

    Name them after the plugin (``--proxy-address``, ``--echo-address``) so they cannot
    collide; the chassis refuses two plugins that add the same name. They appear in
    ``chassis --help`` under the plugin's name and may be set in the defaults-file under
    ``[mysql-proxy]`` without the leading dashes. Use ``multiple=True`` for options that
    may repeat: in the defaults-file such a value is a comma-separated list. Values are
    read back from :class:`chassis.config.Config` by their Python name
    (``config.proxy_address``).
    """
    raise NotImplementedError


@hookspec
def chassis_version_info() -> Sequence[str]:
    """Return lines for ``chassis --version``: the libraries and runtimes this plugin uses.

    Called in the launching process, for the selected plugins only, with nothing else
    started; import what you report inside the hook, so that ``--help`` stays quick.
    One line per library, ``name: version``, e.g. ``lupa: 2.8 (Lua runtime LuaJIT 2.1)``.
    A library that cannot be imported is worth a line too (``lupa: not available``).
    """
    raise NotImplementedError


@hookspec
def chassis_apply_config(config: Config, runtime: Runtime) -> None:
    """Check the configuration and prepare to serve: bind listening sockets here.

    Called in every worker, before privileges are dropped, so ports below 1024 can be
    bound. With several workers (``--event-threads``) each binds its own socket with
    ``SO_REUSEPORT``: :func:`chassis.listen.bind_listener` does that, and refuses an
    address another process (a second chassis) already listens on. Raise
    :class:`chassis.errors.StartupError` with a message that tells the user what to do.
    """


@hookspec
def chassis_serve(runtime: Runtime) -> Awaitable[None] | None:
    """Start serving inside the running event loop (``runtime.loop``).

    Return a coroutine (or None). The chassis awaits all of them before it reports the
    process ready; keep them short: start servers and background tasks, do not run
    them to completion.
    """


@hookspec
def chassis_stop(runtime: Runtime, deadline: float) -> Awaitable[None] | None:
    """Graceful stop: stop accepting new work and let running work finish.

    ``deadline`` is on the ``runtime.loop.time()`` clock (``--shutdown-timeout`` from
    the moment the stop was requested). Return a coroutine that completes when
    everything is drained; the chassis cancels it at the deadline and closes what is
    left.
    """


@hookspec
def chassis_control(runtime: Runtime, request: dict[str, Any]) -> Any:
    """Answer a request another worker sent with ``runtime.control.broadcast(request)``.

    Requests are JSON objects; by convention ``request["plugin"]`` names the plugin that
    should answer and the others return None. The result must be JSON-serializable;
    every non-None result is sent back (a list, one entry per answering plugin).
    Runs inside the event loop: keep it quick.
    """


@hookspec(firstresult=True)
def chassis_offer(name: str, runtime: Runtime) -> Any:
    """Hand another plugin of this worker the object it asks for by ``name``, or None.

    Plugins do not import each other's modules (a plugin may be installed without the
    other, or replaced by a third-party one). A plugin that has something to share (a
    view of its state, a factory) answers here under a name that starts with its own
    (``"proxy.lua_script_host"``); the plugin that wants it calls
    ``runtime.offered("proxy.lua_script_host")``, which returns the first answer that
    is not None, or None when no loaded plugin offers that name (tell the user which
    plugin to add to ``--plugins``). The chassis only routes: the name and the object's
    interface are a contract between the two plugins, documented by the one that offers
    it; the one that uses it describes what it needs as a :class:`typing.Protocol` of
    its own. Unlike ``chassis_control`` the object stays inside this worker process and
    is passed as is (no JSON).

    Asked after every plugin's ``chassis_apply_config`` (from ``chassis_serve`` on) and
    possibly per request: answer quickly, and return None for names that are not
    yours and while you have nothing to offer (before the start, after the shutdown).
    """


@hookspec
def chassis_metrics(runtime: Runtime) -> Sequence[Metric] | None:
    """Return this worker's metrics, for ``--metrics-address`` (Prometheus' ``/metrics``).

    Build them with :func:`chassis.metrics.counter`, :func:`~chassis.metrics.gauge` and
    :func:`~chassis.metrics.histogram`: plain JSON values (a name, a help line, a type,
    samples with labels), read from the counters the plugin keeps anyway, so that the hot
    path only increments integers and the work is done when Prometheus scrapes. Name them
    after Prometheus' conventions: ``chassis_<plugin>_``, ``_total`` for counters, base
    units (``_seconds``, ``_bytes``). The worker that gets the scrape asks every worker
    over the control channel and sums counters and histograms with the same labels;
    gauges are summed too unless ``aggregate="worker"`` (one series per worker, with a
    ``worker`` label) or ``"max"``. Runs inside the event loop: keep it quick.
    """


@hookspec
def chassis_ready(runtime: Runtime) -> str | None:
    """Why this worker is not ready to serve (``/readyz`` of ``--metrics-address``), or None.

    A proxy returns a reason while its listener is closed or no backend is up. ``/readyz``
    answers 200 only when every worker answered and none gave a reason (and none is
    stopping); ``/healthz`` only says that a worker answers HTTP.
    """


@hookspec
def chassis_check_reload(old: Config, new: Config) -> Sequence[str] | None:
    """Phase one of a reload (SIGHUP): can this plugin take ``new`` in a running process?

    ``old`` is the running configuration, ``new`` the one just parsed from the command
    line and the defaults-file. Check the new values as start-up would (parse them,
    compile what must compile) and raise :class:`chassis.errors.ChassisError` (a
    ``StartupError`` or ``ConfigError``) with a message for the operator to refuse the
    whole reload: no plugin in any worker then changes anything, and the running
    configuration stays. Return the Python names of your options that changed but that
    a running process cannot change (a listen address): they keep their running values
    and are logged as "needs a restart". Options of a plugin that does not implement
    this hook all need a restart.

    Called once per reload, not in the workers: in a short-lived child of the angel
    that has the workers' privileges (``--user``), or in the single process. It has no
    runtime and must not change any state: build what you need to check, then drop it.
    """


@hookspec
def chassis_reload(old: Config, new: Config, runtime: Runtime) -> Awaitable[None] | None:
    """Phase two of a reload: apply ``new`` in this worker, for new work.

    Called in every worker once every plugin's ``chassis_check_reload`` accepted ``new``,
    in which the options that need a restart have their running values. Do not close
    connections or fail running work: what was started keeps its settings, new work
    takes the new ones. Must not fail (the check said it would not): an exception is
    logged and the plugin keeps what it had. ``runtime.config`` becomes ``new`` after
    every plugin's ``chassis_reload`` has returned. Runs inside the event loop; may
    return a coroutine.
    """


@hookspec
def chassis_handover_out(runtime: Runtime, send: Send) -> (
        Awaitable[tuple[int, int] | None] | tuple[int, int] | None):
    """An upgrade (SIGUSR2): the new chassis is ready; hand it what can move.

    Called once in each old worker, right before its graceful stop (``chassis_stop``,
    then ``chassis_shutdown``: the worker then exits). ``await send(state, fds)`` hands
    one item to the new chassis: ``state`` a JSON-serializable dict, ``fds`` file
    descriptors (sockets) that are duplicated into the message, so close yours once it
    returned. Keep ``send`` to hand over more during the stop (work that comes to rest
    later); it raises ``OSError`` once the new chassis is gone. Return (how many items
    you are handing over, how many stay here to finish), for the log line
    "upgrade: new chassis pid N ready, handing over K connections, draining M".

    An item may reach any of the new chassis' workers (``--event-threads``).
    """


@hookspec(firstresult=True)
def chassis_handover_in(runtime: Runtime, item: HandoverItem) -> Awaitable[None] | bool | None:
    """A chassis started by an upgrade receives ``item`` from an old worker's plugin.

    ``item.plugin`` names the plugin that sent it (the entry-point name), ``item.state``
    is its dict, ``item.fds`` its file descriptors, now owned by this process. Return
    None when the item is not yours (another plugin's); otherwise take the fds (wrap
    them, or close them) and return True, or a coroutine that does (the chassis runs it
    and logs its failure). Called in a worker that is serving (after every
    ``chassis_serve``), inside its event loop. An item nobody takes is logged and its
    fds closed.
    """


@hookspec
def chassis_reopen_logs(runtime: Runtime) -> None:
    """SIGHUP arrived: reopen the files this plugin appends to (its own logs), at their path.

    Called in every worker, in the event loop, right after the chassis reopened its
    ``--log-file``, so that logrotate can move a plugin's log away and signal the
    chassis as it does for the main log. Open with ``O_APPEND`` and, when the worker
    may have dropped privileges (``--user``), create the file before the drop (in
    ``chassis_apply_config``) owned by that user, so that the reopen is allowed. Log a
    failure and keep writing to the old file rather than raise.
    """


@hookspec
def chassis_shutdown(runtime: Runtime) -> None:
    """Release everything: called once per worker after the stop, even after a failed start."""
