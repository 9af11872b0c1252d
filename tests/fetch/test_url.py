"""``kind: url`` against a real local HTTP server: caching, verification, resume, failures."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import PosezooError
from pipeline.fetch import fetch, sha256_file
from pipeline.fetch.cache import Cache
from tests.fetch.conftest import FileServer
from tests.fetch.helpers import fetch_fast, files_under, one_line_error, sha, tar_bytes, zip_bytes

DATA = bytes(range(256)) * 40  # 10240 bytes


def url_source(server: FileServer, path: str, data: bytes, **extra: object) -> dict[str, Any]:
    server.files[path] = data
    return {"kind": "url", "url": server.url(path), "sha256": sha(data), "size": len(data),
            "license": "test", **extra}


def test_download_then_cache_hit(server: FileServer, cache: Path) -> None:
    source = url_source(server, "/m/model.tflite", DATA)
    first = fetch_fast(source, cache)
    assert first == cache / "blobs" / "sha256" / sha(DATA) / "model.tflite"
    assert first.read_bytes() == DATA
    assert fetch_fast(source, cache) == first
    assert len(server.requests) == 1  # the second fetch was a cache hit
    assert files_under(cache) == [str(first.relative_to(cache))]


def test_default_cache_dir_comes_from_env(server: FileServer, cache: Path) -> None:
    path = fetch(url_source(server, "/m.bin", DATA), retries=0)  # no cache_dir: $POSEZOO_CACHE
    assert path.is_relative_to(cache)


def test_sha256_mismatch(server: FileServer, cache: Path) -> None:
    source = url_source(server, "/m.bin", DATA) | {"sha256": "0" * 64}
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source, cache)
    one_line_error(excinfo, source["url"], sha(DATA), "registry expects " + "0" * 64,
                   "update `sha256`")
    assert files_under(cache) == []  # no final file, no bad partial to resume from


def test_size_mismatch(server: FileServer, cache: Path) -> None:
    source = url_source(server, "/m.bin", DATA) | {"size": len(DATA) + 1}
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source, cache)
    one_line_error(excinfo, source["url"], f"size is {len(DATA)} bytes", str(len(DATA) + 1))
    assert files_under(cache) == []


def test_truncated_download_is_resumed(server: FileServer, cache: Path) -> None:
    source = url_source(server, "/m.bin", DATA)
    server.cut_after, server.cut_requests = 3000, 1
    path = fetch_fast(source, cache)
    assert sha256_file(path) == sha(DATA)
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), ("bytes=3000-", 206)]


def test_server_ignoring_range_restarts(server: FileServer, cache: Path) -> None:
    source = url_source(server, "/m.bin", DATA)
    server.cut_after, server.cut_requests, server.honor_range = 3000, 1, False
    path = fetch_fast(source, cache)
    assert path.read_bytes() == DATA
    assert [(r.range, r.status) for r in server.requests] == [(None, 200), ("bytes=3000-", 200)]


def test_persistent_truncation_keeps_partial(server: FileServer, cache: Path) -> None:
    source = url_source(server, "/m.bin", DATA)
    server.cut_after, server.cut_requests = 1000, 99
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source, cache)
    message = one_line_error(excinfo, source["url"], f"received 3000 of {len(DATA)} bytes",
                             "after 3 attempts", "partial file kept")
    (part,) = cache.rglob("*.part")
    assert str(part) in message and part.stat().st_size == 3000
    # The next run resumes from the kept bytes.
    server.cut_requests = 0
    assert fetch_fast(source, cache).read_bytes() == DATA
    assert server.requests[-1].range == "bytes=3000-"


def test_complete_partial_from_interrupted_run(server: FileServer, cache: Path) -> None:
    """A run killed after the last byte but before verification leaves a full ``.part``."""
    source = url_source(server, "/m.bin", DATA)
    part = Cache(cache).keyed_path(source["url"], "m.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA)
    assert fetch_fast(source, cache).read_bytes() == DATA
    assert [(r.range, r.status) for r in server.requests] == [(f"bytes={len(DATA)}-", 416)]
    assert not part.exists()


def test_stale_partial_longer_than_file_restarts(server: FileServer, cache: Path) -> None:
    source = url_source(server, "/m.bin", DATA)
    part = Cache(cache).keyed_path(source["url"], "m.bin.part")
    part.parent.mkdir(parents=True)
    part.write_bytes(DATA + b"stale tail")
    assert fetch_fast(source, cache).read_bytes() == DATA
    assert [r.status for r in server.requests] == [416, 200]


def test_http_404_is_not_retried(server: FileServer, cache: Path) -> None:
    source = {"kind": "url", "url": server.url("/missing.onnx"), "sha256": "1" * 64}
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source, cache)
    one_line_error(excinfo, source["url"], "HTTP 404", "POSEZOO_MIRROR")
    assert len(server.requests) == 1


def test_connection_refused(cache: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.onnx"
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast({"kind": "url", "url": url, "sha256": "1" * 64}, cache)
    message = one_line_error(excinfo, url, "failed after 3 attempts", "may not reach the host",
                             "POSEZOO_MIRROR")
    assert "refused" in message.lower()


def test_empty_sha256_is_recorded_then_enforced(server: FileServer, cache: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    source = url_source(server, "/m.bin", DATA) | {"sha256": ""}
    with caplog.at_level(logging.WARNING, logger="pipeline.fetch"):
        path = fetch_fast(source, cache)
    assert f"sha256: {sha(DATA)}" in caplog.text and "pin it" in caplog.text
    records = json.loads((cache / "recorded-sha256.json").read_text())
    assert records == {source["url"]: {"": sha(DATA)}}
    assert fetch_fast(source, cache) == path and len(server.requests) == 1

    path.unlink()  # force a new download, from a source that changed meanwhile
    server.files["/m.bin"] = DATA[::-1]
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source | {"size": None}, cache)
    one_line_error(excinfo, source["url"], sha(DATA[::-1]), "recorded-sha256.json", sha(DATA))


def test_corrupted_cache_entry_is_downloaded_again(server: FileServer, cache: Path) -> None:
    source = url_source(server, "/m.bin", DATA)
    path = fetch_fast(source, cache)
    path.write_bytes(b"bit rot" + DATA[7:])
    assert fetch_fast(source, cache).read_bytes() == DATA
    assert len(server.requests) == 2


@pytest.mark.parametrize("name, archive", [
    ("bundle.zip", zip_bytes({"models/pose.tflite": DATA, "README": b"hi"})),
    ("bundle.tar.gz", tar_bytes([("./models/pose.tflite", DATA), ("README", b"hi")])),
])
def test_archive_member(server: FileServer, cache: Path, name: str, archive: bytes) -> None:
    server.files["/" + name] = archive
    source = {"kind": "url", "url": server.url("/" + name), "member": "models/pose.tflite",
              "sha256": sha(DATA), "size": len(DATA), "archive_sha256": sha(archive)}
    path = fetch_fast(source, cache)
    assert path.name == "pose.tflite" and path.read_bytes() == DATA
    # A second member of the same archive comes from the cached archive, not the network.
    readme = fetch_fast(source | {"member": "README", "sha256": sha(b"hi"), "size": 2}, cache)
    assert readme.read_bytes() == b"hi" and len(server.requests) == 1


def test_unpinned_archive_member_recorded(server: FileServer, cache: Path) -> None:
    server.files["/b.zip"] = zip_bytes({"m.bin": DATA})
    source = {"kind": "url", "url": server.url("/b.zip"), "member": "m.bin", "sha256": ""}
    assert fetch_fast(source, cache).read_bytes() == DATA
    records = json.loads((cache / "recorded-sha256.json").read_text())
    assert records == {source["url"]: {"m.bin": sha(DATA)}}


def test_archive_member_mismatch_names_cached_archive(server: FileServer, cache: Path) -> None:
    server.files["/b.zip"] = zip_bytes({"m.bin": DATA})
    source = {"kind": "url", "url": server.url("/b.zip"), "member": "m.bin", "sha256": "2" * 64}
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source, cache)
    (archive,) = cache.glob("downloads/*/b.zip")
    one_line_error(excinfo, source["url"], "member m.bin", f"delete {archive}")


def test_missing_member(server: FileServer, cache: Path) -> None:
    server.files["/b.zip"] = zip_bytes({"models/pose_full.tflite": DATA, "LICENSE": b""})
    source = {"kind": "url", "url": server.url("/b.zip"), "member": "models/pose.tflite",
              "sha256": sha(DATA)}
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source, cache)
    one_line_error(excinfo, source["url"], "has no member models/pose.tflite",
                   "members like it: models/pose_full.tflite")


def test_traversal_member_is_refused(server: FileServer, cache: Path) -> None:
    server.files["/evil.zip"] = zip_bytes({"../evil": b"x"})
    source = {"kind": "url", "url": server.url("/evil.zip"), "member": "../evil", "sha256": ""}
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source, cache)
    one_line_error(excinfo, source["url"], "'../evil'", "refusing")
    assert not (cache / "evil").exists() and not (cache.parent / "evil").exists()


def test_bad_registry_entries(cache: Path) -> None:
    with pytest.raises(PosezooError) as excinfo:
        fetch({"kind": "url", "sha256": ""}, cache_dir=cache)
    one_line_error(excinfo, "`url` is missing")
    with pytest.raises(PosezooError) as excinfo:
        fetch({"kind": "url", "url": "http://x/y", "sha256": "abc"}, cache_dir=cache)
    one_line_error(excinfo, "`sha256` must be 64 hex digits")
    with pytest.raises(PosezooError) as excinfo:
        fetch({"kind": "ftp"}, cache_dir=cache)
    one_line_error(excinfo, "unknown kind 'ftp'", "url, pypi-wheel, pypi-sdist, local")


def test_dns_failure(cache: Path) -> None:
    url = "http://posezoo-test.invalid/model.onnx"  # .invalid never resolves (RFC 6761)
    with pytest.raises(PosezooError) as excinfo:
        fetch({"kind": "url", "url": url, "sha256": "1" * 64}, cache_dir=cache, retries=0)
    one_line_error(excinfo, url, "failed after 1 attempt (", "may not reach the host",
                   "POSEZOO_MIRROR")
