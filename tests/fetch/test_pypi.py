"""``kind: pypi-wheel`` / ``pypi-sdist`` against a PEP 503 index served by the local server.

The wheel test runs the real ``pip download`` (isolated from the machine's pip configuration),
so it also checks the command line fetch builds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import PosezooError
from pipeline.fetch.pypi import wheel_target_args
from tests.fetch.conftest import FileServer
from tests.fetch.helpers import fetch_fast, one_line_error, sha, tar_bytes, zip_bytes

MODEL = b"\x00toy model weights\xff" * 100
WHEEL = "toypkg-1.0-py3-none-any.whl"
SDIST = "toypkg-1.0.tar.gz"


def toy_wheel() -> bytes:
    """A minimal valid wheel: pip reads its METADATA while resolving, so it must be there."""
    dist_info = "toypkg-1.0.dist-info"
    return zip_bytes({
        "toypkg/__init__.py": b"raise RuntimeError('fetch must never import the package')\n",
        "toypkg/data/model.bin": MODEL,
        f"{dist_info}/METADATA": b"Metadata-Version: 2.1\nName: toypkg\nVersion: 1.0\n",
        f"{dist_info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n",
        f"{dist_info}/RECORD": b"",
    })


@pytest.fixture
def index(server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileServer:
    """The toy wheel and sdist on a simple index that POSEZOO_PIP_INDEX_URL points at.

    pip is cut off from the machine's config, extra indexes and cache so that only this index
    can answer.
    """
    wheel, sdist = toy_wheel(), tar_bytes([("toypkg-1.0/PKG-INFO", b"Name: toypkg\n"),
                                           ("toypkg-1.0/toypkg/data/model.bin", MODEL)])
    server.files["/files/" + WHEEL] = wheel
    server.files["/files/" + SDIST] = sdist
    server.files["/simple/toypkg/"] = (
        f'<html><body><a href="../../files/{WHEEL}#sha256={sha(wheel)}">{WHEEL}</a>'
        f'<a href="/files/{SDIST}#sha256={sha(sdist)}">{SDIST}</a></body></html>'
    ).encode()
    monkeypatch.setenv("POSEZOO_PIP_INDEX_URL", server.url("/simple/"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        if name not in ("PIP_CONFIG_FILE", "PIP_CACHE_DIR"):
            monkeypatch.delenv(name)
    return server


def wheel_source(**extra: object) -> dict[str, Any]:
    return {"kind": "pypi-wheel", "package": "toypkg", "version": "1.0", "wheel": WHEEL,
            "member": "toypkg/data/model.bin", "sha256": sha(MODEL), "size": len(MODEL),
            "license": "test", **extra}


def sdist_source(**extra: object) -> dict[str, Any]:
    return {"kind": "pypi-sdist", "package": "toypkg", "version": "1.0", "sdist": SDIST,
            "member": "toypkg-1.0/toypkg/data/model.bin", "sha256": sha(MODEL),
            "size": len(MODEL), **extra}


def test_wheel_member(index: FileServer, cache: Path) -> None:
    source = wheel_source(wheel_sha256=sha(index.files["/files/" + WHEEL]))
    path = fetch_fast(source, cache)
    assert path.name == "model.bin" and path.read_bytes() == MODEL
    served = len(index.requests)
    assert fetch_fast(source, cache) == path
    assert len(index.requests) == served  # cache hit: no pip run, no request


def test_wheel_missing_member(index: FileServer, cache: Path) -> None:
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(wheel_source(member="toypkg/model.bin"), cache)
    one_line_error(excinfo, f"{WHEEL}: has no member toypkg/model.bin",
                   "members like it: toypkg/data/model.bin")


def test_wheel_pip_failure(index: FileServer, cache: Path) -> None:
    source = wheel_source(version="2.0", wheel="toypkg-2.0-py3-none-any.whl")
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(source, cache)
    one_line_error(excinfo, "toypkg-2.0-py3-none-any.whl: pip download failed",
                   "No matching distribution found for toypkg==2.0", "command:", "pip download")


def test_sdist_member(index: FileServer, cache: Path) -> None:
    path = fetch_fast(sdist_source(), cache)
    assert path.read_bytes() == MODEL
    assert [r.path for r in index.requests] == ["/simple/toypkg/", "/files/" + SDIST]


def test_sdist_missing_member_and_unknown_file(index: FileServer, cache: Path) -> None:
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(sdist_source(member="toypkg-1.0/model.bin"), cache)
    one_line_error(excinfo, f"{SDIST}: has no member toypkg-1.0/model.bin",
                   "toypkg-1.0/toypkg/data/model.bin")
    with pytest.raises(PosezooError) as excinfo:
        fetch_fast(sdist_source(sdist="toypkg-1.1.tar.gz", version="1.1"), cache)
    one_line_error(excinfo, "toypkg-1.1.tar.gz: not listed on", index.url("/simple/toypkg/"),
                   f"files there: {WHEEL}, {SDIST}")


def test_wheel_target_args() -> None:
    wheel = "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    assert wheel_target_args(wheel) == [
        "--implementation", "cp", "--python-version", "311", "--abi", "cp311",
        "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
    ]
    assert wheel_target_args("toypkg-1.0-1-py2.py3-none-any.whl") == []
    with pytest.raises(PosezooError) as excinfo:
        wheel_target_args("toypkg-1.0.tar.gz")
    one_line_error(excinfo, "toypkg-1.0.tar.gz: not a wheel filename")
