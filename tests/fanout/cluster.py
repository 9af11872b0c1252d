"""Run shell steps against a 2-node Ray cluster on 127.0.0.1, in a network namespace of its own.

``unshare -rn python -m tests.fanout.cluster STEPS.json RESULT.json [NODES [bench]]``: the namespace has nothing
but the loopback interface, so no Ray process (Ray 2.60's GCS and raylet bind every interface
whatever ``--node-ip-address`` says) can be reached from, or reach, another address. The head and
NODES - 1 worker nodes (default 2 nodes; 1 CPU each, token authentication; ``bench``: the head
advertises the ``bench`` resource) are started with ``ray start --block`` and stopped at the end
whatever happens. Each step is ``{"cmd": "...", "cwd": "..."}``, run with bash;
``$RAY_ADDRESS`` is the head. The result records each step's exit code, output and seconds, the
namespace's interfaces and the listening sockets seen while the cluster ran.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes_alive(address: str, env: dict[str, str]) -> int:
    probe = "import ray; ray.init(address=%r, _node_ip_address='127.0.0.1', log_to_driver=False, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    proc = subprocess.run([sys.executable, "-c", probe % address], env=env, capture_output=True, text=True, check=False, timeout=60)
    return int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else 0


def _wait_nodes(address: str, env: dict[str, str], count: int) -> None:
    deadline = time.time() + START_TIMEOUT_S
    while _nodes_alive(address, env) < count:
        if time.time() > deadline:
            raise RuntimeError(f"Ray cluster at {address} did not reach {count} node(s) in {START_TIMEOUT_S} s")
        time.sleep(1)


def _sockets() -> list[str]:
    out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=False).stdout
    return sorted({line.split()[3] for line in out.splitlines() if line.strip()})


def main(steps_path: str, result_path: str, nodes: int = 2, bench: bool = False) -> int:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    port = _free_port()
    address = f"127.0.0.1:{port}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_ADDRESS": address, "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--block"]
    logs = Path(result_path).with_suffix(".ray")
    logs.mkdir(exist_ok=True)
    result: dict[str, Any] = {"address": address, "steps": []}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        head = ["--resources", json.dumps({"bench": 1})] if bench else []
        procs.append(subprocess.Popen([str(BIN / "ray"), "start", "--head", "--port", str(port), "--include-dashboard=false", *head, *common],
                                      env=env, stdout=open(logs / "head.log", "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
        _wait_nodes(address, env, 1)
        for n in range(1, nodes):
            procs.append(subprocess.Popen([str(BIN / "ray"), "start", "--address", address, *common],
                                          env=env, stdout=open(logs / f"worker{n}.log", "wb"), stderr=subprocess.STDOUT))  # noqa: SIM115
            _wait_nodes(address, env, n + 1)
        result["interfaces"] = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout.splitlines()
        result["listening"] = _sockets()
        for step in json.loads(Path(steps_path).read_text()):
            started = time.time()
            proc = subprocess.run(["bash", "-c", step["cmd"]], cwd=step["cwd"], env=env, capture_output=True, text=True, check=False)
            result["steps"].append({"cmd": step["cmd"], "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "seconds": time.time() - started})
            result["listening"] = sorted(set(result["listening"]) | set(_sockets()))
    except Exception as err:  # noqa: BLE001 - reported to the test, which fails with it
        result["error"] = f"{type(err).__name__}: {err}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2, "bench" in sys.argv[4:]))
