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
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

#: Intra- and inter-op threads of onnxruntime's calibrators and of TensorFlow.
NUMERIC_THREADS = 2
#: TensorFlow's own variables for its thread pools, read once when its runtime starts.
TF_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def tensorflow() -> Any:
    """``import tensorflow`` with its thread pools fixed at :data:`NUMERIC_THREADS`.

    TensorFlow makes its pools once, when its runtime starts, so every posezoo path that runs
    TensorFlow (onnx2tf, the SavedModel runner, TFLiteConverter, tf2onnx) imports it through this
    function before its first op. The count is set through TensorFlow's environment variables, not
    ``tf.config.threading``: the latter is recorded in every SavedModel onnx2tf writes (the
    ``config_proto`` of its function calls), which would change the float models' bytes. A
    runtime that other code started first (only possible in-process, e.g. in tests) is logged:
    its results are valid, only possibly not byte-identical to another machine's.
    """
    started = "tensorflow" in sys.modules and _runtime_started()
    for name in TF_THREAD_VARIABLES:
        os.environ[name] = str(NUMERIC_THREADS)
    import tensorflow as tf

    if started:
        log.warning("TensorFlow's runtime started before posezoo fixed its thread count; float results may differ from another machine's")
    return tf


def _runtime_started() -> bool:
    """Whether TensorFlow's eager runtime (and so its thread pools) exists already."""
    from tensorflow.python.eager import context

    return context.context()._context_handle is not None  # no public accessor; set by ensure_initialized()
