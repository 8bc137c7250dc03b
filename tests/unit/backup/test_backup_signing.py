"""Signed manifests: an archive rewritten with recomputed checksums does not verify.

The defect these reproduce: an object edited and ``SHA256SUMS`` recomputed verified OK,
because checksums anyone can recompute prove nothing.  Now the manifest is signed (Ed25519)
and ``verify`` trusts only a key (or digest) given to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from backupkit import (
    CM_FILE,
    SCRIPT,
    SIGNER,
    TRUST,
    forge,
    make_archive,
    public_key_file,
    run_cli,
)
from fleetcheck.backup import BackupError, ExitCode, signing, verify
from fleetcheck.backup import archive as archive_mod
from fleetcheck.backup import suite as kit
from fleetcheck.backup.suite import archive_text_contains


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "good.tar.gz")





def _cli(*args: object) -> tuple[int, str]:
    proc = run_cli(*map(str, args))
    return proc.returncode, proc.stdout + proc.stderr


def test_forged_archive_with_recomputed_checksums_does_not_verify(good: Path,
                                                                   tmp_path: Path) -> None:
    """The reported defect, as a user meets it: edit + recompute SHA256SUMS -> exit 1."""
    forged = forge(good, tmp_path / "forged.tar.gz")
    # checksums and counts are consistent: only the signature can tell
    report = verify.verify(forged, trust=signing.Trust(require_signature=False))
    assert not any(p.path == CM_FILE for p in report.problems), report.problems
    code, out = _cli("verify", forged)
    assert code == ExitCode.INVALID, out
    code, out = _cli("verify", forged, "--public-key", public_key_file(tmp_path))
    assert code == ExitCode.INVALID, out
    assert f"PROBLEM SHA256SUMS.sig: signature by {SIGNER.fingerprint} does NOT verify" in out


def test_forged_and_resigned_with_another_key_is_not_trusted(good: Path, tmp_path: Path) -> None:
    mallory = signing.Signer.generate()
    forged = forge(good, tmp_path / "resigned.tar.gz", signer=mallory)
    # internally consistent and validly signed, by the wrong key
    loose = verify.verify(forged, trust=signing.Trust(require_signature=False))
    assert loose.ok and loose.signature.state == "unpinned", loose.problems
    assert "NOT PINNED" in loose.summary()
    for trust_args in (["--public-key", public_key_file(tmp_path)],
                       ["--expect-key-fingerprint", SIGNER.fingerprint]):
        code, out = _cli("verify", forged, *trust_args)
        assert code == ExitCode.INVALID, out
        assert f"signed by {mallory.fingerprint}, which is not a trusted key" in out
    # without a trusted key, a signature proves nothing: it does not verify either
    code, out = _cli("verify", forged)
    assert code == ExitCode.INVALID and "that key is not pinned" in out, out


def test_forged_with_signature_removed_is_caught(good: Path, tmp_path: Path) -> None:
    stripped = forge(good, tmp_path / "stripped.tar.gz", keep_signature=False)
    report = verify.verify(stripped, trust=TRUST)
    assert [str(p) for p in report.problems] == [
        (f"SHA256SUMS.sig: missing, but metadata.json says the archive was signed by "
        f"{SIGNER.fingerprint} (signature removed?)")]
    # metadata.json rewritten too, to claim the archive was never signed
    unsigned = forge(good, tmp_path / "unsigned.tar.gz", keep_signature=False,
                     drop_metadata_signer=True)
    report = verify.verify(unsigned, trust=TRUST)
    assert not report.ok
    assert any("UNSIGNED" in p.message and "trusted key was given" in p.message
               for p in report.problems), report.problems


def test_good_archive_verifies_with_key_fingerprint_or_digest(good: Path, tmp_path: Path) -> None:
    report = verify.verify(good, trust=TRUST)
    assert report.ok and report.signature.state == "trusted"
    assert report.metadata["signature"]["key_fingerprint"] == SIGNER.fingerprint
    digest = report.manifest_sha256
    assert digest == hashlib.sha256(_member(good, "SHA256SUMS")).hexdigest()
    assert _cli("verify", good, "--expect-key-fingerprint", SIGNER.fingerprint)[0] == 0
    assert _cli("verify", good, "--expect-digest", digest)[0] == 0
    code, out = _cli("verify", good, "--expect-digest", "0" * 64)
    assert code == ExitCode.INVALID and f"manifest SHA-256 is {digest}" in out, out
    code, out = _cli("verify", good, "--expect-key-fingerprint", "SHA256:nothex")
    assert code == ExitCode.USAGE and "expected SHA256:<64 hex digits>" in out, out
    env = {**os.environ, signing.ENV_PUBLIC_KEY: str(public_key_file(tmp_path))}
    proc = subprocess.run([sys.executable, str(SCRIPT), "verify", str(good)], env=env,
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unsigned_archive_fails_unless_allowed_or_digest_pinned(tmp_path: Path) -> None:
    plain = make_archive(tmp_path / "plain.tar.gz", signer=None)
    report = verify.verify(plain, trust=signing.Trust())
    assert [p.path for p in report.problems] == ["SHA256SUMS.sig"]
    assert report.problems[0].message.startswith("UNSIGNED")
    code, out = _cli("verify", plain)
    assert code == ExitCode.INVALID and "UNSIGNED" in out, out
    code, out = _cli("verify", plain, "--allow-unsigned")
    assert code == 0 and "OK" in out and "UNSIGNED" in out, out
    digest = verify.verify(plain, trust=signing.Trust(require_signature=False)
                                ).manifest_sha256
    code, out = _cli("verify", plain, "--expect-digest", f"sha256:{digest}", "--json")
    assert code == 0, out
    assert json.loads(out)["signature"]["state"] == "trusted"
    code, out = _cli("verify", plain, "--public-key", public_key_file(tmp_path))
    assert code == ExitCode.INVALID and "UNSIGNED" in out, out


def test_directory_archive_is_signed_too(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "dir-archive")
    assert (path / "SHA256SUMS.sig").is_file()
    assert (path / "SHA256SUMS.sig").stat().st_mode & 0o077 == 0
    assert verify.verify(path, trust=TRUST).ok
    cm = path / CM_FILE
    cm.write_text(cm.read_text().replace('"k": "0"', '"k": "x"'))
    sums = path / "SHA256SUMS"
    sums.write_text("".join(
        f"{hashlib.sha256((path / p).read_bytes()).hexdigest()}  {p}\n"
        for p in (line.split("  ", 1)[1] for line in sums.read_text().splitlines())))
    report = verify.verify(path, trust=TRUST)
    assert [p.path for p in report.problems] == ["SHA256SUMS.sig"], report.problems


def _member(archive: Path, rel: str) -> bytes:
    for name, chunks in archive_mod.iter_file_chunks(archive):
        data = b"".join(chunks)
        if name.partition("/")[2] == rel:
            return data
    raise AssertionError(rel)


def test_cli_keygen_signing_pair(tmp_path: Path) -> None:
    key = tmp_path / "signing.key"
    code, out = _cli("keygen", "--signing", key)
    assert code == 0, out
    pub = Path(f"{key}.pub")
    assert key.stat().st_mode & 0o777 == 0o600 and pub.is_file()
    private = signing.load_private_key(key)
    fingerprint = signing.fingerprint(private.public_key())
    assert f"key fingerprint: {fingerprint}" in out
    assert signing.fingerprint(signing.load_public_key(pub)) == fingerprint
    code, out = _cli("keygen", "--signing", key)
    assert code == ExitCode.USAGE and "exists" in out
    # the two halves swapped: one-line errors that say which file is which
    with pytest.raises(BackupError, match="that is the private key"):
        signing.load_public_key(key)
    with pytest.raises(BackupError, match="that is the public key"):
        signing.load_private_key(pub)
    # the private key never goes into an archive signed with it
    path = make_archive(tmp_path / "a.tar.gz", signer=signing.Signer(private))
    secret_line = key.read_text().splitlines()[1]
    assert archive_text_contains(path, [secret_line]) == []
    code, out = _cli("verify", path, "--public-key", pub)
    assert code == 0, out


def test_backup_refuses_a_key_inside_a_directory_archive(tmp_path: Path) -> None:
    from fleetcheck.cli import backup as cli

    out = tmp_path / "dir-archive"
    with pytest.raises(BackupError, match="inside the archive"):
        cli._refuse_key_in_archive(str(out / "k.key"), out, "--signing-key")
    cli._refuse_key_in_archive(str(tmp_path / "k.key"), out, "--signing-key")


def test_suite_settings_need_a_trusted_key_for_nightly_archives(tmp_path: Path) -> None:
    with pytest.raises(pytest.UsageError, match="needs public_key or public_key_fingerprint"):
        kit.BackupSettings.from_expectations({"backup": {"nightly_archive": "/b/n.tar.gz"}})
    loose = kit.BackupSettings.from_expectations({"backup": {
        "nightly_archive": "/b/n.tar.gz", "require_signature": False}})
    assert not loose.nightly_trust().require_signature
    pinned = kit.BackupSettings.from_expectations({"backup": {
        "nightly_archive": "/b/n.tar.gz", "public_key_fingerprint": SIGNER.fingerprint}})
    assert pinned.nightly_trust().pinned_keys == {SIGNER.fingerprint}
    by_file = kit.BackupSettings.from_expectations({"backup": {
        "nightly_archive": ["/b/n.tar.gz"], "public_key": str(public_key_file(tmp_path))}})
    assert by_file.nightly_trust().pinned_keys == {SIGNER.fingerprint}
    with pytest.raises(pytest.UsageError, match="not found"):
        kit.BackupSettings.from_expectations({"backup": {"public_key": str(tmp_path / "no")}})
    with pytest.raises(pytest.UsageError, match="require_signature must be true or false"):
        kit.BackupSettings.from_expectations({"backup": {"require_signature": "no"}})
