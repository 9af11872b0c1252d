"""Markdown helpers shared by the card and the index: fixed-precision numbers, tables, links.

Numbers are printed with a fixed number of decimals (never locale- or magnitude-dependent
formatting), so a card is byte-identical for identical metrics; a missing figure is the literal
"not measured".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from pipeline.report import NOT_MEASURED


def num(value: float | int | None, digits: int = 2) -> str:
    """``value`` with ``digits`` decimals, or "not measured" for None."""
    if value is None:
        return NOT_MEASURED
    return f"{float(value):.{digits}f}"


def pct(fraction: float | None, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage with a % sign."""
    return NOT_MEASURED if fraction is None else f"{100.0 * fraction:.{digits}f} %"


def kib(nbytes: int | None, digits: int = 2) -> str:
    return NOT_MEASURED if nbytes is None else f"{nbytes / 1024:.{digits}f}"


def signed_kib(nbytes: int | None) -> str:
    """A headroom with its sign; MiB past 10 MiB so a 4 GB DDR reads as such."""
    if nbytes is None:
        return NOT_MEASURED
    if abs(nbytes) >= 10 * 1024 * 1024:
        return f"{nbytes / 1024 / 1024:+.1f} MiB"
    return f"{nbytes / 1024:+.1f} KiB"


def cell(text: object) -> str:
    """A table cell: pipes escaped, newlines flattened."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def relative_link(target: Path, from_dir: Path) -> str:
    """A POSIX relative path from ``from_dir`` to ``target`` (both as given: no resolving, so the
    text depends only on the command-line paths, not on where the checkout lives)."""
    return Path(os.path.relpath(target, from_dir)).as_posix()


def link(text: str, href: str) -> str:
    return f"[{text}]({href})"
