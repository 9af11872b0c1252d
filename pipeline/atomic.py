"""Atomic output writing: a stage interrupted half-way never leaves a half-written artifact.

Everything is written to a temporary sibling (same directory, hence same filesystem) and moved
into place with :func:`os.replace`, which is atomic on POSIX.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(dest: Path | str, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it onto ``dest``.

    Works for files and directories (a tool that writes a directory, such as a SavedModel
    export, writes into the yielded path). On any exception the temporary is removed and
    ``dest`` is left as it was.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix + ".tmp", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp} was not written")
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_bytes(dest: Path | str, data: bytes) -> None:
    """Atomically write ``data`` to ``dest``."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text(dest: Path | str, text: str) -> None:
    """Atomically write ``text`` (UTF-8) to ``dest``."""
    write_bytes(dest, text.encode("utf-8"))


def write_json(dest: Path | str, obj: Any) -> None:
    """Atomically write ``obj`` as stable, sorted, indented JSON (diff-friendly for DVC)."""
    write_text(dest, json.dumps(obj, indent=2, sort_keys=True) + "\n")
