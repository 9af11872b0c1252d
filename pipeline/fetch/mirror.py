"""Offline mirrors: directories searched before the network (``POSEZOO_MIRROR``).

An air-gapped machine, or this project's own tests and CI, keep copies of the sources in one or
more directories (``POSEZOO_MIRROR=/a:/b``, searched in order, recursively). For a source whose
sha256 is known (pinned in the registry or recorded at an earlier download) a file is found
**by content** whatever its name (only files of the pinned size are hashed, when the size is
pinned); else, or when no content matches, **by the name** the download would have (the URL's
last segment, the wheel / sdist filename, an archive member's base name). A file found by name
is verified exactly like a download: a mismatch is the usual one-line error naming the mirror
file, and the network is not tried silently behind the user's back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from pipeline.errors import PosezooError
from pipeline.fetch.checksum import Expectation, sha256_file

ENV = "POSEZOO_MIRROR"
#: What a mismatching mirror copy means, and what to do.
MIRROR_PROBLEM = (
    f"the mirror copy is not the file the registry describes — replace it, or remove its "
    f"directory from {ENV} to download the file instead"
)


def mirror_dirs(value: str | None = None) -> tuple[Path, ...]:
    """The directories of ``$POSEZOO_MIRROR`` (``os.pathsep``-separated); each must exist."""
    raw = os.environ.get(ENV, "") if value is None else value
    dirs = tuple(Path(p).expanduser() for p in raw.split(os.pathsep) if p)
    for path in dirs:
        if not path.is_dir():
            raise PosezooError(f"{ENV}: {path} is not a directory; fix the variable (directories separated by '{os.pathsep}') or unset it")
    return dirs


@dataclass
class Mirror:
    """The files of the mirror directories, hashed lazily and at most once each."""

    dirs: tuple[Path, ...]
    _digests: dict[Path, str] = field(default_factory=dict)

    def _files(self) -> Iterator[Path]:
        for root in self.dirs:
            yield from sorted(p for p in root.rglob("*") if p.is_file())

    def _digest(self, path: Path) -> str:
        if path not in self._digests:
            self._digests[path] = sha256_file(path)
        return self._digests[path]

    def find(self, name: str, expected: Expectation | None, *, by_name: bool = True) -> Path | None:
        """The mirror file for a source: by content when its sha256 is known, else by ``name``."""
        if not self.dirs:
            return None
        if expected is not None and expected.sha256:
            for path in self._files():
                if (expected.size is None or path.stat().st_size == expected.size) and self._digest(path) == expected.sha256:
                    return path
        return next((p for p in self._files() if p.name == name), None) if by_name else None
