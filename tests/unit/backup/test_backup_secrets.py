"""Secret values: never in an archive unless asked, and then only encrypted."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from backupkit import PLANTED, TRUST, make_archive, run_cli
from fleetcheck.backup import BackupError, ExitCode, verify
from fleetcheck.backup import secrets as secrets_mod
from fleetcheck.backup.suite import archive_text_contains


def _stored_secret(path: Path) -> dict:
    report = verify.verify(path, trust=TRUST, keep_documents=True)
    return next(o for k, o in verify.iter_items(report, "lab-a") if k == "secrets")


@pytest.mark.parametrize("encrypted", [False, True], ids=["default", "encrypted"])
def test_planted_value_never_in_archive(tmp_path: Path, encrypted: bool) -> None:
    key = secrets_mod.generate_key()
    codec = secrets_mod.SecretCodec.new(secrets_mod.generate_key(), key if encrypted else None,
                                        store_values=encrypted)
    for name in ("a.tar.gz", "a-dir"):
        path = make_archive(tmp_path / name, codec=codec)
        assert archive_text_contains(path, [PLANTED]) == []
        # belt and braces: no form of it in any byte of any file
        blobs = [f.read_bytes() for f in path.rglob("*") if f.is_file()] if path.is_dir() else []
        for blob in blobs:
            assert PLANTED.encode() not in blob
            assert base64.b64encode(PLANTED.encode()) not in blob
    stored = _stored_secret(tmp_path / "a.tar.gz")
    assert "data" not in stored and "stringData" not in stored
    assert stored["metadata"].get("annotations") is None  # last-applied (had the value) dropped
    entry = stored[secrets_mod.FIELD]
    assert entry["keys"] == ["password", "user"]
    assert entry["values"] == ("encrypted" if encrypted else "omitted")


def test_the_grep_would_find_a_value_stored_in_clear(tmp_path: Path) -> None:
    """The detector itself works (so the negative results above mean something)."""
    blob = tmp_path / "clear"
    blob.mkdir()
    (blob / "x.json").write_text(base64.b64encode(PLANTED.encode()).decode())
    assert archive_text_contains(blob, [PLANTED]) == [PLANTED]


def test_hashes_are_keyed_per_archive() -> None:
    key = secrets_mod.generate_key()
    a = secrets_mod.SecretCodec.new(key)
    b = secrets_mod.SecretCodec.new(key)
    assert a.value_hash(b"hunter2") == a.value_hash(b"hunter2")
    assert a.value_hash(b"hunter2") != b.value_hash(b"hunter2")  # other salt
    other_key = secrets_mod.SecretCodec(a.salt, secrets_mod.generate_key())
    assert other_key.value_hash(b"hunter2") != a.value_hash(b"hunter2")
    import hashlib

    plain = hashlib.sha256(b"hunter2").hexdigest()
    assert plain not in a.value_hash(b"hunter2")


def test_codec_for_archive_checks_key_ids(tmp_path: Path) -> None:
    hash_key, enc_key = secrets_mod.generate_key(), secrets_mod.generate_key()
    codec = secrets_mod.SecretCodec.new(hash_key, enc_key, store_values=True)
    path = make_archive(tmp_path / "a.tar.gz", codec=codec)
    meta = verify.verify(path, trust=TRUST).metadata
    again = secrets_mod.SecretCodec.for_archive(meta, hash_key, enc_key)
    stored = _stored_secret(path)
    assert stored[secrets_mod.FIELD]["valueHashes"]["password"] == again.value_hash(
        PLANTED.encode())
    aad = secrets_mod.aad_for("lab-a", "shop", "db")
    data = secrets_mod.stored_data(stored, again, aad)
    assert base64.b64decode(data["password"]).decode() == PLANTED
    with pytest.raises(BackupError, match="not the key"):
        secrets_mod.SecretCodec.for_archive(meta, None, secrets_mod.generate_key())
    with pytest.raises(BackupError, match="hash key given is not"):
        secrets_mod.SecretCodec.for_archive(meta, secrets_mod.generate_key())
    # a ciphertext moved to another Secret does not decrypt
    with pytest.raises(BackupError, match="decryption failed") as info:
        secrets_mod.stored_data(stored, again, secrets_mod.aad_for("lab-a", "shop", "other"))
    assert info.value.code == ExitCode.INVALID


def test_values_need_an_encryption_key() -> None:
    with pytest.raises(BackupError, match="needs --encryption-key"):
        secrets_mod.SecretCodec.new(secrets_mod.generate_key(), None, store_values=True)


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "k"
    material = secrets_mod.write_key_file(path)
    assert path.stat().st_mode & 0o077 == 0
    assert secrets_mod.read_key_file(path) == material
    with pytest.raises(BackupError, match="exists"):
        secrets_mod.write_key_file(path)
    hexfile = tmp_path / "hex"
    hexfile.write_text(material.hex())
    assert secrets_mod.read_key_file(hexfile) == material
    short = tmp_path / "short"
    short.write_text("tooshort")
    with pytest.raises(BackupError, match="at least 32"):
        secrets_mod.read_key_file(short)
    with pytest.raises(BackupError, match="keygen"):
        secrets_mod.read_key_file(tmp_path / "missing")


def test_cli_keygen(tmp_path: Path) -> None:
    proc = run_cli("keygen", tmp_path / "key")
    assert proc.returncode == 0 and len(secrets_mod.read_key_file(tmp_path / "key")) == 32
    proc = run_cli("keygen", tmp_path / "key")
    assert proc.returncode == ExitCode.USAGE and "exists" in proc.stderr
