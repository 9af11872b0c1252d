"""Cross-layer equalization and bias absorption on tiny ONNX graphs built here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.calibration.reader import iter_inputs
from pipeline.errors import PosezooError
from pipeline.optimize.equalize import equalize_onnx
from pipeline.optimize.graph import sqnr_db
from pipeline.optimize.prepare import Verification, prepare_float
from pipeline.quantize.recipe import parse_recipe
from pipeline.registry import InputSpec
from tests.conftest import photo_manifests

SIZE = 16
SPEC = InputSpec(height=SIZE, width=SIZE, channels=3, layout="NCHW", color="RGB", value_range=(0.0, 1.0), resize="stretch")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, photo_folder: Path) -> Path:
    return photo_manifests(tmp_path_factory.mktemp("calib"), photo_folder, 8, 4) / "manifest.json"


def conv(name: str, x: str, w: np.ndarray, b: np.ndarray | None, inits: list[onnx.TensorProto], **attrs: Any) -> onnx.NodeProto:
    """A Conv node named ``name`` writing tensor ``name``; its weights go into ``inits``."""
    inits.append(numpy_helper.from_array(w.astype(np.float32), f"{name}_w"))
    inputs = [x, f"{name}_w"]
    if b is not None:
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"{name}_b"))
        inputs.append(f"{name}_b")
    return helper.make_node("Conv", inputs, [name], name=name, kernel_shape=list(w.shape[2:]), **attrs)


def weights(rng: np.random.Generator, shape: tuple[int, ...], spread: float = 1.0) -> np.ndarray:
    """Random weights whose output channels span ``spread`` decades of magnitude."""
    scale = 10.0 ** np.linspace(-spread / 2, spread / 2, shape[0])
    return rng.normal(size=shape) * scale.reshape((-1,) + (1,) * (len(shape) - 1))


def save(path: Path, nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], outputs: list[str]) -> Path:
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def initializer(path: Path, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer if t.name == name)


def out_ranges(w: np.ndarray) -> np.ndarray:
    return np.max(np.abs(w.reshape(w.shape[0], -1)), axis=1)


def assert_same_function(a: Path, b: Path, manifest: Path) -> None:
    """Equal outputs within 1e-4 relative, on calibration images and on random inputs."""
    rng = np.random.default_rng(1)
    inputs = [x for _, x in iter_inputs(manifest, SPEC, "NCHW")] + [rng.normal(size=(1, 3, SIZE, SIZE)).astype(np.float32) for _ in range(3)]
    for x in inputs:
        for ya, yb in zip(run(a, x), run(b, x)):
            assert np.max(np.abs(ya - yb)) <= 1e-4 * np.max(np.abs(ya))


def test_prelu_pair_is_equalized_exactly_and_deterministically(tmp_path: Path, manifest: Path) -> None:
    rng = np.random.default_rng(0)
    inits: list[onnx.TensorProto] = []
    slope = numpy_helper.from_array(rng.uniform(0.05, 0.3, (6, 1, 1)).astype(np.float32), "slope")
    nodes = [
        conv("a", "x", weights(rng, (6, 3, 3, 3), spread=3.0), rng.normal(size=6), inits, pads=[1, 1, 1, 1]),
        helper.make_node("PRelu", ["a", "slope"], ["p"], name="p"),
        conv("b", "p", rng.normal(size=(4, 6, 1, 1)), rng.normal(size=4), inits),
    ]
    src = save(tmp_path / "src.onnx", nodes, [*inits, slope], ["b"])
    # without bias absorption, which is exact only where the pre-activation stays above the shift
    report = equalize_onnx(src, tmp_path / "eq.onnx", manifest, SPEC, atol=1e-5, rtol=1e-5, absorb_bias=False)
    equalize_onnx(src, tmp_path / "again.onnx", manifest, SPEC, atol=1e-5, rtol=1e-5, absorb_bias=False)

    assert report["pairs_equalized"] == 1 and report["pairs"][0]["via"] == ["PRelu"] and report["bias_absorption"] is None
    assert (tmp_path / "eq.onnx").read_bytes() == (tmp_path / "again.onnx").read_bytes()
    assert_same_function(src, tmp_path / "eq.onnx", manifest)
    assert np.array_equal(initializer(tmp_path / "eq.onnx", "slope"), initializer(src, "slope"))
    w1, w2 = initializer(tmp_path / "eq.onnx", "a_w"), initializer(tmp_path / "eq.onnx", "b_w")
    r1, r2 = out_ranges(w1), np.max(np.abs(w2), axis=(0, 2, 3))
    np.testing.assert_allclose(r1, r2, rtol=1e-5)  # the fixed point: both sides sqrt(r1 r2)
    spread = report["pairs"][0]["first_out_range_spread"]
    assert spread["before"] > 500 and spread["after"] < 0.1 * spread["before"]
    assert sqnr_db(w1, None) > sqnr_db(initializer(src, "a_w"), None) + 10  # per-tensor int8 error of layer a
    assert report["weight_sqnr_db"]["per_tensor"]["after"] > report["weight_sqnr_db"]["per_tensor"]["before"]


def test_depthwise_and_grouped_chain_keeps_the_function(tmp_path: Path, manifest: Path) -> None:
    rng = np.random.default_rng(2)
    inits: list[onnx.TensorProto] = []
    nodes = [
        conv("a", "x", weights(rng, (4, 3, 3, 3), spread=2.0), rng.normal(size=4), inits, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="ra"),
        # depthwise with channel multiplier 2: input channel i feeds output channels 2i, 2i+1
        conv("dw", "ra", weights(rng, (8, 1, 3, 3), spread=2.0), rng.normal(size=8), inits, group=4, pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["dw"], ["rdw"], name="rdw", alpha=0.1),
        helper.make_node("Pad", ["rdw", "pads"], ["pad"], name="pad"),
        helper.make_node("MaxPool", ["pad"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        # grouped (2 groups of 4 input channels)
        conv("g", "pool", weights(rng, (6, 4, 1, 1), spread=1.0), None, inits, group=2),
    ]
    inits.append(numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64), "pads"))
    src = save(tmp_path / "src.onnx", nodes, inits, ["g"])
    report = equalize_onnx(src, tmp_path / "eq.onnx", manifest, SPEC, atol=1e-5, rtol=1e-5)

    assert [(p["first"], p["second"], p["via"]) for p in report["pairs"]] == [("a", "dw", ["Relu"]), ("dw", "g", ["LeakyRelu", "Pad", "MaxPool"])]
    assert report["converged"] and report["iterations"] > 2  # the middle layer is scaled from both sides
    assert_same_function(src, tmp_path / "eq.onnx", manifest)
    a, dw, g = (initializer(tmp_path / "eq.onnx", f"{n}_w") for n in ("a", "dw", "g"))
    np.testing.assert_allclose(out_ranges(a), np.max(np.abs(dw.reshape(4, 2, 9)), axis=(1, 2)), rtol=1e-4)
    g_in = np.concatenate([np.max(np.abs(g[:3]), axis=(0, 2, 3)), np.max(np.abs(g[3:]), axis=(0, 2, 3))])
    np.testing.assert_allclose(out_ranges(dw), g_in, rtol=1e-4)


def test_residual_relu6_and_sigmoid_are_left_alone(tmp_path: Path, manifest: Path) -> None:
    rng = np.random.default_rng(3)
    inits: list[onnx.TensorProto] = [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    nodes = [
        conv("stem", "x", weights(rng, (4, 3, 3, 3), spread=2.0), rng.normal(size=4), inits, pads=[1, 1, 1, 1]),
        conv("expand", "stem", weights(rng, (8, 4, 1, 1), spread=2.0), rng.normal(size=8), inits),
        helper.make_node("Clip", ["expand", "lo", "hi"], ["relu6"], name="relu6"),
        conv("project", "relu6", weights(rng, (4, 8, 1, 1), spread=2.0), rng.normal(size=4), inits),
        helper.make_node("Add", ["stem", "project"], ["sum"], name="sum"),
        conv("head", "sum", rng.normal(size=(2, 4, 1, 1)), rng.normal(size=2), inits),
        helper.make_node("Sigmoid", ["head"], ["y"], name="y"),
    ]
    src = save(tmp_path / "src.onnx", nodes, inits, ["y"])
    report = equalize_onnx(src, tmp_path / "eq.onnx", manifest, SPEC, atol=0.0, rtol=0.0)

    assert report["pairs_equalized"] == 0
    assert report["skipped"] == {"residual_add": 2, "clip_activation": 1, "unsupported_op:Sigmoid": 1}
    for name in ("stem_w", "expand_w", "project_w", "head_w"):
        assert np.array_equal(initializer(tmp_path / "eq.onnx", name), initializer(src, name))


def test_bias_absorption_is_exact_and_skips_padded_convs(tmp_path: Path, manifest: Path) -> None:
    rng = np.random.default_rng(4)
    inits: list[onnx.TensorProto] = []
    # inputs are in [0, 1]: channels 0-2 (positive weights and bias) never go below 1,
    # channels 3-5 (negative weights, bias ≤ 0) never above 0
    sign = np.array([1, 1, 1, -1, -1, -1]).reshape(6, 1, 1, 1)
    bias = np.array([1.0, 2.0, 3.0, 0.0, -1.0, -2.0])
    nodes = [
        conv("a", "x", sign * np.abs(rng.normal(size=(6, 3, 1, 1))), bias, inits),
        helper.make_node("Relu", ["a"], ["ra"], name="ra"),
        conv("b", "ra", rng.normal(size=(5, 6, 1, 1)), rng.normal(size=5), inits),
        helper.make_node("Relu", ["b"], ["rb"], name="rb"),
        conv("c", "rb", rng.normal(size=(2, 5, 3, 3)), None, inits, pads=[1, 1, 1, 1]),
    ]
    src = save(tmp_path / "src.onnx", nodes, inits, ["c"])
    report = equalize_onnx(src, tmp_path / "eq.onnx", manifest, SPEC, atol=1e-5, rtol=1e-5)

    absorbed = report["bias_absorption"]
    assert absorbed["pairs_eligible"] == 1  # b → c is padded: W2·c is not constant at the borders
    assert absorbed["pairs_absorbed"] == 1 and absorbed["channels_absorbed"] == 3
    eq = tmp_path / "eq.onnx"
    for _, x in iter_inputs(manifest, SPEC, "NCHW"):
        np.testing.assert_allclose(run(eq, x)[0], run(src, x)[0], rtol=1e-5, atol=1e-5)
    # the shifted channels' pre-activation now starts at 0 on the calibration images
    probe = onnx.load(str(eq))
    probe.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, None))
    lows = np.min([ort.InferenceSession(probe.SerializeToString()).run(["a"], {"x": x})[0].min(axis=(0, 2, 3)) for _, x in iter_inputs(manifest, SPEC, "NCHW")], axis=0)
    np.testing.assert_allclose(lows[:3], 0.0, atol=1e-5)


def test_verification_failure_is_one_clear_line_and_writes_nothing(tmp_path: Path, manifest: Path) -> None:
    rng = np.random.default_rng(5)
    inits: list[onnx.TensorProto] = []
    nodes = [
        conv("a", "x", weights(rng, (6, 3, 3, 3), spread=3.0), rng.normal(size=6), inits),
        conv("b", "a", rng.normal(size=(4, 6, 1, 1)), None, inits),
    ]
    src = save(tmp_path / "src.onnx", nodes, inits, ["b"])
    with pytest.raises(PosezooError, match=r"output 0 \(b\) differs from the float model") as err:
        equalize_onnx(src, tmp_path / "eq.onnx", manifest, SPEC, atol=0.0, rtol=0.0)  # float rounding alone exceeds 0
    assert "\n" not in str(err.value)
    assert not (tmp_path / "eq.onnx").exists()


def relu6_pair(path: Path) -> Path:
    """conv a → Clip(0, 6) → conv b; a's channels peak at very different levels (channel 0 saturates at 6)."""
    rng = np.random.default_rng(6)
    inits: list[onnx.TensorProto] = [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    w = np.abs(rng.normal(size=(4, 3, 1, 1))) * np.array([30.0, 0.01, 0.1, 1.0]).reshape(4, 1, 1, 1)
    nodes = [
        conv("a", "x", w, np.zeros(4), inits),
        helper.make_node("Clip", ["a", "lo", "hi"], ["r"], name="r"),
        conv("b", "r", rng.normal(size=(3, 4, 1, 1)), rng.normal(size=3), inits),
    ]
    return save(path, nodes, inits, ["b"])


def test_relu6_is_equalized_within_calibration_bounds_only_when_asked(tmp_path: Path, manifest: Path) -> None:
    src = relu6_pair(tmp_path / "src.onnx")
    strict = equalize_onnx(src, tmp_path / "strict.onnx", manifest, SPEC, atol=0.0, rtol=0.0)
    assert strict["pairs_equalized"] == 0 and strict["skipped"] == {"clip_activation": 1, "graph_output": 1}

    report = equalize_onnx(src, tmp_path / "eq.onnx", manifest, SPEC, atol=1e-5, rtol=1e-5, clip_headroom=1.5)
    assert report["pairs_equalized"] == 1 and report["clip_bounds"] == {"pairs": 1, "channels_free": 3, "channels_fixed": 1}
    eq = tmp_path / "eq.onnx"
    np.testing.assert_allclose(initializer(eq, "a_w")[0], initializer(src, "a_w")[0], rtol=1e-6)  # the saturating channel keeps S = 1
    assert not np.allclose(initializer(eq, "a_w")[1:], initializer(src, "a_w")[1:])
    assert report["weight_sqnr_db"]["per_tensor"]["after"] > report["weight_sqnr_db"]["per_tensor"]["before"]
    probe = onnx.load(str(eq))
    probe.graph.output.append(helper.make_tensor_value_info("a", TensorProto.FLOAT, None))
    highs = np.max([ort.InferenceSession(probe.SerializeToString()).run(["a"], {"x": x})[0].max(axis=(0, 2, 3)) for _, x in iter_inputs(manifest, SPEC, "NCHW")], axis=0)
    assert np.all(highs[1:] <= 6.0 / 1.5 * (1 + 1e-5))  # free channels stay under the clip with the headroom


def test_activation_equalization_brings_every_free_channel_to_the_same_peak(tmp_path: Path, manifest: Path) -> None:
    """by="activations": channels whose ReLU6 output peaks far below the clip (0.01x, 0.1x of the
    others) are scaled up to M / headroom and the next layer's input weights down, exactly on the
    calibration images; the saturating channel is left alone; weight balancing would not do this."""
    src = relu6_pair(tmp_path / "src.onnx")
    with pytest.raises(PosezooError, match="equalization by 'inputs' is unknown"):
        equalize_onnx(src, tmp_path / "x.onnx", manifest, SPEC, atol=1e-5, rtol=1e-5, clip_headroom=1.5, by="inputs")
    report = equalize_onnx(src, tmp_path / "eqa.onnx", manifest, SPEC, atol=1e-5, rtol=1e-5, clip_headroom=1.5, by="activations", absorb_bias=False)
    assert report["by"] == "activations" and report["pairs_equalized"] == 1 and report["clip_bounds"]["channels_fixed"] == 1
    eqa = tmp_path / "eqa.onnx"
    for _, x in iter_inputs(manifest, SPEC, "NCHW"):  # exact on the calibration images (only there: the headroom)
        np.testing.assert_allclose(run(eqa, x)[0], run(src, x)[0], rtol=1e-5, atol=1e-5)

    def peaks(path: Path) -> np.ndarray:
        probe = onnx.load(str(path))
        probe.graph.output.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
        session = ort.InferenceSession(probe.SerializeToString())
        return np.max([session.run(["r"], {"x": x})[0].max(axis=(0, 2, 3)) for _, x in iter_inputs(manifest, SPEC, "NCHW")], axis=0)

    before, after = peaks(src), peaks(eqa)
    assert before[1] < 0.01 * before[0]  # the tiny channel: about one int8 step of the [0, 6] range
    np.testing.assert_allclose(after[1:], 6.0 / 1.5, rtol=1e-5)
    assert after[0] == pytest.approx(before[0])
    scale = before[1:] / after[1:]  # second conv's input weights shrink by the same factor
    np.testing.assert_allclose(initializer(eqa, "b_w")[:, 1:, 0, 0], initializer(src, "b_w")[:, 1:, 0, 0] * scale, rtol=1e-5)
    weights_eq = equalize_onnx(src, tmp_path / "eq.onnx", manifest, SPEC, atol=1e-5, rtol=1e-5, clip_headroom=1.5, absorb_bias=False)
    assert weights_eq["by"] == "weights" and not np.allclose(peaks(tmp_path / "eq.onnx")[1:], 6.0 / 1.5, rtol=1e-3)


def test_activation_equalization_of_a_model_without_pairs_changes_nothing(tmp_path: Path, manifest: Path) -> None:
    """A model whose convs are joined by non-homogeneous activations (YOLO's SiLU: Sigmoid · x) has no pair to scale."""
    rng = np.random.default_rng(3)
    inits: list[onnx.TensorProto] = []
    nodes = [
        conv("a", "x", rng.normal(size=(4, 3, 1, 1)), np.zeros(4), inits),
        helper.make_node("Sigmoid", ["a"], ["s"], name="s"),
        conv("b", "s", rng.normal(size=(2, 4, 1, 1)), None, inits),
    ]
    src = save(tmp_path / "src.onnx", nodes, inits, ["b"])
    report = equalize_onnx(src, tmp_path / "eqa.onnx", manifest, SPEC, atol=1e-6, rtol=1e-6, clip_headroom=1.5, by="activations")
    assert report["pairs_equalized"] == 0 and report["skipped"] == {"unsupported_op:Sigmoid": 1, "graph_output": 1}
    np.testing.assert_array_equal(initializer(tmp_path / "eqa.onnx", "a_w"), initializer(src, "a_w"))


def test_chained_transforms_report_what_they_were_made_from_not_a_temporary_path(tmp_path: Path, manifest: Path) -> None:
    """prepare_float's reports are metrics: equalize then bias-correct names the float ONNX, never the random temp file."""
    rng = np.random.default_rng(3)
    inits: list[onnx.TensorProto] = []
    nodes = [
        conv("a", "x", weights(rng, (6, 3, 3, 3), spread=3.0), rng.normal(size=6), inits, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["r"], name="r"),
        conv("b", "r", rng.normal(size=(4, 6, 1, 1)), rng.normal(size=4), inits),
    ]
    src = save(tmp_path / "src.onnx", nodes, inits, ["b"])
    work = tmp_path / "work"
    work.mkdir()
    recipe = parse_recipe({"weights": "per_tensor", "equalize": True, "bias_correction": True}, "per_tensor", "test")
    report = prepare_float(recipe, src, work / "prepared.onnx", manifest, SPEC, Verification(1e-4, 1e-4, {}))

    assert report["equalization"]["source"] == str(src)
    assert report["bias_correction_report"]["source"] == f"{src} (equalized)"
    assert sorted(p.name for p in work.iterdir()) == ["prepared.onnx"]
