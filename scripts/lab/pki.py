"""Certificates for one lab cluster: a CA, serving certificates and client identities.

Generated per lab start, kept under the lab's state directory (mode 0600), never committed.
ECDSA P-256 keeps generation fast.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o600 if private else 0o644)


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey,
             validity: dt.timedelta, *, ca: bool) -> x509.CertificateBuilder:
    """What every lab certificate has: names, key, serial, validity (5 min back-dated)."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class CA:
    """A cluster CA that issues certificates into a directory."""

    def __init__(self, directory: Path, common_name: str,
                 validity: dt.timedelta = VALIDITY) -> None:
        self.dir = directory
        self.key = _key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        self.cert = (
            _builder(name, name, self.key, validity, ca=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        _write(directory / "ca.crt", cert_pem(self.cert))
        _write(directory / "ca.key", key_pem(self.key), private=True)

    def issue(self, name: str, common_name: str, *, orgs: tuple[str, ...] = (),
              dns: tuple[str, ...] = (), ips: tuple[str, ...] = (), server: bool = False,
              client: bool = True, validity: dt.timedelta = VALIDITY) -> tuple[Path, Path]:
        """Issue ``<name>.crt``/``<name>.key``; returns their paths."""
        key = _key()
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = []
        if server:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
        if client:
            usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
        builder = (
            _builder(x509.Name(subject), self.cert.subject, key, validity, ca=False)
            .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False,
                                         False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        )
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        crt, keyf = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        _write(crt, cert_pem(cert))
        _write(keyf, key_pem(key), private=True)
        return crt, keyf

    def issue_ca(self, name: str, common_name: str,
                 validity: dt.timedelta = VALIDITY) -> tuple[Path, Path]:
        """Issue an intermediate CA ``<name>.crt``/``<name>.key`` signed by this CA."""
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleetcheck-lab"),
                             x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (
            _builder(subject, self.cert.subject, key, validity, ca=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        crt, keyf = self.dir / f"{name}.crt", self.dir / f"{name}.key"
        _write(crt, cert_pem(cert))
        _write(keyf, key_pem(key), private=True)
        return crt, keyf


def service_account_keys(directory: Path) -> None:
    """The key pair that signs and verifies ServiceAccount tokens."""
    key = _key()
    _write(directory / "sa.key", key_pem(key), private=True)
    _write(directory / "sa.pub", key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
