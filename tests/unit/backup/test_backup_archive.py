"""Archive format and verification: every kind of damage is found, naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from backupkit import (
    CM_FILE,
    DAMAGE,
    SIGNER,
    TRUST,
    damage,
    make_archive,
    public_key_file,
    rewrite_tar,
    run_cli,
)
from fleetcheck.backup import BackupError, ExitCode, verify
from fleetcheck.backup import archive as archive_mod


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "good.tar.gz")


def test_intact_archive_verifies(good: Path) -> None:
    report = verify.verify(good, trust=TRUST)
    assert report.ok, report.problems
    assert report.objects == 1 + 3 + 1 + 1  # namespace, 3 configmaps, secret, deployment
    assert set(report.metadata["contexts"]) == {"lab-a"}
    counts = {k: v["count"] for k, v in report.metadata["contexts"]["lab-a"]["kinds"].items()}
    assert counts == {"namespaces": 1, "configmaps": 3, "secrets": 1, "deployments.apps": 1}
    assert report.metadata["contexts"]["lab-a"]["kinds"]["configmaps"]["skipped"]


def test_directory_archive_and_sha256sum_compatible_manifest(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "dir-archive")
    assert path.is_dir() and (path / "SHA256SUMS").is_file()
    assert verify.verify(path, trust=TRUST).ok
    line = (path / "SHA256SUMS").read_text().splitlines()[0]
    digest, name = line.split("  ", 1)
    assert len(digest) == 64 and (path / name).is_file()
    (path / CM_FILE).write_text("{}")
    assert any(p.path == CM_FILE for p in verify.verify(path, trust=TRUST).problems)


def test_archive_is_private_and_never_overwritten(good: Path) -> None:
    assert good.stat().st_mode & 0o077 == 0
    with pytest.raises(BackupError, match="exists"):
        make_archive(good)




@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_detected_naming_the_file(kind: str, good: Path, tmp_path: Path) -> None:
    bad = damage(kind, good, tmp_path / "bad.tar.gz")
    report = verify.verify(bad, trust=TRUST)
    assert not report.ok
    path, words = DAMAGE[kind]
    matching = [p for p in report.problems if words in p.message]
    assert matching, report.problems
    if path:
        assert any(p.path == path for p in matching), report.problems
    else:  # truncated: the message names the file the archive ends in/after and the archive
        assert "bad.tar.gz" in matching[0].message and matching[0].path.endswith(".json")


def test_metadata_count_edited_with_manifest_updated_is_still_caught(good: Path,
                                                                       tmp_path: Path) -> None:
    """A forger who also fixes SHA256SUMS is caught by the count check."""
    import hashlib

    new_meta: dict[str, bytes] = {}

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("/metadata.json"):
            meta = json.loads(data)
            meta["contexts"]["lab-a"]["kinds"]["configmaps"]["count"] = 2
            new_meta["data"] = archive_mod.dump_document(meta)
            return new_meta["data"]
        if name.endswith("/SHA256SUMS"):
            digest = hashlib.sha256(new_meta["data"]).hexdigest()
            lines = [f"{digest}  metadata.json" if line.endswith("  metadata.json") else line
                     for line in data.decode().splitlines()]
            return ("\n".join(lines) + "\n").encode()
        return data

    report = verify.verify(rewrite_tar(good, tmp_path / "forged.tar.gz", edit), trust=TRUST)
    assert [str(p) for p in report.problems] == [
        (f"metadata.json: count of {CM_FILE} is 2 but the file holds 3 objects (edited metadata "
         "or file)"),
        (f"SHA256SUMS.sig: signature by {SIGNER.fingerprint} does NOT verify: SHA256SUMS was "
         "changed after signing (or the signature was)")]


def test_duplicate_member_is_detected(good: Path, tmp_path: Path) -> None:
    bad = rewrite_tar(good, tmp_path / "dup.tar.gz",
                      lambda n, d: [(n, d), (n, b'{"items": []}')] if n.endswith(CM_FILE) else d)
    problems = verify.verify(bad, trust=TRUST).problems
    assert any(p.path == CM_FILE and "twice" in p.message for p in problems)


def test_missing_archive_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(BackupError) as info:
        verify.verify(tmp_path / "nope.tar.gz")
    assert info.value.code == ExitCode.USAGE and "not found" in str(info.value)


def test_not_an_archive(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip" * 10)
    with pytest.raises(BackupError) as info:
        verify.verify(junk)
    assert info.value.code == ExitCode.INVALID


def test_load_verified_refuses_a_damaged_archive(good: Path, tmp_path: Path) -> None:
    bad = damage("byte flipped", good, tmp_path / "bad.tar.gz")
    with pytest.raises(BackupError, match=CM_FILE) as info:
        verify.load_verified(bad, trust=TRUST)
    assert info.value.code == ExitCode.INVALID


def test_context_names_are_made_safe(tmp_path: Path) -> None:
    assert archive_mod.context_dir("lab-a") == "lab-a"
    odd = archive_mod.context_dir("arn:aws:eks:eu-west-1:1234:cluster/prod")
    assert "/" not in odd and ":" not in odd
    assert odd != archive_mod.context_dir("arn:aws:eks:eu-west-1:1234:cluster_prod")
    path = make_archive(tmp_path / "x.tar.gz", contexts=("viewer@lab-a", "../evil"))
    report = verify.verify(path, trust=TRUST)
    assert report.ok and set(report.metadata["contexts"]) == {"viewer@lab-a", "../evil"}
    assert all(".." not in i["dir"].split("/") for i in report.metadata["contexts"].values())


# --- the CLI ------------------------------------------------------------------------------------

def test_cli_verify_ok_and_json(good: Path, tmp_path: Path) -> None:
    pub = public_key_file(tmp_path)
    proc = run_cli("verify", good, "--public-key", pub)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout and f"SIGNED by trusted key {SIGNER.fingerprint}" in proc.stdout
    data = json.loads(run_cli("verify", good, "--json", "--public-key", pub).stdout)
    assert data["ok"] and data["objects"] == 6
    assert data["signature"]["state"] == "trusted" and data["signature"]["signed"]
    assert data["signature"]["key_fingerprint"] == SIGNER.fingerprint
    assert data["manifest_sha256"] == verify.verify(good, trust=TRUST).manifest_sha256


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_cli_verify_exit_1_naming_the_file(kind: str, good: Path, tmp_path: Path) -> None:
    bad = damage(kind, good, tmp_path / "bad.tar.gz")
    proc = run_cli("verify", bad, "--public-key", public_key_file(tmp_path))
    assert proc.returncode == ExitCode.INVALID, proc.stdout + proc.stderr
    path, words = DAMAGE[kind]
    lines = [line for line in proc.stdout.splitlines() if "PROBLEM" in line and words in line]
    assert lines, proc.stdout
    if path:
        assert any(f"PROBLEM {path}:" in line for line in lines)
    else:
        assert "bad.tar.gz is truncated" in lines[0] and ".json" in lines[0]


def test_cli_missing_archive_one_line(tmp_path: Path) -> None:
    proc = run_cli("verify", tmp_path / "missing.tar.gz")
    assert proc.returncode == ExitCode.USAGE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found" in lines[0] and "missing.tar.gz" in lines[0]


def test_cli_restore_refuses_damaged_archive(good: Path, tmp_path: Path) -> None:
    bad = damage("file removed", good, tmp_path / "bad.tar.gz")
    kubeconfig = tmp_path / "kc.yaml"
    kubeconfig.write_text(json.dumps({
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "t0ken-xyz"}}],
        "contexts": [{"name": "lab-a", "context": {"cluster": "c", "user": "u"}}]}))
    proc = run_cli("restore", bad, "--context", "lab-a", "--namespace", "shop",
                   "--kubeconfig", kubeconfig, "--public-key", public_key_file(tmp_path))
    assert proc.returncode == ExitCode.INVALID
    assert CM_FILE in proc.stderr and "does not verify" in proc.stderr
    proc = run_cli("restore", good, "--context", "nope", "--namespace", "shop",
                   "--kubeconfig", kubeconfig)
    assert proc.returncode == ExitCode.USAGE
    assert "context 'nope' does not exist" in proc.stderr and "lab-a" in proc.stderr


def test_cli_help_for_every_subcommand() -> None:
    for sub in ("backup", "verify", "restore", "keygen"):
        proc = run_cli(sub, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout
    assert "Exit codes" in run_cli("--help").stdout


def test_copy_of_archive_verifies(good: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.tar.gz"
    shutil.copy(good, copy)
    assert verify.verify(copy, trust=TRUST).ok
