"""TLS certificates made at test time: one CA, and server, proxy and client pairs it signs.

Made fresh for each test session so no key is ever committed, and so the tests can check
verification both ways (a proxy that trusts the CA must accept the server; a client that
trusts the CA must accept the proxy). RSA 2048 because every client library accepts it.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names every leaf certificate is valid for: clients connect to 127.0.0.1 or localhost.
LEAF_HOSTNAMES = ("localhost",)
LEAF_ADDRESSES = ("127.0.0.1", "::1")


@dataclass(frozen=True)
class TLSCerts:
    """Paths of PEM files: a CA and three leaf pairs signed by it."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    proxy_cert: Path
    proxy_key: Path
    client_cert: Path
    client_key: Path


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    # Back-dated a day so a clock that is slightly off does not make them "not yet valid".
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)


def _make_ca(name: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    common_name: str,
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    usages: list[x509.ObjectIdentifier],
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = _new_key()
    not_before, not_after = _validity()
    names: list[x509.GeneralName] = [x509.DNSName(h) for h in LEAF_HOSTNAMES]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in LEAF_ADDRESSES]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_tls_certs(directory: Path) -> TLSCerts:
    """Write a CA and server/proxy/client certificates with their keys into *directory*.

    The leaves are valid for localhost, 127.0.0.1 and ::1, so hostname verification works
    against any of the test servers.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _make_ca("chassis test CA")
    paths: dict[str, Path] = {}
    _write_cert(ca_cert, directory / "ca.pem")
    _write_key(ca_key, directory / "ca-key.pem")
    server = [ExtendedKeyUsageOID.SERVER_AUTH]
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    client = [ExtendedKeyUsageOID.CLIENT_AUTH]
    # The proxy is a server to clients and a client to backends: it gets both usages.
    for role, usages in (("server", server), ("proxy", both), ("client", client)):
        cert, key = _make_leaf(f"chassis test {role}", ca_cert, ca_key, usages)
        paths[f"{role}_cert"] = directory / f"{role}.pem"
        paths[f"{role}_key"] = directory / f"{role}-key.pem"
        _write_cert(cert, paths[f"{role}_cert"])
        _write_key(key, paths[f"{role}_key"])
    return TLSCerts(
        directory=directory,
        ca_cert=directory / "ca.pem",
        ca_key=directory / "ca-key.pem",
        **paths,
    )
