"""Option parsing: command line, then --defaults-file, then defaults; strict files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from chassis.cli import parse, preparse, split_list
from chassis.config import COMMAND_LINE, DEFAULT, DEFAULTS_FILE, Config
from chassis.errors import ConfigError

CHASSIS = str(Path(sys.executable).with_name("chassis"))


def cnf(tmp_path: Path, body: str, mode: int = 0o640) -> Path:
    path = tmp_path / "mysql-proxy.cnf"
    path.write_text(body)
    path.chmod(mode)
    return path


def parsed(argv: list[str]) -> Config:
    result = parse(argv)
    assert not isinstance(result, int), f"parse exited with {result}"
    return result[0]


def test_split_list_accepts_repeats_and_commas() -> None:
    assert split_list(["proxy, admin", "echo", ""]) == ["proxy", "admin", "echo"]


def test_preparse_finds_plugins_and_defaults_file_in_both_spellings() -> None:
    pre = preparse(["--plugins", "echo", "--defaults-file=/x.cnf", "--plugins=proxy", "-V"])
    assert pre.plugins == ["echo", "proxy"] and pre.defaults_file == "/x.cnf" and pre.version


def test_defaults_apply_without_file() -> None:
    config = parsed(["--plugins=echo"])
    assert config.event_threads == 1
    assert config.log_level == "message"
    assert config.source("event_threads") == DEFAULT
    assert config.plugins == ["echo"]


def test_command_line_beats_file_for_every_type(tmp_path: Path) -> None:
    path = cnf(tmp_path, "[mysql-proxy]\nplugins = echo\nevent-threads = 3\n"
               "log-level = debug\necho-address = 127.0.0.1:1\nshutdown-timeout = 5\n")
    config = parsed([f"--defaults-file={path}", "--event-threads=5", "--log-level=info",
                     "--echo-address=127.0.0.1:2", "--shutdown-timeout=7.5"])
    assert (config.event_threads, config.log_level) == (5, "info")
    assert (config.echo_address, config.shutdown_timeout) == ("127.0.0.1:2", 7.5)
    assert config.source("event_threads") == COMMAND_LINE


def test_file_beats_default_and_is_typed(tmp_path: Path) -> None:
    path = cnf(tmp_path, "# a comment\n[mysql-proxy]\nplugins = echo\nevent-threads = 3\n"
               "daemon = true\nkeepalive = 1\nverbose-shutdown = false\n"
               "shutdown-timeout = 2\numask = 077\n[client]\nport = 3306\n")
    config = parsed([f"--defaults-file={path}"])
    assert config.event_threads == 3 and config.source("event_threads") == DEFAULTS_FILE
    assert config.daemon is True and config.keepalive is True
    assert config.verbose_shutdown is False
    assert config.shutdown_timeout == 2.0
    assert config.umask == 0o077
    assert config.defaults_file == path


def test_existing_mysql_proxy_cnf_works_unchanged(tmp_path: Path) -> None:
    path = cnf(tmp_path, "[mysql-proxy]\nproxy-address = :4040\n"
               "proxy-backend-addresses = 10.0.0.1:3306, 10.0.0.2:3306\n"
               "proxy-read-only-backend-addresses = 10.0.0.3\n"
               "proxy-read-timeout = 1\nno-proxy = true\nlog-level = message\n"
               "proxy-lua-script = /usr/share/mysql-proxy/rw-splitting.lua\n")
    config = parsed([f"--defaults-file={path}"])
    assert config.plugins == ["proxy"]
    assert config.proxy_backend_addresses == ("10.0.0.1:3306", "10.0.0.2:3306")
    assert config.proxy_read_only_backend_addresses == ("10.0.0.3",)
    assert config.proxy_read_timeout == 1.0  # MySQL Proxy ignored timeouts from a file
    assert config.no_proxy is True  # and read reversed flags the wrong way round


def test_command_line_list_replaces_file_list(tmp_path: Path) -> None:
    path = cnf(tmp_path, "[mysql-proxy]\nproxy-backend-addresses = a:1,b:2\n")
    config = parsed([f"--defaults-file={path}", "-b", "c:3", "--proxy-backend-addresses=d:4"])
    assert config.proxy_backend_addresses == ("c:3", "d:4")


def test_plugins_are_comma_separated_on_the_command_line() -> None:
    config = parsed(["--plugins=echo,proxy", "--echo-address=127.0.0.1:9", "-P", ":5000"])
    assert config.plugins == ["echo", "proxy"]
    assert config.echo_address == "127.0.0.1:9" and config.proxy_address == ":5000"


def test_keys_of_an_installed_but_unselected_plugin_are_ignored(tmp_path: Path) -> None:
    path = cnf(tmp_path, "[mysql-proxy]\nplugins = echo\nproxy-address = :4040\n")
    assert parsed([f"--defaults-file={path}"]).plugins == ["echo"]


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o642, 0o666, 0o601])
def test_file_others_can_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = cnf(tmp_path, "[mysql-proxy]\n", mode)
    with pytest.raises(ConfigError, match=r"aren't secure \(0660 or stricter required\)"):
        parse([f"--defaults-file={path}"])


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o660, 0o400])
def test_strict_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = cnf(tmp_path, "[mysql-proxy]\nplugins = echo\n", mode)
    assert parsed([f"--defaults-file={path}"]).plugins == ["echo"]


@pytest.mark.parametrize(
    ("body", "pattern"),
    [
        ("[mysql-proxy]\nplugins = echo\nevent-thread = 2\n", r":3: unknown key 'event-thread' \(value '2'\)"),
        ("[mysql-proxy]\nplugins = echo\nevent-threads = two\n", r":3: bad value 'two' for key 'event-threads'"),
        ("[mysql-proxy]\nplugins = echo\nevent-threads = 0\n", r"bad value '0' for key 'event-threads'"),
        ("[mysql-proxy]\nplugins = echo\ndaemon = maybe\n",
         r":3: bad value 'maybe' for key 'daemon': expected true or false"),
        ("[mysql-proxy]\nplugins = echo\nlog-level = loud\n", r"bad value 'loud' for key 'log-level'"),
        ("[mysql-proxy]\nplugins = echo\numask = 9\n", r"bad value '9' for key 'umask'"),
        ("[mysql-proxy]\nplugins = echo\nlog-file = a\\qb\n", r":3: invalid escape sequence"),
        ("[mysql-proxy]\ndefaults-file = /x\n", r"only be given on the command line"),
        ("plugins = echo\n", r":1: key outside a group"),
        ("[mysql-proxy\n", r":1: group header"),
        ("[mysql-proxy]\njust words\n", r":2: expected 'key = value'"),
    ],
)
def test_bad_files_name_file_line_key_and_value(tmp_path: Path, body: str, pattern: str) -> None:
    path = cnf(tmp_path, body)
    with pytest.raises(ConfigError, match=pattern) as info:
        parse([f"--defaults-file={path}"])
    assert str(path) in str(info.value)


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        parse([f"--defaults-file={tmp_path / 'nope.cnf'}"])


def test_unknown_plugin_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown plugin 'nope'.*available: .*echo.*proxy"):
        parse(["--plugins=nope"])


def test_relative_basedir_is_refused() -> None:
    with pytest.raises(ConfigError, match="--basedir must be an absolute path"):
        parse(["--plugins=echo", "--basedir=rel"])


def test_log_file_and_syslog_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="only one of them"):
        parse(["--plugins=echo", "--log-file=/tmp/x", "--log-use-syslog"])


def test_relative_paths_resolve_against_basedir(tmp_path: Path) -> None:
    config = parsed(["--plugins=echo", f"--basedir={tmp_path}"])
    assert config.path("x.log") == tmp_path / "x.log"
    assert config.path("/abs/y") == Path("/abs/y")


def run_chassis(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHASSIS, *args], capture_output=True, text=True, timeout=30)


def test_help_groups_options_by_plugin() -> None:
    result = run_chassis("--help")
    assert result.returncode == 0
    out = result.stdout
    assert "Chassis options:" in out and "--keepalive" in out
    assert "proxy options:" in out and "--proxy-backend-addresses" in out
    assert "echo options:" in out and "--echo-address" in out
    assert out.index("Chassis options:") < out.index("echo options:")


def test_version_lists_loaded_plugins() -> None:
    result = run_chassis("-V", "--plugins=echo")
    assert result.returncode == 0
    assert result.stdout.startswith("chassis ")
    assert "  echo: 1.0.0" in result.stdout


def test_bad_file_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    path = cnf(tmp_path, "[mysql-proxy]\nplugins = echo\nbogus = 1\n")
    result = run_chassis(f"--defaults-file={path}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"chassis: {path}:3: unknown key 'bogus' (value '1'); see chassis --help for the "
        "options of the plugins you load"
    ]


def test_unknown_command_line_option_exits_2() -> None:
    result = run_chassis("--plugins=echo", "--no-such-option")
    assert result.returncode == 2
    assert "No such option '--no-such-option'" in result.stderr


def _bool_flags() -> list[str]:
    """Every boolean flag of the chassis and of every installed plugin."""
    from chassis import plugins
    from chassis.cli import build_command

    found = plugins.available()
    pm = plugins.load(list(found), found)
    command = build_command(plugins.options_by_plugin(pm))
    return sorted(p.opts[0][2:] for p in command.params
                  if isinstance(p, click.Option) and p.is_flag and p.is_bool_flag
                  and p.name not in ("version", "help"))


@pytest.mark.parametrize("flag", _bool_flags())
def test_a_flag_set_in_the_defaults_file_is_turned_off_on_the_command_line(
        tmp_path: Path, flag: str) -> None:
    owner = "echo" if flag.startswith("echo-") else "admin" if flag.startswith("admin-") \
        else "proxy"
    path = cnf(tmp_path, f"[mysql-proxy]\nplugins = {owner}\n{flag} = true\n")
    name = flag.replace("-", "_")
    assert parsed([f"--defaults-file={path}"]).get(name) is True
    negation = flag[3:] if flag.startswith("no-") else f"no-{flag}"
    config = parsed([f"--defaults-file={path}", f"--{negation}"])
    assert config.get(name) is False and config.source(name) == COMMAND_LINE


def test_help_shows_both_forms_of_a_flag() -> None:
    out = subprocess.run([CHASSIS, "--plugins=proxy", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for pair in ("--daemon / --no-daemon", "--keepalive / --no-keepalive",
                 "--no-proxy / --proxy", "--max-open-files"):
        assert pair in out, pair
    assert "--no-version" not in out
