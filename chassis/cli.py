"""The ``chassis`` command: two-phase option parsing, then the process runner.

Plugins add options, and click will not add options to a running context, so the
command line is read twice: first for ``--plugins``/``--defaults-file``/``--help``/
``--version`` alone, then, with the plugins loaded, for everything. One precedence rule
holds for every option: command line, then ``--defaults-file``, then the default.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from chassis import __version__, keyfile, plugins, upgrade
from chassis.config import COMMAND_LINE, DEFAULT, DEFAULTS_FILE, Config
from chassis.errors import ChassisError, ConfigError
from chassis.options import CLI_ONLY, core_options

DEFAULT_PLUGINS = ("proxy",)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass
class PreParse:
    defaults_file: str | None = None
    plugins: list[str] = field(default_factory=list)
    help: bool = False
    version: bool = False


def split_list(values: Sequence[str]) -> list[str]:
    """``["a,b", " c"]`` -> ``["a", "b", "c"]``: lists may be repeated and comma-separated."""
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def preparse(argv: Sequence[str]) -> PreParse:
    """Find the options that decide which other options exist; ignore everything else."""
    pre = PreParse()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            break
        for name in ("--defaults-file", "--plugins"):
            value: str | None = None
            if arg.startswith(name + "="):
                value = arg[len(name) + 1 :]
            elif arg == name and i + 1 < len(args):
                value = args[i + 1]
                i += 1
            if value is not None:
                if name == "--plugins":
                    pre.plugins.append(value)
                else:
                    pre.defaults_file = value
        if arg in ("-h", "--help"):
            pre.help = True
        if arg in ("-V", "--version"):
            pre.version = True
        i += 1
    return pre


class GroupedCommand(click.Command):
    """A command whose ``--help`` shows options under their plugin's name."""

    def __init__(self, *args: Any, groups: dict[str, list[click.Parameter]], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.groups = groups

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for title, params in self.groups.items():
            records = [r for p in params if (r := p.get_help_record(ctx)) is not None]
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)


def _long_names(param: click.Parameter) -> list[str]:
    return [opt[2:] for opt in param.opts if opt.startswith("--")]


def _convert(entry: keyfile.Entry, param: click.Option, where: str) -> Any:
    value = entry.value
    try:
        if param.is_flag:
            lowered = value.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise click.BadParameter("expected true or false")
        if param.multiple:
            return tuple(param.type.convert(v, param, None) for v in split_list([value]))
        return param.type.convert(value, param, None)
    except click.BadParameter as e:
        raise ConfigError(f"{where}: bad value {value!r} for key {entry.key!r}: {e.message}") from None


def file_defaults(
    dfile: keyfile.DefaultsFile,
    params: Sequence[click.Parameter],
    other_plugin_keys: set[str],
) -> dict[str, Any]:
    """Turn the file's entries into click's ``default_map``, checking every key and value."""
    by_key = {key: p for p in params for key in _long_names(p)}
    default_map: dict[str, Any] = {}
    for key, entry in dfile.entries.items():
        where = dfile.where(key)
        if key in CLI_ONLY:
            raise ConfigError(f"{where}: {key!r} can only be given on the command line")
        param = by_key.get(key)
        if param is None:
            if key in other_plugin_keys:
                continue  # belongs to an installed plugin that is not selected
            raise ConfigError(
                f"{where}: unknown key {key!r} (value {entry.value!r}); see chassis --help "
                "for the options of the plugins you load"
            )
        assert isinstance(param, click.Option) and param.name is not None
        default_map[param.name] = _convert(entry, param, where)
    return default_map


def _keys_of_unselected(found: dict[str, plugins.PluginInfo], selected: Sequence[str]) -> set[str]:
    others = [n for n in found if n not in selected]
    if not others:
        return set()
    try:
        pm = plugins.load(others, found)
    except ConfigError:
        return set()
    return {
        key
        for opts in plugins.options_by_plugin(pm).values()
        for opt in opts
        for key in _long_names(opt)
    }


def add_negations(params: Sequence[click.Parameter], taken: dict[str, str]) -> None:
    """Give every boolean flag its ``--no-`` form (``--daemon / --no-daemon``), so that a
    flag set in the defaults-file can be turned off on the command line.

    A flag named ``--no-x`` is negated by ``--x``. ``--version`` and ``--help`` are not
    negated (they are command-line actions, not settings).
    """
    for param in params:
        if not isinstance(param, click.Option) or not param.is_flag or not param.is_bool_flag:
            continue
        if param.secondary_opts or param.name in ("version", "help"):
            continue
        long_names = _long_names(param)
        if not long_names:
            continue
        name = long_names[0]
        negation = "--" + (name[3:] if name.startswith("no-") else f"no-{name}")
        if negation in taken:
            continue  # another option has that name: keep it
        param.secondary_opts = [negation]
        taken[negation] = taken.get(f"--{name}", "chassis")


def build_command(
    grouped: dict[str, list[click.Option]], default_map: dict[str, Any] | None = None
) -> GroupedCommand:
    core = core_options()
    version = click.Option(["-V", "--version"], is_flag=True, help="Print versions and exit.")
    groups: dict[str, list[click.Parameter]] = {"Chassis options": [version, *core]}
    seen: dict[str, str] = {opt: "chassis" for p in groups["Chassis options"] for opt in p.opts}
    for plugin_name, opts in grouped.items():
        for opt in opts:
            for name in opt.opts:
                if name in seen:
                    raise ConfigError(
                        f"plugin {plugin_name!r} adds option {name}, which {seen[name]!r} "
                        "already has; one of them must rename it"
                    )
                seen[name] = plugin_name
        groups[f"{plugin_name} options"] = list(opts)
    params = [p for ps in groups.values() for p in ps]
    add_negations(params, seen)
    return GroupedCommand(
        "chassis",
        params=params,
        groups=groups,
        help="A process chassis for plugins: chassis --plugins=proxy --proxy-backend-addresses=HOST:PORT",
        context_settings={
            "default_map": default_map or {},
            "help_option_names": ["-h", "--help"],
            "max_content_width": 100,
        },
    )


