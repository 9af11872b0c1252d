"""Every registered ST / TF Hub int8 source fetches offline from ``POSEZOO_MIRROR=../shared/models/reference``.

The registry names these files by their upstream URLs (GitHub raw files, Kaggle archives), which
this machine cannot reach: the mirror must serve each by its pinned sha256, and a corrupted copy
must be refused with the one-line error, not replaced by a download attempt. Skips without
``../shared``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline.errors import PosezooError
from pipeline.fetch import fetch, sha256_file
from pipeline.registry import load_model, model_names
from tests.conftest import SHARED

REFERENCE = SHARED / "models" / "reference"
if not REFERENCE.is_dir():
    pytest.skip(f"needs the published int8 models in {REFERENCE}", allow_module_level=True)

MIRRORED = {sha256_file(p) for p in REFERENCE.iterdir() if p.is_file() and p.suffix != ".md"}
SOURCES = [
    (name, source)
    for name in model_names()
    for source in load_model(name).raw["sources"]
    if source.get("kind") == "url" and source.get("sha256") in MIRRORED
]


def test_every_reference_file_is_a_registered_url_source() -> None:
    assert {s["sha256"] for _, s in SOURCES} == MIRRORED  # each shared file backs a registry entry
    assert len(SOURCES) >= 6  # ST's four YOLOv8n files, TF Hub's MoveNet int8 from Kaggle and GitHub


@pytest.mark.parametrize(("name", "source"), SOURCES, ids=[f"{n}:{s['id']}" for n, s in SOURCES])
def test_fetch_is_offline_from_the_mirror(name: str, source: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSEZOO_MIRROR", str(REFERENCE))
    got = fetch(source, cache_dir=tmp_path / "cache", retries=0, timeout_s=2.0)
    assert sha256_file(got) == source["sha256"] and got.is_relative_to(tmp_path / "cache")


def test_a_corrupted_mirror_copy_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, source = next((n, s) for n, s in SOURCES if "member" not in s)
    name = source["url"].rsplit("/", 1)[-1]
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    original = next(p for p in REFERENCE.iterdir() if p.is_file() and sha256_file(p) == source["sha256"])
    shutil.copyfile(original, mirror / name)
    with (mirror / name).open("r+b") as handle:  # same size, one byte flipped
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setenv("POSEZOO_MIRROR", str(mirror))
    with pytest.raises(PosezooError) as err:
        fetch(source, cache_dir=tmp_path / "cache", retries=0, timeout_s=2.0)
    message = str(err.value)
    assert "\n" not in message and str(mirror / name) in message and "sha256 is" in message and "POSEZOO_MIRROR" in message
