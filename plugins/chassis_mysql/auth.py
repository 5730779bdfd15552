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
from typing import Any

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


def _load_cryptography() -> Any:
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import padding
    except ImportError:
        raise RuntimeError(
            "RSA password encryption needs the 'cryptography' package: "
            "pip install cryptography (or use TLS, which sends the password in the clear "
            "inside the encrypted connection)"
        ) from None
    return hashes, serialization, padding


def rsa_encrypt_password(password: bytes, nonce: bytes, pem: bytes) -> bytes:
    """caching_sha2/sha256_password over a plain connection: the NUL-terminated password
    XORed with the repeated nonce, RSA-OAEP encrypted with the server's public key."""
    hashes, serialization, padding = _load_cryptography()
    salt = _salt(nonce)
    if not salt:
        raise ProtocolError("cannot encrypt a password without the server's nonce")
    plain = password + b"\x00"
    mixed = bytes(c ^ salt[i % len(salt)] for i, c in enumerate(plain))
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ProtocolError(f"the server's RSA public key is not a valid PEM key: {exc}") from None
    return bytes(
        key.encrypt(
            mixed,
            padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
        )
    )


def rsa_decrypt_password(encrypted: bytes, nonce: bytes, private_pem: bytes) -> bytes:
    """The server side of :func:`rsa_encrypt_password` (for test servers): the password."""
    hashes, serialization, padding = _load_cryptography()
    key = serialization.load_pem_private_key(private_pem, password=None)
    try:
        mixed = key.decrypt(
            encrypted,
            padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
        )
    except ValueError:
        raise ProtocolError("RSA-encrypted password does not decrypt with this key") from None
    salt = _salt(nonce)
    plain = bytes(c ^ salt[i % len(salt)] for i, c in enumerate(mixed))
    if not plain.endswith(b"\x00"):
        raise ProtocolError("decrypted password is not NUL-terminated (wrong nonce?)")
    return plain[:-1]
