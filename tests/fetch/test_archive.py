"""``archive.extract_member`` / ``safe_extract_all``: useful extraction, refused attacks."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from pipeline.errors import PosezooError
from pipeline.fetch.archive import extract_member, safe_extract_all
from tests.fetch.helpers import files_under, link, one_line_error, tar_bytes, zip_bytes


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name, data", [
    ("a.zip", zip_bytes({"pkg/": b"", "pkg/model.bin": b"model", "top.txt": b"top"})),
    ("a.tar.gz", tar_bytes([("pkg/model.bin", b"model"), ("top.txt", b"top"),
                            link("pkg/alias.bin", "model.bin")])),
])
def test_extract_all_and_member(tmp_path: Path, name: str, data: bytes) -> None:
    archive = write(tmp_path, name, data)
    out = tmp_path / "out"
    paths = safe_extract_all(archive, out)
    assert out / "pkg" / "model.bin" in paths and (out / "top.txt").read_bytes() == b"top"
    assert (out / "pkg" / "model.bin").read_bytes() == b"model"
    member = extract_member(archive, "pkg/model.bin", tmp_path / "one.bin")
    assert member.read_bytes() == b"model"


def test_member_symlink_inside_is_followed(tmp_path: Path) -> None:
    archive = write(tmp_path, "a.tar.gz", tar_bytes([("real/model.bin", b"model"),
                                                     link("alias.bin", "real/model.bin")]))
    assert extract_member(archive, "alias.bin", tmp_path / "x").read_bytes() == b"model"
    safe_extract_all(archive, tmp_path / "out")
    assert (tmp_path / "out" / "alias.bin").is_symlink()
    assert (tmp_path / "out" / "alias.bin").read_bytes() == b"model"


UNSAFE = [
    ("traversal.zip", zip_bytes({"ok.txt": b"", "../evil": b"x"}), "../evil", "'..'"),
    ("absolute.tar.gz", tar_bytes([("ok.txt", b""), ("/tmp/evil", b"x")]), "/tmp/evil",
     "absolute path"),
    ("symlink.tar.gz", tar_bytes([("ok.txt", b""), link("data/model.bin", "../../etc/passwd")]),
     "data/model.bin", "symlink points outside"),
    ("abslink.tar.gz", tar_bytes([link("data/model.bin", "/etc/passwd")]), "data/model.bin",
     "symlink points outside"),
    ("hardlink.tar.gz", tar_bytes([link("model.bin", "../outside", tarfile.LNKTYPE)]),
     "model.bin", "hardlink points outside"),
    ("device.tar.gz", tar_bytes([link("dev/null", "", tarfile.CHRTYPE)]), "dev/null",
     "device"),
]


@pytest.mark.parametrize("name, data, member, reason", UNSAFE)
def test_unsafe_archives_are_refused(tmp_path: Path, name: str, data: bytes, member: str,
                                     reason: str) -> None:
    archive = write(tmp_path, name, data)
    with pytest.raises(PosezooError) as excinfo:
        safe_extract_all(archive, tmp_path / "out")
    one_line_error(excinfo, str(archive), repr(member), reason)
    with pytest.raises(PosezooError) as excinfo:
        extract_member(archive, member, tmp_path / "one", label="https://example.org/a")
    one_line_error(excinfo, "https://example.org/a", repr(member), reason)
    assert files_under(tmp_path) == [name]  # nothing extracted, not even the safe members


def test_symlink_chain_escape_is_refused(tmp_path: Path) -> None:
    # Each link looks harmless lexically; together "a/b" resolves to the parent of the root.
    archive = write(tmp_path, "chain.tar.gz", tar_bytes([link("a", "."), link("a/b", "..")]))
    with pytest.raises(PosezooError) as excinfo:
        safe_extract_all(archive, tmp_path / "out")
    one_line_error(excinfo, str(archive), "'a/b'", "outside the destination")
    assert not (tmp_path / "out").exists()


def test_not_an_archive(tmp_path: Path) -> None:
    path = write(tmp_path, "model.onnx", b"not an archive at all")
    with pytest.raises(PosezooError) as excinfo:
        extract_member(path, "x", tmp_path / "x")
    one_line_error(excinfo, f"{path}: not a zip or readable tar", f"delete {path}")


def test_corrupt_archive(tmp_path: Path) -> None:
    data = tar_bytes([("model.bin", bytes(100_000))])
    path = write(tmp_path, "cut.tar.gz", data[: len(data) // 2])
    with pytest.raises(PosezooError) as excinfo:
        extract_member(path, "model.bin", tmp_path / "x")
    one_line_error(excinfo, f"{path}: the archive is corrupt", f"delete {path} and retry")
    assert not (tmp_path / "x").exists()
