"""The estimator against ST's published figures for ST's own int8 YOLOv8n-pose files.

Figures: STM32Cube.AI 9.1.0, MCU, ``--allocate-inputs --allocate-outputs`` (shared/models/reference/
README.md). They fail the tests if the numbers drift. Skipped where the shared folder is absent.

Units: the README (like ST's model zoo) labels the figures KiB, but they behave as kB (10³ B):
the per-tensor activation figure 786.43 is exactly 786,432 B = 3 × 128·128·16 (the stem's conv,
sigmoid and multiply outputs live together) / 1000, and the per-tensor weights figure 3321.03 is
the file's 3,321,352 constant bytes / 1000 to 0.01 %. Each tolerance is therefore checked under
both readings, so the tests hold whichever unit ST meant.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import tflite

from pipeline.footprint import Footprint, estimate

PC_256 = "yolov8n_256_quant_pc_uf_pose_coco-st.tflite"
PT_256 = "yolov8n_256_quant_pt_uf_pose_coco-st.tflite"
#: file -> (MACC, weights, activations) as ST publishes them (units: see the module docstring)
ST_FIGURES = {PC_256: (741.778e6, 3449.16, 855.47), PT_256: (741.778e6, 3321.03, 786.43)}
BY_RESOLUTION = {
    192: "yolov8n_192_quant_pc_uf_pose_coco-st.tflite",
    320: "yolov8n_320_quant_pc_uf_pose_coco-st.tflite",
}
ALL_FILES = [PC_256, PT_256, *BY_RESOLUTION.values(), "movenet_singlepose_lightning_int8_4.tflite"]
UNITS = pytest.mark.parametrize("unit", [1000, 1024], ids=["kB", "KiB"])
BOTH_256 = pytest.mark.parametrize("name", [PC_256, PT_256], ids=["per_channel", "per_tensor"])


@pytest.fixture(scope="module")
def footprints(reference_dir: Path) -> dict[str, Footprint]:
    return {name: estimate(reference_dir / name) for name in ALL_FILES}


def _within(value: float, reference: float, low: float, high: float) -> bool:
    return reference * (1 + low) <= value <= reference * (1 + high)


@BOTH_256
def test_macc_within_1_percent_of_st(footprints: dict[str, Footprint], name: str) -> None:
    assert _within(footprints[name].macc.total, ST_FIGURES[name][0], -0.01, 0.01)


@BOTH_256
@UNITS
def test_weights_within_minus_7_plus_2_percent(footprints: dict[str, Footprint], name: str, unit: int) -> None:
    assert _within(footprints[name].weights.total_bytes, ST_FIGURES[name][1] * unit, -0.07, 0.02)


@BOTH_256
@UNITS
def test_activations_within_minus_25_plus_5_percent(footprints: dict[str, Footprint], name: str, unit: int) -> None:
    assert _within(footprints[name].arena.arena_bytes, ST_FIGURES[name][2] * unit, -0.25, 0.05)


def test_per_tensor_activations_equal_st_in_kilobytes(footprints: dict[str, Footprint]) -> None:
    arena = footprints[PT_256].arena
    assert arena.arena_bytes == arena.lower_bound_bytes == 3 * 128 * 128 * 16
    assert round(arena.arena_bytes / 1000, 2) == ST_FIGURES[PT_256][2]


def _hand_count(path: Path) -> tuple[int, int]:
    """Constant bytes straight from the schema: every main-subgraph tensor's buffer, and each buffer once."""
    model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    graph = model.Subgraphs(0)
    buffers = [graph.Tensors(i).Buffer() for i in range(graph.TensorsLength())]
    per_tensor = sum(model.Buffers(b).DataLength() for b in buffers)
    return per_tensor, sum(model.Buffers(b).DataLength() for b in set(buffers))


@BOTH_256
def test_constant_bytes_equal_hand_count(footprints: dict[str, Footprint], reference_dir: Path, name: str) -> None:
    weights = footprints[name].weights
    assert (weights.total_bytes, weights.unique_bytes) == _hand_count(reference_dir / name)
    assert weights.total_bytes == 3_321_352  # the README's count
    assert weights.by_dtype == {"int8": 3_297_552, "int32": 23_800}
    assert weights.unique_bytes == 3_321_351  # two tensors share one 1-byte buffer


@pytest.mark.parametrize("resolution", sorted(BY_RESOLUTION))
def test_macc_scales_with_input_area(footprints: dict[str, Footprint], resolution: int) -> None:
    expected = ST_FIGURES[PC_256][0] * (resolution / 256) ** 2
    assert _within(footprints[BY_RESOLUTION[resolution]].macc.total, expected, -0.01, 0.01)


@pytest.mark.parametrize("name", ALL_FILES)
def test_every_reference_op_is_counted_and_the_plan_is_sound(footprints: dict[str, Footprint], name: str) -> None:
    fp = footprints[name]
    assert fp.macc.not_counted == {}
    assert fp.arena.arena_bytes >= fp.arena.lower_bound_bytes > 0
    buffers = sorted(fp.arena.buffers, key=lambda b: b.offset)
    for i, a in enumerate(buffers):
        for b in buffers[i + 1 :]:
            if b.offset >= a.end:
                break
            assert not a.overlaps(b.first, b.last), (a, b)
