"""The proxy's TLS: what each leg does (the modes), their options, and the in-band upgrade.

The client leg is a listener like any other (:class:`chassis.tls.ListenerTLS`,
``--proxy-ssl-*``). The backend leg (``--proxy-backend-ssl-*``) has MySQL Router's
``server_ssl_mode`` values; the default, ``as_client``, gives a server a TLS leg exactly
when the client's leg is TLS, so the server's view of the transport (``REQUIRE SSL``,
``Ssl_cipher``) stays the client's: a plaintext client can never pass for a TLS one.
``required`` (what ``--proxy-backend-ssl`` means) encrypts every backend leg whatever the
client does, so there a plaintext client *does* satisfy ``REQUIRE SSL``: the operator's
choice, said once at start-up.

A pooled server connection keeps the security of the leg it was opened with
(:attr:`chassis_proxy.link.ServerLink.tls`): it is only handed to a client whose leg
calls for the same (:meth:`BackendTLS.wanted`).
"""

from __future__ import annotations

import enum
import logging
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from chassis import tls as chassis_tls
from chassis.errors import StartupError
from chassis.tls import ListenerTLS, TLSMode, Verify, upgrade

if TYPE_CHECKING:
    import asyncio

    from chassis.config import Config
    from chassis_proxy.hooks import AddressInfo
    from chassis_proxy.link import ServerLink

__all__ = ["BackendMode", "BackendTLS", "is_tls", "load", "options", "upgrade"]

log = logging.getLogger("chassis.proxy")

#: The option family of the client leg: ``--proxy-ssl-mode``, ``--proxy-ssl-cert``, ...
CLIENT_PREFIX = "proxy-ssl"


class BackendMode(enum.StrEnum):
    """``--proxy-backend-ssl-mode`` (MySQL Router's ``server_ssl_mode``)."""

    DISABLED = "disabled"  # plain TCP to every backend
    PREFERRED = "preferred"  # TLS when the server offers it
    REQUIRED = "required"  # TLS always; a server without TLS is refused
    AS_CLIENT = "as_client"  # TLS exactly when the client's leg is TLS


@dataclass(frozen=True)
class BackendTLS:
    """The backend leg's mode and the context its TLS connections use."""

    mode: BackendMode = BackendMode.AS_CLIENT
    context: ssl.SSLContext | None = None  # None: never TLS (whatever the mode says)

    def wanted(self, client_tls: bool | None) -> bool | None:
        """Whether a client's backend leg is TLS: True, False, or None for "as the
        server offers" (``preferred``, or ``as_client`` while the client's leg is not
        known yet, ``client_tls`` None)."""
        if self.context is None or self.mode == BackendMode.DISABLED:
            return False
        if self.mode == BackendMode.REQUIRED:
            return True
        if self.mode == BackendMode.PREFERRED:
            return None
        return client_tls

    def must(self, client_tls: bool) -> bool:
        """Whether the leg must be TLS (a server that does not offer it is refused)."""
        return self.context is not None and (
            self.mode == BackendMode.REQUIRED
            or (self.mode == BackendMode.AS_CLIENT and client_tls))

    def describe(self) -> str:
        if self.context is None or self.mode == BackendMode.DISABLED:
            return "no TLS to backends"
        verify = ("unverified" if self.context.verify_mode == ssl.CERT_NONE
                  else "verified" if self.context.check_hostname else "CA-verified")
        return f"TLS to backends {self.mode} ({verify})"


def is_tls(transport: asyncio.BaseTransport | None) -> bool:
    """Whether a leg's transport is TLS (a unix socket is secure, but not TLS)."""
    return transport is not None and transport.get_extra_info("ssl_object") is not None


def options() -> list[click.Option]:
    """The proxy's TLS options: the client leg's family, then the backend leg's."""
    return [
        *chassis_tls.listener_options(CLIENT_PREFIX, "clients"),
        click.Option(["--proxy-backend-ssl-mode"], type=click.Choice([m.value for m in BackendMode]),
                     default=None,
                     help="TLS towards the backends: as_client (the default: TLS when the "
                          "client's leg is TLS), disabled, preferred or required."),
        click.Option(["--proxy-backend-ssl"], is_flag=True,
                     help="Same as --proxy-backend-ssl-mode=required (TLS to every backend, "
                          "even for plaintext clients)."),
        click.Option(["--proxy-backend-ssl-ca"], metavar="FILE",
                     help="Verify backends against this CA (default: the system's CAs)."),
        click.Option(["--proxy-backend-ssl-verify"], type=click.Choice([v.value for v in Verify]),
                     default=None,
                     help="Check of the backend's certificate: identity (the default: CA and "
                          "the backend's address), ca (CA only) or none (logged as a warning)."),
    ]


def backend_mode(config: Config) -> BackendMode:
    mode_opt = config.get("proxy_backend_ssl_mode")
    if config.get("proxy_backend_ssl"):
        if mode_opt and mode_opt != BackendMode.REQUIRED:
            raise StartupError(f"--proxy-backend-ssl means --proxy-backend-ssl-mode=required; "
                               f"it contradicts --proxy-backend-ssl-mode={mode_opt}: give one")
        return BackendMode.REQUIRED
    return BackendMode(mode_opt or BackendMode.AS_CLIENT)


