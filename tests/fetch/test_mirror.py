"""``POSEZOO_MIRROR``: directories searched before the network, verified like a download."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import PosezooError
from pipeline.fetch.mirror import mirror_dirs
from tests.fetch.conftest import FileServer
from tests.fetch.helpers import fetch_fast, one_line_error, sha, tar_bytes

DATA = bytes(range(256)) * 40


@pytest.fixture
def mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "mirror"
    (root / "nested").mkdir(parents=True)
    monkeypatch.setenv("POSEZOO_MIRROR", f"{tmp_path / 'empty-mirror'}{os.pathsep}{root}")
    (tmp_path / "empty-mirror").mkdir()
    return root


def _source(server: FileServer, path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    server.files[path] = data  # the server has the file, so any request would succeed
    return {"kind": "url", "url": server.url(path), "sha256": sha(data), "size": len(data), "license": "test", **extra}


def test_a_pinned_file_is_found_by_content_whatever_its_name(server: FileServer, cache: Path, mirror: Path) -> None:
    (mirror / "nested" / "renamed.bin").write_bytes(DATA)
    (mirror / "other.bin").write_bytes(DATA[:-1] + b"x")  # same size, other content: hashed, skipped
    got = fetch_fast(_source(server, "/m/model.tflite", DATA), cache)
    assert got.read_bytes() == DATA and got.name == "model.tflite" and got.is_relative_to(cache)
    assert server.requests == []  # the network was never asked


def test_a_file_found_by_name_is_verified_and_a_bad_copy_refused(server: FileServer, cache: Path, mirror: Path) -> None:
    (mirror / "model.tflite").write_bytes(b"corrupted copy")
    with pytest.raises(PosezooError) as err:
        fetch_fast(_source(server, "/m/model.tflite", DATA), cache)
    one_line_error(err, str(mirror / "model.tflite"), "size is 14 bytes", "POSEZOO_MIRROR")
    assert server.requests == []  # not silently downloaded instead
    assert (mirror / "model.tflite").read_bytes() == b"corrupted copy"  # the mirror is never modified


def test_an_unpinned_source_is_taken_by_name_and_its_digest_recorded(server: FileServer, cache: Path, mirror: Path, caplog: pytest.LogCaptureFixture) -> None:
    (mirror / "model.tflite").write_bytes(DATA)
    source = _source(server, "/m/model.tflite", DATA, sha256="", size=None)
    assert fetch_fast(source, cache).read_bytes() == DATA
    assert server.requests == [] and sha(DATA) in (cache / "recorded-sha256.json").read_text()


def test_an_archive_member_is_found_by_content_without_the_archive(server: FileServer, cache: Path, mirror: Path) -> None:
    (mirror / "lite-model_int8_4.tflite").write_bytes(DATA)
    source = _source(server, "/download", tar_bytes([("4.tflite", DATA)]), member="4.tflite", sha256=sha(DATA), size=len(DATA))
    assert fetch_fast(source, cache).read_bytes() == DATA
    assert server.requests == []


def test_without_a_match_the_network_is_used(server: FileServer, cache: Path, mirror: Path) -> None:
    (mirror / "unrelated.bin").write_bytes(b"unrelated")
    assert fetch_fast(_source(server, "/m/model.tflite", DATA), cache).read_bytes() == DATA
    assert len(server.requests) == 1


def test_a_mirror_that_is_not_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(PosezooError) as err:
        mirror_dirs(str(tmp_path / "nowhere"))
    one_line_error(err, "POSEZOO_MIRROR", "nowhere", "is not a directory")
    assert mirror_dirs("") == ()
