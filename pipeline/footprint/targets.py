"""Target memory budgets (``targets.yaml``) and the fits / does-not-fit verdict per model.

The budgets are data, not code, so that adding a chip is a reviewed one-line change with its
source next to the number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from pipeline.errors import PosezooError

TARGETS_FILE = Path(__file__).with_name("targets.yaml")


@dataclass(frozen=True)
class Target:
    """One deployment target's budgets (see ``targets.yaml`` for the meaning of each field)."""

    name: str
    description: str
    ram_bytes: int
    flash_bytes: int | None
    weights_in_ram: bool
    ram_source: str
    flash_source: str
    quantization: Mapping[str, Any] | None = None  # what the accelerator runs (see targets.yaml)


@dataclass(frozen=True)
class Verdict:
    """Whether a model fits one target, and by how much."""

    target: Target
    ram_needed_bytes: int
    flash_needed_bytes: int | None  # None when the target's weights memory is not a limit

    @property
    def ram_fits(self) -> bool:
        return self.ram_needed_bytes <= self.target.ram_bytes

    @property
    def flash_fits(self) -> bool:
        return self.flash_needed_bytes is None or self.flash_needed_bytes <= (self.target.flash_bytes or 0)

    @property
    def fits(self) -> bool:
        return self.ram_fits and self.flash_fits


def load_targets(path: Path = TARGETS_FILE) -> dict[str, Target]:
    """All targets of ``path`` by name."""
    try:
        entries = yaml.safe_load(path.read_text(encoding="utf-8"))["targets"]
        return {
            name: Target(
                name=name,
                description=entry["description"],
                ram_bytes=int(entry["ram_bytes"]),
                flash_bytes=None if entry["flash_bytes"] is None else int(entry["flash_bytes"]),
                weights_in_ram=bool(entry["weights_in_ram"]),
                ram_source=entry["ram_source"],
                flash_source=entry["flash_source"],
                quantization=entry.get("quantization"),
            )
            for name, entry in entries.items()
        }
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise PosezooError(f"{path}: unreadable target list ({type(err).__name__}: {err}); fix the YAML") from err


def select_targets(names: Iterable[str] | None, path: Path = TARGETS_FILE) -> list[Target]:
    """The targets called ``names`` (all of them when None), in the file's order."""
    known = load_targets(path)
    if names is None:
        return list(known.values())
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise PosezooError(
            f"{path}: unknown target(s) {', '.join(unknown)}; choose from {', '.join(known)}"
        )
    return [known[name] for name in wanted]


def judge(target: Target, activations_bytes: int, weights_bytes: int) -> Verdict:
    """Verdict for a model needing ``activations_bytes`` of arena and ``weights_bytes`` of weights."""
    if target.weights_in_ram:
        return Verdict(target, activations_bytes + weights_bytes, None)
    return Verdict(target, activations_bytes, None if target.flash_bytes is None else weights_bytes)
