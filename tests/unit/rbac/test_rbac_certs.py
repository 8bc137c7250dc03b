"""Client certificate expiry (fleetcheck.rbac.certs) with certificates made on the spot."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fleetcheck.rbac import certs

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def make_cert(not_after: dt.datetime, not_before: dt.datetime | None = None,
              cn: str = "alice", orgs: tuple[str, ...] = ("dev",)) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
                     + [x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before or not_after - dt.timedelta(days=400))
            .not_valid_after(not_after).sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_inline_certificate_facts_without_material():
    pem = make_cert(NOW + dt.timedelta(days=90), cn="fleetcheck-lab:admin",
                    orgs=("system:masters",))
    [info] = certs.client_certificates(
        {"client-certificate-data": base64.b64encode(pem).decode(), "client-key-data": "x"})
    assert info.subject == "CN=fleetcheck-lab:admin, O=system:masters"
    assert info.issuer_cn == "test CA" and info.source == "client-certificate-data"
    facts = info.facts(NOW)
    assert facts["remaining"] == "90.0 days left"
    text = "\n".join(facts.values())
    body = pem.decode().splitlines()[1]
    assert "BEGIN" not in text and body not in text
    assert certs.assess(info, NOW, 30).ok


def test_certificate_file(tmp_path: Path):
    path = tmp_path / "client.crt"
    path.write_bytes(make_cert(NOW + dt.timedelta(days=10)))
    [info] = certs.client_certificates({"client-certificate": str(path)})
    assert info.source == f"client-certificate {path}"
    verdict = certs.assess(info, NOW, 30)
    assert not verdict.ok
    assert verdict.problem == ("certificate CN=alice, O=dev expires on 2030-01-11 00:00:00 UTC "
                               "(10.0 days left), within the horizon of 30 days")


def test_expired_tomorrow_and_not_yet_valid():
    expired = certs.parse_pem(make_cert(NOW - dt.timedelta(hours=3)), "x")[0]
    assert certs.assess(expired, NOW, 30).problem == (
        "certificate CN=alice, O=dev expired on 2029-12-31 21:00:00 UTC (expired 3.0 hours ago)")
    tomorrow = certs.parse_pem(make_cert(NOW + dt.timedelta(days=1)), "x")[0]
    assert "expires on 2030-01-02 00:00:00 UTC (24.0 hours left)" in \
        certs.assess(tomorrow, NOW, 30).problem
    assert certs.assess(tomorrow, NOW, 0).ok
    future = certs.parse_pem(make_cert(NOW + dt.timedelta(days=400),
                                       not_before=NOW + dt.timedelta(days=1)), "x")[0]
    assert "not valid before 2030-01-02" in certs.assess(future, NOW, 30).problem


def test_chain_leaf_first():
    pem = make_cert(NOW + dt.timedelta(days=5), cn="leaf") + make_cert(
        NOW + dt.timedelta(days=900), cn="intermediate")
    chain = certs.parse_pem(pem, "x")
    assert [c.subject_cn for c in chain] == ["leaf", "intermediate"]


@pytest.mark.parametrize(("user", "kind"), [
    ({"client-certificate-data": "x", "client-key-data": "y"}, "client-certificate"),
    ({"client-certificate": "/a.crt"}, "client-certificate"),
    ({"token": "abc"}, "token"), ({"tokenFile": "/t"}, "token"),
    ({"exec": {"command": "aws"}}, "exec"), ({"auth-provider": {"name": "oidc"}}, "auth-provider"),
    ({"username": "u", "password": "p"}, "basic"), ({}, "none"),
])
def test_auth_kind(user, kind):
    assert certs.auth_kind(user) == kind


def test_unreadable_certificates_never_echo_material(tmp_path: Path):
    with pytest.raises(certs.CertError, match="cannot read"):
        certs.client_certificates({"client-certificate": str(tmp_path / "missing.crt")})
    junk = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nAAAAsecretish\n").decode()
    with pytest.raises(certs.CertError) as info:
        certs.client_certificates({"client-certificate-data": junk})
    assert "secretish" not in str(info.value) and junk not in str(info.value)
