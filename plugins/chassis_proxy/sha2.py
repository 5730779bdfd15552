"""caching_sha2_password full authentication when the two legs differ in security.

A client on a secure leg (TLS or unix socket) sends its password in clear text, while a
server on plain TCP only accepts it RSA-encrypted (password XOR nonce, OAEP with SHA-1,
the server's public key); and the other way round. The proxy converts that one packet
and forgets it. The encryption itself is the codec's (:mod:`chassis_mysql.auth`); what
lives here is proxy policy: the proxy's own key pair, and errors worded for the client.
``cryptography`` (when installed) is imported with this module, in the proxy's
``chassis_apply_config``: before ``--user`` drops privileges.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from chassis_mysql.auth import RSAUnavailable, rsa_decrypt_password, rsa_encrypt_password
from chassis_mysql.errors import ProtocolError

try:  # loaded now, while the installation is surely readable (see the module docstring)
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401
    from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: F401
except ImportError:
    pass

_NO_CRYPTOGRAPHY = (
    "caching_sha2_password full authentication between a TLS client and a plain "
    "backend needs the Python package 'cryptography' on the proxy host "
    "(pip install cryptography), or use --proxy-backend-ssl"
)


class Sha2Error(Exception):
    """The conversion is impossible; the message is sent to the client."""


def encrypt_password(cleartext: bytes, nonce: bytes, public_pem: bytes) -> bytes:
    """The server-side packet for a clear-text password packet (``password\\0``)."""
    password = cleartext[:-1] if cleartext.endswith(b"\x00") else cleartext
    try:
        return rsa_encrypt_password(password, nonce, public_pem)
    except RSAUnavailable:
        raise Sha2Error(_NO_CRYPTOGRAPHY) from None
    except ProtocolError as e:
        raise Sha2Error(f"cannot encrypt the password with the backend's key: {e}") from None


@dataclass(frozen=True)
class ProxyKey:
    """The proxy's own RSA key, offered to plain-TCP clients when the backend leg is secure."""

    private: Any
    public_pem: bytes

    def decrypt_password(self, ciphertext: bytes, nonce: bytes) -> bytes:
        """The clear-text packet (``password\\0``) for the client's encrypted one."""
        try:
            password = rsa_decrypt_password(ciphertext, nonce, self.private, require_nul=False)
        except RSAUnavailable:
            raise Sha2Error(_NO_CRYPTOGRAPHY) from None
        except ProtocolError:
            raise Sha2Error("cannot decrypt the password (was it encrypted with the "
                            "proxy's public key?)") from None
        return password + b"\x00"


@functools.cache
def proxy_key() -> ProxyKey:
    """Made once per worker, on first use (generating it takes a moment)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
    except ImportError:
        raise Sha2Error(_NO_CRYPTOGRAPHY) from None
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ProxyKey(private, pem)
