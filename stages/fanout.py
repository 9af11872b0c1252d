"""Run the DVC pipeline (and ``-S`` sweeps) on a Ray cluster: one Ray task per out-of-date stage.

DVC runs stages one at a time on one machine; this command reads the stage graph from DVC's index,
submits every stage DVC does not report up to date as a Ray task (its upstream stages' tasks as
dependencies), each in a clone of the committed revision on a worker node that restores its inputs
from the shared DVC remote, runs the stage and pushes its outputs and run-cache entry. Then DVC
itself restores every stage here (``dvc repro``, or ``dvc exp run --temp -S ...`` per sweep point),
so dvc.lock, metrics and experiments are DVC's. Benchmark stages go to nodes that advertise the
custom resource ``bench`` (``ray start --resources '{"bench": 1}'``), else they run here; stages that
read other stages' metrics (recommend, cards) run here. See the README, "Running on a cluster".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.fanout.coordinator import Settings, fanout

HELP = "run the pipeline's out-of-date stages (and -S sweeps) as Ray tasks, then restore them with DVC"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", help="Ray cluster address (host:port of the head); default: start a local Ray instance on 127.0.0.1")
    parser.add_argument("-S", "--set-param", dest="set_params", action="append", default=[], metavar="KEY=VALUE",
                        help="params.yaml override as in `dvc exp run -S`; KEY=V1,V2 and several -S make a grid of experiments")
    parser.add_argument("-n", "--name", help="experiment name (NAME-1, NAME-2, ... for a grid)")
    parser.add_argument("-r", "--remote", help="shared DVC remote every node reaches (default: the project's default remote)")
    parser.add_argument("--git-url", help="where workers fetch the revision from (default: this repository's path: one machine or a shared filesystem)")
    parser.add_argument("--workdir", type=Path, help="directory for the workers' reused clones and caches on each node (default: <tmp>/posezoo-fanout)")
    parser.add_argument("--bench-stage", dest="bench", action="append", metavar="NAME",
                        help="stage name (before @) that needs the 'bench' resource; repeatable (default: benchmark, benchmark-float)")
    parser.add_argument("--node-ip-address", dest="node_ip", help="this machine's address in the cluster (default: 127.0.0.1 for a local or loopback cluster)")
    parser.add_argument("--root", type=Path, default=Path("."), help="DVC project root (default: the current directory)")


def run(args: argparse.Namespace) -> None:
    bench = tuple(args.bench) if args.bench else Settings.bench
    settings = Settings(args.root, args.address, args.set_params, args.name, args.remote, args.git_url, args.workdir, bench, args.node_ip)
    for summary in fanout(settings):
        print(f"{summary['point']}: {summary['submitted']} stage(s) on the cluster; on this machine: {', '.join(summary.get('ran_on_coordinator', [])) or 'nothing'}")
