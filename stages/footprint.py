"""Estimate a model's weights flash, activation RAM and MACC offline, and whether it fits each target.

Reads an int8 or float TFLite flatbuffer or an ONNX model (float or QDQ) without executing it and
reports figures in STM32Cube.AI's conventions (see pipeline/footprint). With --out it writes the
JSON metrics file DVC tracks, so `dvc metrics diff` shows how a parameter change moved them.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from pipeline.atomic import write_json
from pipeline.footprint import estimate, format_text, select_targets, to_json
from pipeline.footprint.loader import openvino_ir_sizes
from pipeline.formats import of_file
from pipeline.source_model import single_model

HELP = "weights flash, activation RAM and MACC of a .tflite/.onnx model, and the fit per target"
log = logging.getLogger("posezoo.footprint")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help=".tflite or .onnx model file, or a stage directory holding exactly one")
    parser.add_argument(
        "--target",
        action="append",
        metavar="NAME",
        help="target of pipeline/footprint/targets.yaml to judge against (repeatable; default: all)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON metrics instead of a summary")
    parser.add_argument("--out", type=Path, help="write the JSON metrics file here (for DVC)")


def run(args: argparse.Namespace) -> None:
    targets = select_targets(args.target)
    model = single_model(args.model)
    fmt = of_file(model)
    if fmt is not None and not fmt.estimated:  # an int8 OpenVINO IR: its own sizes only, no estimate (see openvino_ir_sizes)
        sizes = openvino_ir_sizes(model)
        if args.out:
            write_json(args.out, sizes)
        print(json.dumps(sizes, indent=2, sort_keys=True) if args.json else f"{model.name}: {sizes['weights_bytes']:,} B of constants; {sizes['notes'][0]}")
        return
    footprint = estimate(model)
    doc = to_json(footprint, targets)
    if args.out:
        write_json(args.out, doc)
    print(json.dumps(doc, indent=2, sort_keys=True) if args.json else format_text(footprint, targets))
    if footprint.macc.not_counted:
        log.warning(
            "%s: MACC leaves out unknown ops %s",
            model.name,
            ", ".join(f"{op} ×{n}" for op, n in footprint.macc.not_counted.items()),
        )
