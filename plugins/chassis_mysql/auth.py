"""Password scrambles of the MySQL authentication plugins.

``mysql_native_password``: the client sends ``SHA1(pw) XOR SHA1(salt + SHA1(SHA1(pw)))``;
the server stores ``SHA1(SHA1(pw))`` and can check the answer without knowing the
password. ``caching_sha2_password``: ``SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)``
for the fast path, and on a plain connection the password itself XORed with the
nonce and RSA-encrypted with the server's public key. None of these functions log or
keep anything.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Protocol

from chassis_mysql.errors import ProtocolError

SCRAMBLE_LENGTH = 20


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


def _salt(salt: bytes) -> bytes:
    """The 20 scramble bytes (servers often send a trailing NUL after them)."""
    return salt[:SCRAMBLE_LENGTH]


_CHALLENGE_CHARS = bytes(range(0x21, 0x7F))


def new_challenge(length: int = SCRAMBLE_LENGTH) -> bytes:
    """A fresh random challenge (from :mod:`secrets`): printable bytes, never NUL,
    since clients read the handshake's scramble up to a NUL."""
    return bytes(secrets.choice(_CHALLENGE_CHARS) for _ in range(max(length, SCRAMBLE_LENGTH)))


def native_password_hash(password: bytes) -> bytes:
    """``SHA1(SHA1(password))``: what ``mysql.user`` stores (20 raw bytes)."""
    return hashlib.sha1(hashlib.sha1(password).digest()).digest()


def native_password_text(password: bytes) -> str:
    """The stored form as ``PASSWORD()`` shows it: ``*`` and 40 upper-case hex digits."""
    return "*" + native_password_hash(password).hex().upper()


def scramble_native_password(password: bytes, salt: bytes) -> bytes:
    """The client's 20-byte mysql_native_password answer (empty for an empty password)."""
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    return _xor(stage1, hashlib.sha1(_salt(salt) + stage2).digest())


def check_native_password(scrambled: bytes, salt: bytes, password_sha1_sha1: bytes) -> bool:
    """Whether a client's mysql_native_password answer matches the stored hash.

    An empty stored hash means "no password": only an empty answer matches.
    """
    if not password_sha1_sha1:
        return not scrambled
    if len(scrambled) != SCRAMBLE_LENGTH or len(password_sha1_sha1) != SCRAMBLE_LENGTH:
        return False
    stage1 = _xor(scrambled, hashlib.sha1(_salt(salt) + password_sha1_sha1).digest())
    return hmac.compare_digest(hashlib.sha1(stage1).digest(), password_sha1_sha1)


def scramble_caching_sha2(password: bytes, nonce: bytes) -> bytes:
    """The client's 32-byte caching_sha2_password fast-path answer (empty for no password)."""
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    p3 = hashlib.sha256(p2 + _salt(nonce)).digest()
    return _xor(p1, p3)


def check_caching_sha2(scrambled: bytes, nonce: bytes, password_sha256_sha256: bytes) -> bool:
    """Whether a fast-path answer matches ``SHA256(SHA256(password))`` (the server's cache)."""
    if not password_sha256_sha256:
        return not scrambled
    if len(scrambled) != 32:
        return False
    p1 = _xor(scrambled, hashlib.sha256(password_sha256_sha256 + _salt(nonce)).digest())
    return hmac.compare_digest(hashlib.sha256(p1).digest(), password_sha256_sha256)


class RSAUnavailable(RuntimeError):
    """The ``cryptography`` package is not installed, so no RSA password exchange.

    Callers with a better remedy to offer (TLS, a proxy option) catch it and say so.
    """


class RSAPrivateKey(Protocol):
    """A loaded private key (``cryptography``'s ``RSAPrivateKey``), for callers that keep
    theirs in memory rather than as PEM."""

    def decrypt(self, ciphertext: bytes, padding: Any) -> bytes: ...


def _load_cryptography() -> Any:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError:
        raise RSAUnavailable(
            "RSA password encryption needs the 'cryptography' package: "
            "pip install cryptography (or use TLS, which sends the password in the clear "
            "inside the encrypted connection)"
        ) from None
    return hashes, serialization, padding


def _oaep(hashes: Any, padding: Any) -> Any:
    """OAEP with SHA-1 and MGF1(SHA-1): what mysqld and every client library use."""
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)


def _xor_nonce(data: bytes, nonce: bytes) -> bytes:
    """``data`` XORed with the 20-byte nonce repeated (the password's only disguise
    besides RSA: it ties the ciphertext to this login)."""
    salt = _salt(nonce)
    if not salt:
        raise ProtocolError("cannot encrypt or decrypt a password without the server's nonce")
    return bytes(c ^ salt[i % len(salt)] for i, c in enumerate(data))


def rsa_encrypt_password(password: bytes, nonce: bytes, pem: bytes) -> bytes:
    """caching_sha2/sha256_password over a plain connection: the NUL-terminated password
    XORed with the repeated nonce, RSA-OAEP encrypted with the server's public key.

    Raises :class:`RSAUnavailable` without ``cryptography``, ProtocolError for a key
    that does not load or cannot hold the password.
    """
    hashes, serialization, padding = _load_cryptography()
    mixed = _xor_nonce(password + b"\x00", nonce)
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ProtocolError(f"the server's RSA public key is not a valid PEM key: {exc}") from None
    try:
        return bytes(key.encrypt(mixed, _oaep(hashes, padding)))
    except (ValueError, AttributeError, TypeError) as exc:  # too short, or not an RSA key
        raise ProtocolError(f"cannot encrypt the password with the server's key: {exc}") from None


def rsa_decrypt_password(
    encrypted: bytes, nonce: bytes, private_key: bytes | RSAPrivateKey, *, require_nul: bool = True
) -> bytes:
    """The server side of :func:`rsa_encrypt_password`: the password, without its NUL.

    ``private_key`` is PEM or an already loaded key. With ``require_nul`` False a
    plaintext without the terminating NUL is returned whole instead of refused (a proxy
    passes it on and lets the server judge it).
    """
    hashes, serialization, padding = _load_cryptography()
    if isinstance(private_key, bytes):
        try:
            private_key = serialization.load_pem_private_key(private_key, password=None)
        except (ValueError, TypeError) as exc:
            raise ProtocolError(f"the RSA private key is not a valid PEM key: {exc}") from None
    assert not isinstance(private_key, bytes)
    try:
        mixed = private_key.decrypt(encrypted, _oaep(hashes, padding))
    except ValueError:
        raise ProtocolError("RSA-encrypted password does not decrypt with this key") from None
    plain = _xor_nonce(mixed, nonce)
    if plain.endswith(b"\x00"):
        return plain[:-1]
    if require_nul:
        raise ProtocolError("decrypted password is not NUL-terminated (wrong nonce?)")
    return plain
