"""``kind: local``: verified in place, relative to ``base_dir``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import PosezooError
from pipeline.fetch import fetch
from tests.fetch.helpers import one_line_error, sha

DATA = b"hand-placed model"


def test_local_file_relative_to_base_dir(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.onnx").write_bytes(DATA)
    source = {"kind": "local", "path": "models/m.onnx", "sha256": sha(DATA), "size": len(DATA)}
    assert fetch(source, cache_dir=cache, base_dir=tmp_path) == tmp_path / "models" / "m.onnx"


def test_local_wrong_sha256(tmp_path: Path, cache: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(DATA)
    with pytest.raises(PosezooError) as excinfo:
        fetch({"kind": "local", "path": str(path), "sha256": "3" * 64}, cache_dir=cache)
    one_line_error(excinfo, str(path), sha(DATA), "registry expects " + "3" * 64,
                   "replace it with the right one")


def test_local_missing_file(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(PosezooError) as excinfo:
        fetch({"kind": "local", "path": "nope.onnx", "sha256": ""}, cache_dir=cache,
              base_dir=tmp_path)
    one_line_error(excinfo, str(tmp_path / "nope.onnx"), "no such file", str(tmp_path))
