"""Shared helpers for the fetch tests: fast retry settings, error assertions, archive builders."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

import pytest

from pipeline.errors import PosezooError
from pipeline.fetch import fetch


def fetch_fast(source: Mapping[str, Any], cache: Path, **kwargs: Any) -> Path:
    """:func:`fetch` with tiny retry delays: the real defaults wait seconds between attempts."""
    return fetch(source, cache_dir=cache, retries=2, backoff_s=0.01, timeout_s=5.0, **kwargs)


def one_line_error(excinfo: pytest.ExceptionInfo[PosezooError], *needles: str) -> str:
    """Assert the error is a single line containing every needle; return it."""
    message = str(excinfo.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    return message


def files_under(root: Path) -> list[str]:
    """Relative paths of the files below ``root`` (to assert nothing was left behind).

    Lock files are left out: they are empty and deliberately kept for the next run.
    """
    if not root.exists():
        return []
    return sorted(str(Path(d, f).relative_to(root)) for d, _, fs in os.walk(root) for f in fs
                  if not f.endswith(".lock"))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A zip holding ``members`` (name -> content), names stored verbatim (even ``../x``)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(zipfile.ZipInfo(name), content)
    return buffer.getvalue()


def tar_bytes(members: list[tarfile.TarInfo | tuple[str, bytes]]) -> bytes:
    """A .tar.gz of regular files ``(name, content)`` and hand-made ``TarInfo`` entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                archive.addfile(member)
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                archive.addfile(info, io.BytesIO(member[1]))
    return buffer.getvalue()


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    """A tar symlink (or, with ``kind``, hardlink / device) entry."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info
