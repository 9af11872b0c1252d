"""Every params key a stage reads is one dvc.yaml declares for it (else DVC would not re-run it).

The stages run in-process on the tiny model with ``load_params`` returning a mapping that records
every value read (a leaf, or a whole subtree iterated); the keys each stage declares come from
DVC's own index of this checkout's dvc.yaml over a params.yaml shaped like the repository's (the
tiny model in ``models``). The other direction — a stage declares only its scheme's keys — is
tests/unit/test_params_granularity.py. Covered: fetch, convert, optimize (with a search),
quantize, evaluate, benchmark; calibrate (downloads), footprint (reads no params), recommend and
cards (read the metrics and the whole params they declare) are not run here.
"""

from __future__ import annotations

from contextlib import chdir
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

import pipeline.params
from pipeline.cli import main
from tests.conftest import REPO, TINY_SIZE, photo_manifests
from tests.integration.conftest import DVC, run

pytestmark = pytest.mark.slow
MODEL = "tiny_landmarks"


class Recorder(dict):
    """A params mapping that records the dotted path of every value read from it."""

    def __init__(self, data: dict, path: str, reads: set[str]) -> None:
        super().__init__(data)
        self._path, self._reads = path, reads

    def _child(self, key: Any, value: Any) -> Any:
        path = self._key(key)
        if isinstance(value, dict):
            return Recorder(value, path, self._reads)
        self._reads.add(path)
        return value

    def __getitem__(self, key: Any) -> Any:
        return self._child(key, super().__getitem__(key))

    def _key(self, key: Any) -> str:
        return f"{self._path}.{key}" if self._path else str(key)

    def __contains__(self, key: object) -> bool:
        # An absent key is read (the stage acts on its absence); a present one is read when its
        # value is (walking through it to a deeper key reads only that key).
        present = super().__contains__(key)
        if not present:
            self._reads.add(self._key(key))
        return present

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __iter__(self) -> Iterator[Any]:  # iterating keys reads the structure, not the values
        return iter(list(super().keys()))

    def items(self) -> Any:
        self._reads.add(self._path or "*")
        return [(k, super(Recorder, self).__getitem__(k)) for k in super().keys()]

    def values(self) -> Any:
        self._reads.add(self._path or "*")
        return [super(Recorder, self).__getitem__(k) for k in super().keys()]


def _declared(root: Path) -> dict[str, set[str]]:
    """Stage name -> params keys it declares, from DVC's index of the project at ``root``."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with chdir(root), Repo(str(root)) as repo:
        return {s.addressing: {k for d in s.deps if isinstance(d, ParamsDependency) for k in d.params} for s in repo.index.stages}


def _undeclared(reads: set[str], declared: set[str]) -> set[str]:
    return {r for r in reads if not any(r == d or r.startswith(d + ".") for d in declared)}


def test_each_stage_reads_only_declared_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_env: Path, photo_folder: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["models"] = {MODEL: {"resolution": TINY_SIZE}}
    params["quantize"]["formats"] = ["tflite", "onnx"]
    params["quantize"]["search"]["candidates"]["per_channel"] = [{}, {"calibration": "percentile"}]
    params["benchmark"] |= {"runs": 2, "warmup": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    run(["git", "init", "-q"], tmp_path)
    run([DVC, "init", "-q"], tmp_path)
    declared = _declared(tmp_path)
    calib = photo_manifests(tmp_path / "calib", photo_folder, 8, 4)

    reads: set[str] = set()

    def recorded(path: Path = pipeline.params.DEFAULT_PARAMS) -> dict[str, Any]:
        return Recorder(yaml.safe_load(Path(path).read_text()), "", reads)

    for name in ("fetch", "convert", "optimize", "quantize", "evaluate", "benchmark"):
        monkeypatch.setattr(f"stages.{name}.load_params", recorded)
    p, m = ["--params", str(tmp_path / "params.yaml")], ["--model", MODEL]
    manifest = ["--manifest", str(calib / "manifest.json")]
    b = tmp_path / "build"
    runs = {
        f"fetch@{MODEL}": ["fetch", *m, *p, "--out", str(b / "source")],
        f"convert@{MODEL}": ["convert", *m, *p, *manifest, "--source-dir", str(b / "source"), "--out", str(b / "float"), "--report", str(b / "convert.json")],
    }
    for scheme in ("per_channel", "per_tensor"):
        key = f"{MODEL}-{scheme}"
        runs[f"optimize@{key}"] = ["optimize", *m, *p, *manifest, "--scheme", scheme, "--validation", str(calib / "holdout.json"),
                                   "--float-dir", str(b / "float"), "--out", str(b / key), "--report", str(b / f"{key}.json")]
        runs[f"quantize@{key}-onnx"] = ["quantize", *m, *p, *manifest, "--scheme", scheme, "--format", "onnx", "--float-dir", str(b / key), "--out-dir", str(b / f"{key}-onnx")]
    key = f"{MODEL}-per_channel-onnx"
    runs[f"evaluate@{key}"] = ["evaluate", *m, *p, "--source-dir", str(b / "source"), "--float-dir", str(b / "float"), "--int8", str(b / key),
                               "--holdout", str(calib / "holdout.json"), "--metrics", str(b / "evaluate.json")]
    runs[f"benchmark@{key}"] = ["benchmark", str(b / key), *m, *p, "--key", key, "--out", str(b / "benchmark.json")]
    found = {}
    for stage, argv in runs.items():
        reads.clear()
        assert main(argv) == 0, stage
        found[stage] = _undeclared(reads, declared[stage])
        assert reads, f"{stage} read no params: the recorder is not in place"
    assert {stage: undeclared for stage, undeclared in found.items() if undeclared} == {}
