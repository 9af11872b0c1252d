"""Give a fully convolutional float ONNX model another square input size.

Resolution sweeps start from the converted float model, not from a re-export: the source
formats posezoo reads (TFLite flatbuffers, published int8 files) carry a fixed input shape, while
their weights do not depend on it when the network is fully convolutional (convolutions, pooling,
global means). Changing the input dims and re-running ONNX shape inference is exact for such
models; a layer that hard-codes a spatial size (a Reshape to a constant shape, a Dense layer on
flattened features, baked anchor grids) fails shape inference or onnxruntime's first run, which is
reported as the model not supporting the size. The result is then verified against the source
run at the same size (``posezoo convert``), like any conversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from pipeline.convert.runners import onnx_input_layout, ort_session
from pipeline.errors import PosezooError


def input_size(path: Path) -> tuple[int, int]:
    """(height, width) of the ONNX model's image input (NCHW or NHWC)."""
    model = onnx.load(str(path), load_external_data=False)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return (dims[2], dims[3]) if onnx_input_layout(Path(path)) == "NCHW" else (dims[1], dims[2])


def reshape_input(path: Path, resolution: int) -> None:
    """Rewrite the ONNX file at ``path`` in place for a ``resolution`` × ``resolution`` input.

    Output shapes are re-inferred (keypoint vectors keep theirs; heatmaps scale). Raises a
    one-line error naming the first node that cannot take the new size.
    """
    path = Path(path)
    nchw = onnx_input_layout(path) == "NCHW"
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    h_axis, w_axis = (2, 3) if nchw else (1, 2)
    native = (dims[h_axis].dim_value, dims[w_axis].dim_value)
    dims[h_axis].dim_value = resolution
    dims[w_axis].dim_value = resolution
    del model.graph.value_info[:]
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        session = ort_session(model.SerializeToString())
        shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        session.run(None, {model.graph.input[0].name: np.zeros(shape, np.float32)})
    except Exception as err:  # onnx and onnxruntime raise their own untyped errors
        raise PosezooError(
            f"{path}: the model does not take a {resolution}x{resolution} input (native {native[0]}x{native[1]}): "
            f"{str(err).splitlines()[0][:300]}; it is not fully convolutional, so remove {resolution} from the source's resolutions"
        ) from err
    tmp = path.with_name(path.name + ".reshaped")
    onnx.save(model, str(tmp))
    tmp.replace(path)
    onnx_input_layout.cache_clear()