def load(config: Config) -> tuple[ListenerTLS, BackendTLS]:
    """Check the TLS options of both legs; warn about the choices that weaken them."""
    client = chassis_tls.load_listener(config, CLIENT_PREFIX)
    mode = backend_mode(config)
    ca_opt = config.get("proxy_backend_ssl_ca")
    verify = Verify(config.get("proxy_backend_ssl_verify") or Verify.IDENTITY)
    if verify == Verify.NONE and ca_opt:
        raise StartupError("--proxy-backend-ssl-verify=none and --proxy-backend-ssl-ca: a CA is "
                           "only used to verify; drop one of them")
    if mode == BackendMode.DISABLED:
        if ca_opt:
            raise StartupError("--proxy-backend-ssl-ca with --proxy-backend-ssl-mode=disabled: "
                               "no backend leg uses TLS")
        return client, BackendTLS(mode)
    if mode == BackendMode.AS_CLIENT and not client.offered and not ca_opt:
        return client, BackendTLS(mode)  # no client leg is TLS: neither is any backend leg
    context = chassis_tls.client_context(
        ca=config.path(ca_opt) if ca_opt else None, verify=verify, option="--proxy-backend-ssl")
    if verify == Verify.NONE:
        log.warning("--proxy-backend-ssl-verify=none: backend certificates are not checked; "
                    "anyone between the proxy and a backend can read and change the traffic")
    if mode == BackendMode.REQUIRED and client.mode != TLSMode.REQUIRED:
        log.info("--proxy-backend-ssl-mode=required: plaintext clients get a TLS backend leg, "
                 "so they satisfy REQUIRE SSL accounts (as_client would not)")
    return client, BackendTLS(mode, context)


def server_hostname(address: AddressInfo) -> str:
    """The name a backend's certificate is checked against: its host or IP address,
    ``localhost`` for a unix socket."""
    return address.address if address.port is not None else "localhost"


def describe(client: ListenerTLS, backend: BackendTLS) -> list[str]:
    """The start-up line's TLS part."""
    parts: list[str] = []
    if client.offered:
        parts.append(f"{client.describe()} for clients")
    if backend.context is not None and backend.mode != BackendMode.DISABLED:
        parts.append(backend.describe())
    return parts


class LegRefused(Exception):
    """A backend leg cannot have the security its mode calls for (the message says why)."""


def backend_leg(backend: BackendTLS, client_tls: bool, server_offers: bool, name: str) -> bool:
    """Whether this client's new backend leg starts TLS; :class:`LegRefused` when the
    server does not offer the TLS the mode calls for."""
    wanted = backend.wanted(client_tls)
    if wanted is None:  # preferred
        return server_offers
    if wanted and not server_offers:
        why = ("this client's leg is TLS (--proxy-backend-ssl-mode=as_client)"
               if backend.mode == BackendMode.AS_CLIENT
               else f"--proxy-backend-ssl-mode={backend.mode}")
        raise LegRefused(f"backend {name} does not offer TLS, but {why}")
    return wanted


def pool_filter(backend: BackendTLS, client: ListenerTLS, client_tls: bool | None,
                unix_client: bool = False) -> tuple[bool, bool | None]:
    """Which pooled connections may serve a client: ``(may_take, tls)``, ``tls`` None for
    any. ``client_tls`` None: the client has not logged in yet (``connect_server``); its
    leg is then predicted from the client mode, and under ``as_client`` a client that
    may go either way takes no pooled connection (it would be handed one whose
    security might not be its own)."""
    if client_tls is None and not client.offered:
        client_tls = False
    elif client_tls is None and client.mode == TLSMode.REQUIRED and not unix_client:
        client_tls = True
    wanted = backend.wanted(client_tls)
    if wanted is None and backend.mode == BackendMode.AS_CLIENT and backend.context is not None:
        return False, None
    return True, wanted


#: What a client without TLS is told under ``--proxy-ssl-mode=required``.
NO_TLS_REFUSED = "connections without TLS are refused (--proxy-ssl-mode=required): connect with TLS"


def pooled_mismatch(backend: BackendTLS, client_transport: asyncio.BaseTransport | None,
                    link: ServerLink) -> str | None:
    """Why a pooled connection may not serve this logged-in client (None: it may)."""
    wanted = backend.wanted(is_tls(client_transport))
    if wanted is None or wanted == link.tls:
        return None
    return (f"the pooled connection {link.name} is {'TLS' if link.tls else 'plaintext'}; this "
            f"client's backend leg must not be (--proxy-backend-ssl-mode={backend.mode})")


def verify_hint(e: BaseException) -> str:
    """What to do about a backend certificate that did not verify ("" for other failures)."""
    if not isinstance(e, ssl.SSLCertVerificationError):
        return ""
    return (" (give the backends' CA with --proxy-backend-ssl-ca, or check less with "
            "--proxy-backend-ssl-verify=ca or none)")
