"""Password scrambles agree with PyMySQL's independent implementation and check back."""

from __future__ import annotations

import hashlib
import os

import pytest
from chassis_mysql.auth import (
    RSAUnavailable,
    check_caching_sha2,
    check_native_password,
    native_password_hash,
    native_password_text,
    rsa_decrypt_password,
    rsa_encrypt_password,
    scramble_caching_sha2,
    scramble_native_password,
)
from chassis_mysql.errors import ProtocolError
from hypothesis import given
from hypothesis import strategies as st
from pymysql import _auth as pymysql_auth

_salt = st.binary(min_size=20, max_size=20)


def test_stored_hash_matches_mysql_password_function() -> None:
    # SELECT PASSWORD('password') on MySQL 5.x / MariaDB.
    assert native_password_text(b"password") == "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"


@given(st.binary(min_size=1, max_size=40), _salt)
def test_native_scramble_matches_pymysql_and_checks(password: bytes, salt: bytes) -> None:
    scrambled = scramble_native_password(password, salt + b"\x00")
    assert scrambled == pymysql_auth.scramble_native_password(password, salt)
    stored = native_password_hash(password)
    assert check_native_password(scrambled, salt, stored)
    assert not check_native_password(scrambled, salt, native_password_hash(password + b"x"))
    assert not check_native_password(scrambled, bytes(b ^ 1 for b in salt), stored)


def test_empty_password_means_empty_answer() -> None:
    assert scramble_native_password(b"", b"x" * 20) == b""
    assert check_native_password(b"", b"x" * 20, b"")
    assert not check_native_password(b"\x01" * 20, b"x" * 20, b"")
    assert scramble_caching_sha2(b"", b"x" * 20) == b""


@given(st.binary(min_size=1, max_size=40), _salt)
def test_caching_sha2_scramble_matches_pymysql_and_checks(password: bytes, nonce: bytes) -> None:
    scrambled = scramble_caching_sha2(password, nonce)
    assert scrambled == pymysql_auth.scramble_caching_sha2(password, nonce)
    cache = hashlib.sha256(hashlib.sha256(password).digest()).digest()
    assert check_caching_sha2(scrambled, nonce, cache)
    other = bytes(b ^ 1 for b in nonce)
    assert not check_caching_sha2(scrambled, other, cache)


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def test_rsa_password_round_trips_and_pymysql_agrees(rsa_keys: tuple[bytes, bytes]) -> None:
    private, public = rsa_keys
    nonce = os.urandom(20)
    encrypted = rsa_encrypt_password(b"s3cret", nonce, public)
    assert rsa_decrypt_password(encrypted, nonce, private) == b"s3cret"
    theirs = pymysql_auth.sha2_rsa_encrypt(b"s3cret", nonce, public)
    assert rsa_decrypt_password(theirs, nonce, private) == b"s3cret"
    with pytest.raises(ProtocolError):
        rsa_decrypt_password(encrypted, bytes(20), private)
    with pytest.raises(ProtocolError, match="PEM"):
        rsa_encrypt_password(b"x", nonce, b"not a key")


def test_rsa_decrypt_takes_a_loaded_key(rsa_keys: tuple[bytes, bytes]) -> None:
    from cryptography.hazmat.primitives import serialization

    private, public = rsa_keys
    key = serialization.load_pem_private_key(private, password=None)
    nonce = os.urandom(20)
    encrypted = rsa_encrypt_password(b"pw", nonce, public)
    assert rsa_decrypt_password(encrypted, nonce, key) == b"pw"


def test_rsa_decrypt_without_require_nul_returns_an_unterminated_plaintext_whole(
        rsa_keys: tuple[bytes, bytes]) -> None:
    """A proxy passes an odd plaintext on and lets the server judge it."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    private, public = rsa_keys
    nonce = bytes(range(1, 21))
    key = serialization.load_pem_public_key(public)
    mixed = bytes(c ^ nonce[i % 20] for i, c in enumerate(b"no-nul"))
    encrypted = key.encrypt(  # type: ignore[union-attr]
        mixed, padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None))
    with pytest.raises(ProtocolError, match="not NUL-terminated"):
        rsa_decrypt_password(encrypted, nonce, private)
    assert rsa_decrypt_password(encrypted, nonce, private, require_nul=False) == b"no-nul"


def test_rsa_uses_the_first_20_bytes_of_the_nonce(rsa_keys: tuple[bytes, bytes]) -> None:
    private, public = rsa_keys
    nonce = os.urandom(20)
    encrypted = rsa_encrypt_password(b"s3cret", nonce + b"\x00", public)
    assert rsa_decrypt_password(encrypted, nonce, private) == b"s3cret"


def test_rsa_without_a_nonce_or_with_a_bad_key_is_a_protocol_error(
        rsa_keys: tuple[bytes, bytes]) -> None:
    private, public = rsa_keys
    with pytest.raises(ProtocolError, match="nonce"):
        rsa_encrypt_password(b"pw", b"", public)
    with pytest.raises(ProtocolError, match="nonce"):
        rsa_decrypt_password(rsa_encrypt_password(b"pw", b"n" * 20, public), b"", private)
    with pytest.raises(ProtocolError, match="private key is not a valid PEM"):
        rsa_decrypt_password(b"x" * 256, b"n" * 20, b"not a key")


def test_rsa_without_cryptography_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives", None)
    with pytest.raises(RSAUnavailable, match="pip install cryptography"):
        rsa_encrypt_password(b"pw", b"n" * 20, b"")
    assert issubclass(RSAUnavailable, RuntimeError)
