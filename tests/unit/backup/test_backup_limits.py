"""Reading archives is streamed and bounded: a decompression bomb, or a large archive, never
exhausts memory.  Verification reads one member at a time, hashing as it goes; a member (or
the total) beyond the limits stops the reading with a problem naming the file and the limit."""

from __future__ import annotations

import gzip
import io
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from backupkit import PLANTED, TRUST, make_archive, public_key_file, run_cli
from fleetcheck.backup import BackupError, ExitCode, verify
from fleetcheck.backup import archive as archive_mod
from fleetcheck.backup.suite import archive_text_contains

MIB = 1024 * 1024


def _with_members(good: Path, out: Path, extra: list[tuple[str, int]]) -> Path:
    """``good`` plus members of zeros (name, size), appended (they compress to almost
    nothing: a small file that decompresses to a lot)."""
    with tarfile.open(good, "r:gz") as tin, tarfile.open(out, "w:gz") as tout:
        root = ""
        for member in tin.getmembers():
            root = member.name.split("/", 1)[0]
            tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
        for name, size in extra:
            info = tarfile.TarInfo(f"{root}/{name}")
            info.size = size
            tout.addfile(info, _Zeros(size))
    return out


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as read (the test itself never holds them)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    return make_archive(tmp_path / "good.tar.gz")


def test_bomb_member_is_refused_naming_member_and_limit(good: Path, tmp_path: Path) -> None:
    bomb = _with_members(good, tmp_path / "bomb.tar.gz", [("contexts/lab-a/bomb.json", 8 * MIB)])
    assert bomb.stat().st_size < 64 * 1024  # small on disk, 8 MiB decompressed
    report = verify.verify(bomb, trust=TRUST,
                                limits=archive_mod.Limits(max_member_bytes=1 * MIB))
    assert not report.ok
    (hit,) = [p for p in report.problems if "limit" in p.message]
    assert hit.path == "contexts/lab-a/bomb.json"
    assert f"decompressed size {8 * MIB} bytes exceeds the per-file limit of {MIB} bytes" in (
        hit.message) and "--max-member-mb 1" in hit.message
    proc = run_cli("verify", bomb, "--max-member-mb", "1", "--public-key",
                   public_key_file(tmp_path))
    assert proc.returncode == ExitCode.INVALID, proc.stdout + proc.stderr
    assert "PROBLEM contexts/lab-a/bomb.json: decompressed size" in proc.stdout


def test_total_decompressed_size_is_bounded(good: Path, tmp_path: Path) -> None:
    many = _with_members(good, tmp_path / "many.tar.gz",
                         [(f"junk/{i}.bin", 600 * 1024) for i in range(4)])
    limits = archive_mod.Limits(max_member_bytes=1 * MIB, max_total_bytes=2 * MIB)
    report = verify.verify(many, trust=TRUST, limits=limits)
    hits = [p for p in report.problems if "total limit" in p.message]
    assert len(hits) == 1 and hits[0].path.startswith("junk/"), report.problems
    assert "--max-total-mb 2" in hits[0].message
    # the same archive within the default limits: the junk is reported, not a limit
    report = verify.verify(many, trust=TRUST)
    assert not any("limit" in p.message for p in report.problems)
    assert any(p.path == "junk/0.bin" and "not listed" in p.message for p in report.problems)


def test_member_count_is_bounded(good: Path, tmp_path: Path) -> None:
    limits = archive_mod.Limits(max_members=3)
    report = verify.verify(good, trust=TRUST, limits=limits)
    assert any("more than 3 files" in p.message for p in report.problems), report.problems


def test_directory_archive_member_limit(tmp_path: Path) -> None:
    path = make_archive(tmp_path / "dir-archive")
    (path / "big.bin").write_bytes(bytes(2 * MIB))
    report = verify.verify(path, trust=TRUST,
                                limits=archive_mod.Limits(max_member_bytes=1 * MIB))
    assert any(p.path == "big.bin" and "per-file limit" in p.message for p in report.problems)


def test_verify_streams_instead_of_loading_the_archive(good: Path, tmp_path: Path) -> None:
    """Peak memory while verifying an archive with a 48 MiB member stays far below 48 MiB
    (the whole archive used to be read into memory)."""
    big = _with_members(good, tmp_path / "big.tar.gz", [("blobs/big.bin", 48 * MIB)])
    tracemalloc.start()
    try:
        report = verify.verify(big, trust=TRUST)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [p.path for p in report.problems] == ["blobs/big.bin"]  # not listed in SHA256SUMS
    assert report.bytes >= 48 * MIB
    assert peak < 12 * MIB, f"peak {peak / MIB:.1f} MiB"


def test_limits_from_mb() -> None:
    assert archive_mod.Limits.from_mb(1, 2) == archive_mod.Limits(MIB, 2 * MIB)
    assert archive_mod.Limits.from_mb() == archive_mod.Limits()
    with pytest.raises(BackupError, match="positive"):
        archive_mod.Limits.from_mb(0)


def test_secret_search_streams_and_finds_across_chunk_boundaries(tmp_path: Path) -> None:
    """The suite's "no Secret value in the archive" search reads in chunks too, and a value
    split by a chunk boundary is still found (so its negative results mean something)."""
    blob = tmp_path / "clear"
    blob.mkdir()
    data = bytes(archive_mod.CHUNK - 7) + PLANTED.encode() + bytes(100)
    (blob / "x.bin").write_bytes(data)
    assert archive_text_contains(blob, [PLANTED]) == [PLANTED]
    tarball = tmp_path / "clear.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        info = tarfile.TarInfo("clear/x.bin")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert archive_text_contains(tarball, [PLANTED]) == [PLANTED]
    assert archive_text_contains(tarball, ["absent-" + PLANTED]) == []
    gzip.decompress(tarball.read_bytes())  # a valid tarball, not a fluke of the search


def test_oversized_tar_header_is_bounded_too(good: Path, tmp_path: Path) -> None:
    """A PAX header is read into memory whole by tarfile: one larger than the per-file limit
    stops the reading as well."""
    out = tmp_path / "pax.tar.gz"
    with tarfile.open(good, "r:gz") as tin, tarfile.open(out, "w:gz",
                                                         format=tarfile.PAX_FORMAT) as tout:
        for member in tin.getmembers():
            if member.name.endswith("/metadata.json"):
                member.pax_headers = {"comment": "x" * (3 * MIB)}
            tout.addfile(member, tin.extractfile(member) if member.isfile() else None)
    report = verify.verify(out, trust=TRUST,
                                limits=archive_mod.Limits(max_member_bytes=1 * MIB))
    assert any(p.path == "(tar headers)" and "outside any file's data" in p.message
               for p in report.problems), report.problems
    assert verify.verify(out, trust=TRUST).ok  # within the default limits: fine
