"""The planner against TensorFlow Lite Micro's own arena, on int8 models built here and ST's files.

``tflite_micro``'s Python interpreter plans the arena when it is created and prints the
allocations; its "arena allocation head" is the non-persistent section, i.e. the memory plan.
The estimator's ``in_place=False`` mode (every tensor its own buffer, as TFLM does) must give the
same number exactly. The reference kernels in that package ask for no scratch buffer on these ops.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.footprint.loader import read_graph
from pipeline.footprint.planner import plan_arena
from tests.footprint import models

runtime = pytest.importorskip("tflite_micro.python.tflite_micro.runtime")

pytestmark = pytest.mark.slow


def _tflm_head(path: Path, capfd: pytest.CaptureFixture[str]) -> int:
    interpreter = runtime.Interpreter.from_bytes(path.read_bytes(), arena_size=16 * 1024 * 1024)
    capfd.readouterr()
    interpreter.print_allocations()
    printed = "".join(capfd.readouterr())
    match = re.search(r"Arena allocation head (\d+) bytes", printed)
    assert match, printed
    return int(match.group(1))


def _branchy(x):  # type: ignore[no-untyped-def]
    """Odd sizes (alignment), a tensor read twice, concat, pool, 1×1 conv."""
    import tensorflow as tf

    layers = tf.keras.layers
    a = layers.Conv2D(7, 3, padding="same")(x)
    b = layers.DepthwiseConv2D(3, padding="same")(a)
    c = layers.Concatenate()([layers.Add()([a, b]), a])
    return layers.Conv2D(5, 1)(layers.MaxPooling2D(2)(c))


def _pad_reshape(x):  # type: ignore[no-untyped-def]
    """A padded conv and a flatten: ops the reported plan aliases but TFLM does not."""
    import tensorflow as tf

    layers = tf.keras.layers
    a = layers.Conv2D(8, 1)(x)
    b = layers.Conv2D(6, 3)(layers.ZeroPadding2D(2)(a))
    return layers.Dense(3)(layers.Flatten()(b))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tflm")
    paths = {}
    for name, body, shape in [("branchy", _branchy, (23, 23, 3)), ("pad_reshape", _pad_reshape, (20, 20, 4))]:
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(models.keras_tflite(body, shape))
    return paths


@pytest.mark.parametrize("name", ["branchy", "pad_reshape"])
def test_plan_equals_tflite_micro_on_built_models(built: dict[str, Path], name: str, capfd: pytest.CaptureFixture[str]) -> None:
    graph = read_graph(built[name])
    assert plan_arena(graph, in_place=False).arena_bytes == _tflm_head(built[name], capfd)


def test_folding_the_pad_beats_tflite_micro(built: dict[str, Path]) -> None:
    # 1×1 conv output a 20·20·8 = 3200 → pad to 24·24·8 = 4608 → 3×3 conv 22·22·6 = 2904.
    # TFLM holds a and the padded copy together (3200 + 4608 = 7808); folding the pad into the
    # conv leaves a and the conv output (3200 + 2904 = 6104).
    graph = read_graph(built["pad_reshape"])
    assert plan_arena(graph, in_place=False).arena_bytes == 7808
    assert plan_arena(graph).arena_bytes == plan_arena(graph).lower_bound_bytes == 6112  # 2904 → 2912 aligned


@pytest.mark.parametrize(
    "name",
    ["yolov8n_256_quant_pt_uf_pose_coco-st.tflite", "yolov8n_192_quant_pc_uf_pose_coco-st.tflite"],
)
def test_plan_equals_tflite_micro_on_st_reference(reference_dir: Path, name: str, capfd: pytest.CaptureFixture[str]) -> None:
    path = reference_dir / name
    assert plan_arena(read_graph(path), in_place=False).arena_bytes == _tflm_head(path, capfd)
