"""``archive.extract_member`` (what ``member:`` sources use): useful extraction, refused attacks."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from pipeline.errors import PosezooError
from pipeline.fetch.archive import extract_member
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
def test_extract_member(tmp_path: Path, name: str, data: bytes) -> None:
    archive = write(tmp_path, name, data)
    assert extract_member(archive, "pkg/model.bin", tmp_path / "one.bin").read_bytes() == b"model"
    assert extract_member(archive, "./top.txt", tmp_path / "top.txt").read_bytes() == b"top"
    assert files_under(tmp_path) == sorted([name, "one.bin", "top.txt"])  # only the asked files


def test_member_symlink_inside_is_followed(tmp_path: Path) -> None:
    archive = write(tmp_path, "a.tar.gz", tar_bytes([("real/model.bin", b"model"),
                                                     link("alias.bin", "real/model.bin")]))
    out = extract_member(archive, "alias.bin", tmp_path / "x")
    assert out.read_bytes() == b"model" and not out.is_symlink()


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
        extract_member(archive, member, tmp_path / "one")
    one_line_error(excinfo, str(archive), repr(member), reason)
    with pytest.raises(PosezooError) as excinfo:
        extract_member(archive, member, tmp_path / "one", label="https://example.org/a")
    one_line_error(excinfo, "https://example.org/a", repr(member), reason)
    assert files_under(tmp_path) == [name]  # nothing written


#: A harmless-looking link (alias.bin) to one of the unsafe members above.
CHAINED = [
    ("symlink.tar.gz", tar_bytes([link("data/model.bin", "../../etc/passwd"), link("alias.bin", "data/model.bin")]),
     "data/model.bin", "symlink points outside"),
    ("hardlink.tar.gz", tar_bytes([link("model.bin", "../outside", tarfile.LNKTYPE), link("alias.bin", "model.bin")]),
     "model.bin", "hardlink points outside"),
]


@pytest.mark.parametrize("name, data, member, reason", CHAINED)
def test_a_link_to_an_unsafe_link_is_refused(tmp_path: Path, name: str, data: bytes, member: str, reason: str) -> None:
    """Every link on the way to the file is checked, not only the member asked for."""
    archive = write(tmp_path, name, data)
    with pytest.raises(PosezooError) as excinfo:
        extract_member(archive, "alias.bin", tmp_path / "one")
    one_line_error(excinfo, str(archive), repr(member), reason)
    assert files_under(tmp_path) == [name]


@pytest.mark.parametrize("member", ["a/b", "a/b/passwd"])
def test_symlink_chain_escape_is_refused(tmp_path: Path, member: str) -> None:
    # Each link looks harmless lexically; together "a/b" would resolve to the parent of the root
    # on a file system. Links are followed by name inside the archive, so there is nothing to find.
    archive = write(tmp_path, "chain.tar.gz", tar_bytes([link("a", "."), link("a/b", "..")]))
    with pytest.raises(PosezooError) as excinfo:
        extract_member(archive, member, tmp_path / "out")
    one_line_error(excinfo, str(archive), member)
    assert files_under(tmp_path) == ["chain.tar.gz"]


def test_link_loop_is_not_followed_forever(tmp_path: Path) -> None:
    archive = write(tmp_path, "loop.tar.gz", tar_bytes([link("a", "b"), link("b", "a")]))
    with pytest.raises(PosezooError) as excinfo:
        extract_member(archive, "a", tmp_path / "out")
    one_line_error(excinfo, str(archive), "not a regular file")
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
