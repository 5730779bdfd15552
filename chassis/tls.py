"""TLS for plugins that speak STARTTLS-style protocols: modes, contexts, options, the upgrade.

Protocol-free on purpose (the chassis knows no MySQL): a plugin that offers TLS on its
listener declares the option family with :func:`listener_options` (``--proxy-ssl-*``,
``--admin-ssl-*``), turns the values into a :class:`ListenerTLS` with
:func:`load_listener`, and, when its client asks for TLS in-band, switches the transport
with :func:`upgrade`. What "asking for TLS" looks like, and what a client that does not
ask gets under ``required``, is the plugin's business. Option and value names follow
MySQL Router (``client_ssl_mode``, ``server_ssl_verify``) and MariaDB (``ssl_cipher``,
``tls_version``), so an operator's habits carry over.
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chassis.config import Config
from chassis.errors import StartupError

if TYPE_CHECKING:
    import asyncio


class TLSMode(enum.StrEnum):
    """What a listener does about TLS (MySQL Router's ``client_ssl_mode``)."""

    DISABLED = "disabled"  # never offered; a client asking for it is refused
    PREFERRED = "preferred"  # offered; a client may go on without it
    REQUIRED = "required"  # offered; a client that does not use it is refused


class Verify(enum.StrEnum):
    """How the far end's certificate is checked (MySQL Router's ``server_ssl_verify``)."""

    NONE = "none"  # not at all: encryption without authentication
    CA = "ca"  # signed by a trusted CA, any name
    IDENTITY = "identity"  # signed by a trusted CA and issued for the address connected to


#: ``--*-ssl-min-version`` values, spelled as MariaDB's ``tls_version`` spells them.
TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
DEFAULT_MIN_VERSION = "TLSv1.2"


def _apply_common(ctx: ssl.SSLContext, min_version: str | None, cipher: str | None,
                  option: str) -> None:
    ctx.minimum_version = TLS_VERSIONS[min_version or DEFAULT_MIN_VERSION]
    if cipher:
        try:
            ctx.set_ciphers(cipher)
        except ssl.SSLError:
            raise StartupError(
                f"{option}-cipher: no cipher matches {cipher!r} (an OpenSSL cipher list, "
                "e.g. ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384; it does "
                "not restrict TLSv1.3's suites)"
            ) from None


def _readable(path: Path, option: str) -> Path:
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise StartupError(f"{option}: cannot read {path}: {e.strerror}") from None
    return path


def server_context(cert: Path, key: Path, *, ca: Path | None = None,
                   min_version: str | None = None, cipher: str | None = None,
                   option: str = "--ssl") -> ssl.SSLContext:
    """The context a listener offers; with ``ca``, clients must show a certificate it signed.

    ``option`` is the option family's prefix (``--proxy-ssl``), for error messages.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_common(ctx, min_version, cipher, option)
    try:
        ctx.load_cert_chain(str(_readable(cert, f"{option}-cert")), str(_readable(key, f"{option}-key")))
    except (ssl.SSLError, OSError) as e:
        raise StartupError(
            f"{option}-cert/{option}-key: cannot use {cert} with {key}: {e} "
            "(both must be PEM files, and the key must match the certificate)"
        ) from None
    if ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(_readable(ca, f"{option}-ca")))
        except (ssl.SSLError, OSError) as e:
            raise StartupError(f"{option}-ca: cannot load {ca}: {e}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(*, ca: Path | None = None, verify: Verify = Verify.IDENTITY,
                   min_version: str | None = None, cipher: str | None = None,
                   option: str = "--ssl") -> ssl.SSLContext:
    """The context for outgoing connections: verified against ``ca``, else the system's CAs.

    With :attr:`Verify.IDENTITY` the caller must pass ``server_hostname`` (the host or
    address connected to) when it wraps a connection; :func:`needs_hostname` says so.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_common(ctx, min_version, cipher, option)
    if verify == Verify.NONE:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.check_hostname = verify == Verify.IDENTITY
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        if ca is not None:
            ctx.load_verify_locations(cafile=str(_readable(ca, f"{option}-ca")))
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (ssl.SSLError, OSError) as e:
        raise StartupError(f"{option}-ca: cannot load {ca}: {e}") from None
    return ctx


def needs_hostname(ctx: ssl.SSLContext) -> bool:
    return ctx.check_hostname


@dataclass(frozen=True)
class ListenerTLS:
    """A listener's TLS: its mode and, unless disabled, the context it offers."""

    mode: TLSMode
    context: ssl.SSLContext | None = None
    verifies_clients: bool = False

    @property
    def offered(self) -> bool:
        return self.context is not None

    @property
    def required(self) -> bool:
        return self.mode == TLSMode.REQUIRED

    def describe(self) -> str:
        if self.context is None:
            return "no TLS"
        return f"TLS {self.mode}" + (" with client certificates" if self.verifies_clients else "")


def listener_options(prefix: str, what: str) -> list[click.Option]:
    """``--{prefix}-mode/-cert/-key/-ca/-min-version/-cipher`` for a listener serving ``what``."""
    return [
        click.Option([f"--{prefix}-cert"], metavar="FILE",
                     help=f"PEM certificate offered to {what} (TLS is then preferred)."),
        click.Option([f"--{prefix}-key"], metavar="FILE", help=f"PEM key for --{prefix}-cert."),
        click.Option([f"--{prefix}-mode"], type=click.Choice([m.value for m in TLSMode]),
                     default=None,
                     help=f"TLS for {what}: disabled, preferred (the default with a "
                          f"certificate) or required ({what} without TLS are refused)."),
        click.Option([f"--{prefix}-ca"], metavar="FILE",
                     help=f"{what.capitalize()} must show a certificate signed by this CA."),
        click.Option([f"--{prefix}-min-version"], type=click.Choice(list(TLS_VERSIONS)),
                     default=None, help=f"Oldest TLS version accepted (default {DEFAULT_MIN_VERSION})."),
        click.Option([f"--{prefix}-cipher"], metavar="LIST",
                     help="OpenSSL cipher list for TLSv1.2 (as MariaDB's --ssl-cipher)."),
    ]


def load_listener(config: Config, prefix: str) -> ListenerTLS:
    """The values of :func:`listener_options` checked and turned into a :class:`ListenerTLS`.

    Without ``-mode`` the mode is ``preferred`` when a certificate is given and
    ``disabled`` otherwise: giving a certificate is what turned TLS on before modes
    existed.
    """
    key_prefix = prefix.replace("-", "_")
    option = f"--{prefix}"

    def get(name: str) -> Any:
        return config.get(f"{key_prefix}_{name}")

    cert_opt, key_opt, ca_opt = get("cert"), get("key"), get("ca")
    if bool(cert_opt) != bool(key_opt):
        raise StartupError(f"{option}-cert and {option}-key go together: give both (or neither)")
    mode = TLSMode(get("mode") or (TLSMode.PREFERRED if cert_opt else TLSMode.DISABLED))
    if mode == TLSMode.DISABLED:
        return ListenerTLS(mode)
    if not cert_opt:
        raise StartupError(f"{option}-mode={mode} needs a certificate: give {option}-cert "
                           f"and {option}-key")
    ca = config.path(ca_opt) if ca_opt else None
    ctx = server_context(config.path(cert_opt) or Path(cert_opt),
                         config.path(key_opt) or Path(key_opt), ca=ca,
                         min_version=get("min_version"), cipher=get("cipher"), option=option)
    return ListenerTLS(mode, ctx, verifies_clients=ca is not None)


async def upgrade(transport: asyncio.Transport, protocol: asyncio.BaseProtocol,
                  context: ssl.SSLContext, *, server_side: bool, leftover: bytes = b"",
                  timeout: float | None = None,
                  server_hostname: str | None = None) -> asyncio.Transport:
    """``loop.start_tls`` that first replays ``leftover`` (bytes read past the request for TLS).

    In-band TLS (MySQL's SSLRequest, SMTP's STARTTLS) has the client start its TLS
    handshake right behind its request, so the read that brought the request may
    already hold the first TLS bytes. ``loop.start_tls`` cannot be told about bytes
    already read, so they are handed to the TLS protocol right after ``start_tls`` has
    installed it (before any newer socket read can reach it); without this a fast
    client would hang in its handshake. The caller pauses reading on ``transport``
    before it collects ``leftover``.
    """
    import asyncio  # here: the options above are read by --help, which needs no event loop

    loop = asyncio.get_running_loop()
    task = loop.create_task(loop.start_tls(
        transport, protocol, context, server_side=server_side,
        server_hostname=server_hostname, ssl_handshake_timeout=timeout,
    ))
    if leftover:
        # The task's first step (next loop iteration) swaps the transport's protocol
        # and queues the TLS protocol's connection_made and resume_reading. This
        # callback runs in that same iteration, after the step, and queues the replay
        # behind those two: all three then run in one iteration, before the socket
        # is read again, so the TLS bytes stay in order.
        def replay() -> None:
            tls_protocol: Any = transport.get_protocol()
            if tls_protocol is protocol or not hasattr(tls_protocol, "buffer_updated"):
                transport.close()  # start_tls did not take over: cannot go on safely
                return
            data = memoryview(leftover)
            while data:
                buf = tls_protocol.get_buffer(len(data))
                n = min(len(buf), len(data))
                buf[:n] = data[:n]
                tls_protocol.buffer_updated(n)
                data = data[n:]

        loop.call_soon(loop.call_soon, replay)
    try:
        new_transport = await task
    except asyncio.CancelledError:
        task.cancel()
        raise
    assert new_transport is not None
    return new_transport
