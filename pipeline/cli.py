"""``posezoo``: one subcommand per DVC stage, plus ``publish`` (run after ``dvc repro``) and
``fanout`` (the pipeline on a Ray cluster).

``dvc.yaml`` calls these subcommands (never ``stages/*.py`` directly), so the command a user
types and the command DVC runs are the same. Each subcommand lives in ``stages/<name>.py`` and
exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from pipeline.errors import PosezooError

#: Subcommands in pipeline order; each is the module ``stages.<name>``.
STAGES = ("fetch", "calibrate", "convert", "optimize", "quantize", "evaluate", "footprint", "benchmark", "recommend", "cards", "publish", "fanout")


def build_parser() -> argparse.ArgumentParser:
    """The ``posezoo`` argument parser with one sub-parser per stage module."""
    parser = argparse.ArgumentParser(
        prog="posezoo",
        description="Reproducible int8 conversion of pose / landmark models (stages of dvc.yaml).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGES:
        module = importlib.import_module(f"stages.{name}")
        stage_parser = sub.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(stage_parser)
        stage_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``posezoo`` console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        args._run(args)
    except PosezooError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
