"""One verified file out of an archive: shared by ``url`` + ``member`` and the PyPI kinds."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Callable

from pipeline.fetch.archive import extract_member
from pipeline.fetch.cache import Cache
from pipeline.fetch.checksum import Expectation


def archive_expectation(sha256: str, field: str) -> Expectation | None:
    """Verify the archive itself only when the registry pins it in ``field``.

    Unpinned archives are trusted through their member's digest alone (see
    :meth:`Cache.obtain`).
    """
    if not sha256:
        return None
    return Expectation(sha256, None, fix=f"update `{field}` in the registry entry")


def fetch_member(cache: Cache, member: str, expected: Expectation, *,
                 archive: Callable[[], Path], archive_label: str) -> Path:
    """The cached, verified ``member``; on a miss get the archive via ``archive()`` and extract.

    The member is looked up first (in the cache, then by content in the offline mirror) so that a
    hit needs neither the archive nor the network.
    """
    name = PurePosixPath(member).name
    if hit := cache.cached(expected, name):
        return hit
    # a mirror may hold the member itself; by content only (member names such as 4.tflite are
    # too generic to trust by name)
    if expected.sha256 and (found := cache.mirror.find(name, expected, by_name=False)) is not None:
        return cache.from_mirror(found, expected, name)
    archive_path = archive()
    with cache.scratch_dir() as tmp:
        extracted = extract_member(archive_path, member, tmp / name, label=archive_label)
        return cache.admit(
            extracted, expected, name,
            label=f"{archive_label} member {member}",
            problem=(f"the archive is corrupt or the source changed — delete {archive_path} "
                     "and retry"),
        )