def version_text(selected: Sequence[str], found: dict[str, plugins.PluginInfo],
                 pm: Any = None) -> str:
    """Versions of the chassis, Python, the selected plugins and what they report
    through ``chassis_version_info`` (the proxy: lupa and its Lua runtime)."""
    lines = [f"chassis {__version__}", f"  python: {platform.python_version()}"]
    lines.append("-- modules")
    lines += [f"  {name}: {found[name].version}" for name in selected if name in found]
    if pm is not None:
        reported = [line for lines_ in reversed(pm.hook.chassis_version_info())
                    for line in lines_ or ()]
        if reported:
            lines.append("-- libraries")
            lines += [f"  {line}" for line in reported]
    return "\n".join(lines)


def _plugin_names(pre: PreParse, dfile: keyfile.DefaultsFile | None) -> list[str]:
    if pre.plugins:
        return split_list(pre.plugins)
    if dfile is not None and "plugins" in dfile.entries:
        return split_list([dfile.entries["plugins"].value])
    return list(DEFAULT_PLUGINS)


def _config(argv: Sequence[str], dfile: keyfile.DefaultsFile | None, names: list[str],
            ctx: click.Context) -> Config:
    """The :class:`Config` of a parsed command line (``--version`` already taken out)."""
    values = dict(ctx.params)
    sources: dict[str, str] = {}
    for name in values:
        src = ctx.get_parameter_source(name)
        sources[name] = {
            ParameterSource.COMMANDLINE: COMMAND_LINE,
            ParameterSource.DEFAULT_MAP: DEFAULTS_FILE,
        }.get(src, DEFAULT) if src is not None else DEFAULT
    values["plugins"] = names
    if values.get("basedir") and not values["basedir"].startswith("/"):
        raise ConfigError(f"--basedir must be an absolute path, got {values['basedir']!r}")
    if values.get("log_file") and values.get("log_use_syslog"):
        raise ConfigError("--log-file and --log-use-syslog: only one of them is allowed")
    return Config(values=values, sources=sources, defaults_file=dfile.path if dfile else None,
                  plugins=names, argv=list(argv))


def parse(argv: Sequence[str]) -> tuple[Config, Any] | int:
    """Parse everything; return the config and plugin manager, or an exit code."""
    pre = preparse(argv)
    dfile = keyfile.load(pre.defaults_file) if pre.defaults_file else None
    found = plugins.available()
    names = _plugin_names(pre, dfile)
    if pre.help:  # show the options of every plugin we can find
        names_to_load = names + [n for n in found if n not in names]
        pm = plugins.load([n for n in names_to_load if n in found], found)
    else:
        pm = plugins.load(names, found)
    grouped = plugins.options_by_plugin(pm)
    probe = build_command(grouped)
    default_map: dict[str, Any] = {}
    if dfile is not None:
        default_map = file_defaults(dfile, probe.params, _keys_of_unselected(found, names))
    command = build_command(grouped, default_map)
    try:
        ctx = command.make_context("chassis", list(argv))
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        upgrade.report_early_failure(e.format_message(), 2)
        return 2
    if ctx.params.pop("version", False):
        click.echo(version_text(names, found, pm))
        return 0
    return _config(argv, dfile, names, ctx), pm


def reparse(running: Config, pm: Any) -> Config:
    """The configuration again, for a reload (SIGHUP): the same command line, the
    defaults-file as it is now, the options of the plugins that run.

    Raises :class:`ConfigError` for anything start-up would refuse (an unreadable or
    invalid file, a bad value). A changed plugin list comes back in ``values["plugins"]``
    (the reload keeps the running plugins: that needs a restart); keys of the plugins
    that do not run are skipped, as at start-up. Relative paths keep resolving against
    the directory chassis was started from.
    """
    argv = running.argv
    pre = preparse(argv)
    dfile = None
    if pre.defaults_file:  # relative to where chassis started (a daemon is in / now)
        dfile = keyfile.load(str(running.start_dir / Path(pre.defaults_file).expanduser()))
    names = _plugin_names(pre, dfile)
    grouped = plugins.options_by_plugin(pm)
    probe = build_command(grouped)
    default_map: dict[str, Any] = {}
    if dfile is not None:
        others = _keys_of_unselected(plugins.available(), running.plugins)
        default_map = file_defaults(dfile, probe.params, others)
    command = build_command(grouped, default_map)
    try:
        ctx = command.make_context("chassis", list(argv))
    except click.exceptions.Exit:
        raise ConfigError("the command line asks for --help or --version") from None
    except click.ClickException as e:
        raise ConfigError(e.format_message()) from None
    ctx.params.pop("version", None)
    config = _config(argv, dfile, names, ctx)
    config.plugins = list(running.plugins)
    config.start_dir = running.start_dir
    return config


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        parsed = parse(args)
        if isinstance(parsed, int):
            sys.exit(parsed)
        config, pm = parsed
        from chassis.runner import run

        sys.exit(run(config, pm, reread=reparse))
    except ChassisError as e:
        print(f"chassis: {e}", file=sys.stderr)
        upgrade.report_early_failure(str(e), e.exit_code)
        sys.exit(e.exit_code)
