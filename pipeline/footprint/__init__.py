"""Offline memory footprint of a pose model: weights flash, activation RAM and MACC.

Reads an int8 or float TFLite flatbuffer or an ONNX model (float or QDQ), never executes it, and
reports figures in STM32Cube.AI's conventions so that they can be set beside ST's published
numbers, plus a fits / does-not-fit verdict per target of ``targets.yaml``.

Layout, one job per module: :mod:`.ir` (the graph both readers produce), :mod:`.tflite_reader`,
:mod:`.onnx_reader`, :mod:`.loader` (format detection), :mod:`.macc`, :mod:`.weights`,
:mod:`.planner` (TFLite Micro's greedy arena planner), :mod:`.targets`, :mod:`.estimator`.
"""

from pipeline.footprint.estimator import Footprint, estimate, format_text, to_json
from pipeline.footprint.targets import Target, load_targets, select_targets

__all__ = ["Footprint", "Target", "estimate", "format_text", "load_targets", "select_targets", "to_json"]
