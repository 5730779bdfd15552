"""caching_sha2_password full authentication when the two legs differ in security.

A client on a secure leg (TLS or unix socket) sends its password in clear text, while a
server on plain TCP only accepts it RSA-encrypted (password XOR nonce, OAEP with SHA-1,
the server's public key); and the other way round. The proxy converts that one packet
and forgets it. ``cryptography`` is imported only here, and only when needed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


class Sha2Error(Exception):
    """The conversion is impossible; the message is sent to the client."""


def _crypto() -> tuple[Any, Any, Any]:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError:
        raise Sha2Error(
            "caching_sha2_password full authentication between a TLS client and a plain "
            "backend needs the Python package 'cryptography' on the proxy host "
            "(pip install cryptography), or use --proxy-backend-ssl"
        ) from None
    return hashes, serialization, padding


def _oaep() -> Any:
    hashes, _, padding = _crypto()
    return padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(),
                        label=None)


def _xor(data: bytes, nonce: bytes) -> bytes:
    if not nonce:
        raise Sha2Error("no scramble to encrypt the password with")
    return bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(data))


def encrypt_password(cleartext: bytes, nonce: bytes, public_pem: bytes) -> bytes:
    """The server-side packet for a clear-text password packet (``password\\0``)."""
    _, serialization, _ = _crypto()
    if not cleartext.endswith(b"\x00"):
        cleartext += b"\x00"
    try:
        key = serialization.load_pem_public_key(public_pem)
    except ValueError as e:
        raise Sha2Error(f"the backend sent an unusable RSA public key: {e}") from None
    try:
        result: bytes = key.encrypt(_xor(cleartext, nonce), _oaep())
    except ValueError as e:
        raise Sha2Error(f"cannot encrypt the password with the backend's key: {e}") from None
    return result


@dataclass(frozen=True)
class ProxyKey:
    """The proxy's own RSA key, offered to plain-TCP clients when the backend leg is secure."""

    private: Any
    public_pem: bytes

    def decrypt_password(self, ciphertext: bytes, nonce: bytes) -> bytes:
        """The clear-text packet (``password\\0``) for the client's encrypted one."""
        try:
            xored = self.private.decrypt(ciphertext, _oaep())
        except ValueError:
            raise Sha2Error("cannot decrypt the password (was it encrypted with the "
                            "proxy's public key?)") from None
        plain = _xor(xored, nonce)
        return plain if plain.endswith(b"\x00") else plain + b"\x00"


@functools.cache
def proxy_key() -> ProxyKey:
    """Made once per worker, on first use (generating it takes a moment)."""
    _, serialization, _ = _crypto()
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return ProxyKey(private, pem)
