"""The thread count of every float computation whose results reach an output, fixed per process.

Float kernels split their work by the size of their thread pool, and a different split sums in a
different order: onnxruntime's calibration sessions (percentile ranges of pose_landmark_full,
20 samples: 17 ranges differ between 1 and 2 threads, 94 between 2 and 8) and TensorFlow's
runtime (the float SavedModel's outputs, hence the convert stage's verification figures, change
with ``TF_NUM_INTRAOP_THREADS``) both default to one thread per core, so their results depended on
the machine's core count and on the user's environment. Both run on :data:`NUMERIC_THREADS`
instead. 2 is the count the committed ``dvc.lock`` outputs were computed with (2-core machines),
so fixing it changed no bytes. (Runners used for drift and benchmarks choose their own counts:
``pipeline.convert.runners`` runs single-threaded, benchmarks take ``benchmark.threads``.)
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Intra- and inter-op threads of onnxruntime's calibrators and of TensorFlow.
NUMERIC_THREADS = 2


def tensorflow() -> Any:
    """``import tensorflow`` with its thread pools fixed at :data:`NUMERIC_THREADS`.

    TensorFlow makes its pools once, when its runtime starts, so every posezoo path that runs
    TensorFlow (onnx2tf, the SavedModel runner, TFLiteConverter, tf2onnx) imports it through this
    function before its first op. A runtime already started by other code with another count
    (TensorFlow refuses to change it) is logged, not an error: the outputs are still valid, only
    possibly not byte-identical to another machine's.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(NUMERIC_THREADS)
        tf.config.threading.set_inter_op_parallelism_threads(NUMERIC_THREADS)
    except RuntimeError as err:
        log.warning("TensorFlow started before posezoo could fix its thread count (%s); float results may differ from another machine's", err)
    return tf
