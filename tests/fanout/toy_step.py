"""The toy pipeline's one command (copied into scratch projects by tests/fanout/conftest.py).

``prepare MODEL OUT``: a source file from ``models.MODEL``; ``quantize MODEL SCHEME SRC OUT METRICS``:
an output from the source and ``recipes.SCHEME`` plus a ``cache: false`` metrics file; ``report DIR OUT``:
a summary of the metrics folder. Each step sleeps a little so that parallel runs overlap in time;
a negative ``recipes.SCHEME.k`` makes quantize fail.
"""

import hashlib
import json
import sys
import time
from pathlib import Path

import yaml

PAUSE_S = 0.5


def main(argv: list[str]) -> int:
    params = yaml.safe_load(Path("params.yaml").read_text())
    step = argv[0]
    time.sleep(PAUSE_S)
    if step == "prepare":
        model, out = argv[1], Path(argv[2])
        out.mkdir(parents=True)
        (out / "source.txt").write_text(json.dumps(params["models"][model], sort_keys=True) * 100)
    elif step == "quantize":
        model, scheme, src, out, metrics = argv[1], argv[2], Path(argv[3]), Path(argv[4]), Path(argv[5])
        recipe = params["recipes"][scheme]
        if recipe["k"] < 0:
            print(f"quantize: recipes.{scheme}.k is negative", file=sys.stderr)
            return 3
        data = (src / "source.txt").read_bytes() + json.dumps(recipe, sort_keys=True).encode()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(hashlib.sha256(data).digest() * 64)
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text(json.dumps({"model": model, "scheme": scheme, "score": int(hashlib.sha256(data).hexdigest()[:6], 16) % 1000}))
    elif step == "report":
        folder, out = Path(argv[1]), Path(argv[2])
        rows = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
        out.write_text(json.dumps({"variants": len(rows), "score": sum(r["score"] for r in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
