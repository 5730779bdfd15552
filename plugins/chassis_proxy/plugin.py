"""Entry point of the ``proxy`` plugin: its options and its chassis hooks.

Kept light: heavy modules are imported when the plugin starts, not when ``--help``
lists its options.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

import chassis


@chassis.hookimpl
def chassis_add_options() -> Sequence[click.Option]:
    return [
        click.Option(["-P", "--proxy-address"], default=":4040", show_default=True,
                     help="Listen address host:port, or a unix socket path."),
        click.Option(["-b", "--proxy-backend-addresses"], multiple=True, metavar="HOST:PORT",
                     help="Read/write backend; repeatable (default 127.0.0.1:3306)."),
        click.Option(["-r", "--proxy-read-only-backend-addresses"], multiple=True,
                     metavar="HOST:PORT", help="Read-only backend; repeatable."),
        click.Option(["--proxy-skip-profiling"], is_flag=True,
                     help="Accepted for compatibility (no effect, as in MySQL Proxy)."),
        click.Option(["--proxy-fix-bug-25371"], is_flag=True,
                     help="Accepted for compatibility (no effect)."),
        click.Option(["-s", "--proxy-lua-script"], metavar="FILE",
                     help="Lua script with the proxy hooks."),
        click.Option(["--no-proxy"], is_flag=True, help="Do not open the proxy listener."),
        click.Option(["--proxy-pool-no-change-user"], is_flag=True,
                     help="Do not reset pooled connections with COM_CHANGE_USER."),
        click.Option(["--proxy-connect-timeout"], type=float, default=2.0, show_default=True,
                     help="Seconds to wait for a backend connection."),
        click.Option(["--proxy-read-timeout"], type=float, default=28800.0, show_default=True,
                     help="Seconds to wait for a read."),
        click.Option(["--proxy-write-timeout"], type=float, default=28800.0, show_default=True,
                     help="Seconds to wait for a write."),
        click.Option(["--proxy-max-connections"], type=click.IntRange(min=0), default=0,
                     help="Most client connections per worker (0: no limit)."),
        click.Option(["--proxy-ssl-cert"], metavar="FILE",
                     help="PEM certificate: offer TLS to clients."),
        click.Option(["--proxy-ssl-key"], metavar="FILE", help="PEM key for --proxy-ssl-cert."),
        click.Option(["--proxy-backend-ssl"], is_flag=True, help="Use TLS towards the backends."),
        click.Option(["--proxy-backend-ssl-ca"], metavar="FILE",
                     help="CA to verify backends with (verification is on when given)."),
    ]
