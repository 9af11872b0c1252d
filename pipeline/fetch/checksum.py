"""Content verification: every file fetch returns has been checked against an expected digest.

The expected values come either from the registry or, for an entry whose ``sha256`` is still
empty, from the digest recorded at its first download (see :mod:`pipeline.fetch.cache`). The
two cases need different advice when they fail, so an :class:`Expectation` carries its own
wording.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import PosezooError

_CHUNK = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")


def sha256_file(path: Path) -> str:
    """Hex sha256 of ``path``, read in chunks so multi-hundred-MB models do not fill memory."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_sha256(text: str) -> bool:
    """True for a 64-digit lowercase hex digest (the only form the registry accepts)."""
    return bool(_HEX64.fullmatch(text))


@dataclass(frozen=True)
class RecordKey:
    """Identity under which an unpinned source's first-seen digest is recorded.

    ``origin`` is where the bytes come from (a URL, ``pypi:<filename>``, a ``file:`` URI) and
    ``member`` the path inside it ("" for the whole file), so two members of one archive are
    recorded separately.
    """

    origin: str
    member: str = ""


@dataclass(frozen=True)
class Expectation:
    """What a file must look like: ``sha256`` ("" = not known yet) and optional ``size``.

    ``origin`` names who expects the digest (it is quoted in the mismatch message), ``fix`` says
    what to change when the source legitimately changed, and ``record_as`` is set when the digest
    is unknown and must be recorded once the file is obtained.
    """

    sha256: str
    size: int | None
    origin: str = "registry expects"
    fix: str = "update `sha256` in the registry entry"
    record_as: RecordKey | None = None


def check(path: Path, expected: Expectation, *, label: str, problem: str) -> str:
    """Verify ``path`` against ``expected`` and return its sha256.

    ``label`` names the file for the user (a URL reads better than a cache path) and ``problem``
    says what a mismatch means and what to do first; the registry fix is appended to it.
    """
    if expected.size is not None:
        got_size = path.stat().st_size
        if got_size != expected.size:
            raise PosezooError(
                f"{label}: size is {got_size} bytes, registry expects {expected.size}; "
                f"{problem}, or update `size` in the registry entry"
            )
    digest = sha256_file(path)
    if expected.sha256 and digest != expected.sha256:
        raise PosezooError(
            f"{label}: sha256 is {digest}, {expected.origin} {expected.sha256}; "
            f"{problem}, or {expected.fix}"
        )
    return digest
